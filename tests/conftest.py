"""Shared pytest fixtures: the repository root and the runner of the real `lls` console script (`helpers.lls`)."""
from pathlib import Path

import helpers
import pytest


@pytest.fixture
def root() -> Path:
    return helpers.ROOT


@pytest.fixture(scope="session")
def lls():
    "`helpers.lls`: run `lls ARGS…` in a real subprocess; returns the CompletedProcess (text mode)."
    return helpers.lls
