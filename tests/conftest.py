"""Shared pytest fixtures: the repository root and a runner for the real `lls` console script."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def lls_path() -> str:
    "The `lls` console script next to this interpreter (the venv's), else the one on PATH."
    here = Path(sys.executable).with_name("lls")
    return str(here) if here.exists() else (shutil.which("lls") or "lls")


@pytest.fixture
def root() -> Path:
    return ROOT


@pytest.fixture
def lls():
    "Run `lls ARGS…` in a real subprocess; returns the CompletedProcess (text mode)."

    def run(*args, cwd=None, timeout=600, env=None, check=False):
        e = {**os.environ, **(env or {})}
        p = subprocess.run([lls_path(), *map(str, args)], cwd=cwd or ROOT, capture_output=True, text=True,
                           timeout=timeout, env=e)
        if check and p.returncode != 0:
            raise AssertionError(f"lls {' '.join(map(str, args))} exited {p.returncode}\n{p.stdout}\n{p.stderr}")
        return p

    return run
