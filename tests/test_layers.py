"""The package's import graph goes one way: each module imports only modules above it in `LAYERS` (the order of the
notebooks, and of CONTRIBUTING.md's map), at the top of the file or inside a function alike. A new module goes into
`LAYERS` where its imports put it."""
import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "loss_lin_slope"
LAYERS = ["config", "files", "cli_args", "slopes", "forms", "curvature", "noise", "loaders", "model", "module",
          "callbacks", "store", "look", "run", "ledger", "verify", "executors", "status", "recover", "profile", "sweep",
          "testing", "export", "prune", "archive", "hypotheses", "report", "demo", "cli", "__main__"]


def package_imports(path: Path) -> set[str]:
    "The package modules `path` imports (relative or absolute, at module level or inside functions)."
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            mod = node.module or ""
            if node.level == 1 or mod == "loss_lin_slope" or mod.startswith("loss_lin_slope."):
                base = mod.removeprefix("loss_lin_slope").lstrip(".")
                if base:
                    out.add(base.split(".")[0])
                else:  # from . import a, b
                    out |= {a.name for a in node.names}
        elif isinstance(node, ast.Import):
            out |= {a.name.split(".")[1] for a in node.names if a.name.startswith("loss_lin_slope.")}
    return out - {"__version__", "_modidx"}


def test_every_module_is_placed():
    mods = {p.stem for p in PKG.glob("*.py")} - {"__init__", "_modidx"}
    assert mods == set(LAYERS), (sorted(mods - set(LAYERS)), sorted(set(LAYERS) - mods))


@pytest.mark.parametrize("mod", LAYERS)
def test_imports_go_down(mod):
    up = sorted(m for m in package_imports(PKG / f"{mod}.py") if LAYERS.index(m) >= LAYERS.index(mod))
    assert not up, f"{mod} imports {up}, which sit at or above it in LAYERS"


def test_the_check_catches_an_upward_import(tmp_path):
    p = tmp_path / "x.py"
    p.write_text("from .cli import main\n\ndef f():\n    from loss_lin_slope import sweep, verify\n")
    assert package_imports(p) == {"cli", "sweep", "verify"}
