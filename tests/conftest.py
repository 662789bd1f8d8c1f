"""Shared pytest fixtures. Use them: a test that only reads a trained sweep should not train its own.

- `root`: the repository root (`helpers.ROOT`).
- `lls`: `helpers.lls`, run `lls ARGS…` in a real subprocess; returns the CompletedProcess (text mode).
- `wheel` (session): the package as a user gets it. The sdist and the wheel are built from a copy of the files git
  would commit (`python -m build`, the wheel from the sdist) and the wheel is installed into a fresh virtual
  environment outside the checkout (`helpers.install_wheel`: no PYTHONPATH, no `--system-site-packages`; the
  wheel's run-time requirements are seeded from this environment, so pip installs the wheel alone — see there).
  Attributes: `whl`, `venv`, `python`, `lls` (the venv's console script), `site` (its site-packages), `env` (an
  environment with the venv first on PATH and nothing of this checkout), `seeded`, `build_s`, `install_s`.
- `demo` (session): one real `lls demo --seeds 1 --epochs 2` — 8 tiny runs (4 variants × 2 lrs, real papermill
  jobs of `train.ipynb` on the local executor) → verify → export → report — run by the installed wheel's `lls`
  from an empty directory outside the checkout. Attributes: `out` (the demo folder: `runs/demo/<run_id>/`,
  `dataset/`, `report/`), `sweep` (`out/runs/demo`), `stdout`, `stderr`, `returncode`, `seconds`.
  **Read only**: copy it (`shutil.copytree(demo.out, tmp_path / "demo")`) before writing anything into it.

`wheel` and `demo` are built once per test session even under pytest-xdist (`built_once`: the first worker builds
in the session's shared temporary folder under a lock, the others wait and reuse it; a failed build is reported
to every test that asks for it, without building again).

Parallel runs: `tests/check.sh` runs pytest-xdist with `--dist loadscope`: each test module runs on one worker, so
a module-scoped fixture (a sweep, a reference run, the docs site) is built once. (`--dist loadgroup` with
`xdist_group` marks would be finer, but pytest 9.2 broke it silently: pytest-xdist issue 1386.) A new test that
reads a session fixture goes into a module of its own or of the fixture's other readers; `ORDER` below starts the
long modules first and the fixture's late readers last, so that no worker waits for a build it could not help.
"""
import fcntl
import json
import os
import time
import traceback
from pathlib import Path
from types import SimpleNamespace

import helpers
import pytest


@pytest.fixture
def root() -> Path:
    return helpers.ROOT


@pytest.fixture(scope="session")
def lls():
    "`helpers.lls`: run `lls ARGS…` in a real subprocess; returns the CompletedProcess (text mode)."
    return helpers.lls


def shared_dir(tmp_path_factory) -> Path:
    "The session's temporary folder that every xdist worker sees (each worker's own is a subfolder of it)."
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


def built_once(tmp_path_factory, name: str, build) -> dict:
    """`build(folder)` → a JSON-able dict, called once per test session across xdist workers; its result (or its
    error, raised again as AssertionError) is read back by every later caller. `folder` is `shared_dir/name`."""
    root = shared_dir(tmp_path_factory)
    folder, record = root / name, root / f"{name}.json"
    with open(root / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes (or the worker dies)
        if not record.exists():
            folder.mkdir(exist_ok=True)
            try:
                res = {"ok": build(folder)}
            except BaseException as e:
                res = {"error": f"building {name!r} failed:\n{''.join(traceback.format_exception(e))[-6000:]}"}
            record.write_text(json.dumps(res, default=str))
    res = json.loads(record.read_text())
    if "error" in res:
        raise AssertionError(res["error"])
    return res["ok"]


@pytest.fixture(scope="session")
def wheel(tmp_path_factory) -> SimpleNamespace:
    "The wheel built from the tracked files and installed into a fresh venv outside the checkout (see above)."
    w = SimpleNamespace(**built_once(tmp_path_factory, "wheel", helpers.install_wheel))
    for k in ("whl", "venv", "python", "lls", "site"):
        setattr(w, k, Path(getattr(w, k)))
    w.env = helpers.venv_env(w.venv)
    return w


@pytest.fixture(scope="session")
def demo(tmp_path_factory, wheel) -> SimpleNamespace:
    "`lls demo --seeds 1 --epochs 2` by the installed wheel, from an empty folder outside the checkout (read only)."

    def build(folder: Path) -> dict:
        work = folder / "empty"
        work.mkdir()
        t0 = time.time()
        p = helpers.lls("demo", "--seeds", "1", "--epochs", "2", exe=wheel.lls, cwd=work, env=wheel.env,
                        inherit_env=False, timeout=1500)
        return dict(out=str(work / "demo"), stdout=p.stdout, stderr=p.stderr, returncode=p.returncode,
                    seconds=time.time() - t0, work=str(work))

    d = SimpleNamespace(**built_once(tmp_path_factory, "demo", build))
    d.out, d.work = Path(d.out), Path(d.work)
    d.sweep = d.out / "runs" / "demo"
    return d



# The long modules first, so that pytest-xdist's workers finish together (the longest-first rule): the Slurm module
# mostly waits for the cluster, test_wheel builds the wheel and the `demo` (8 trained runs), test_run trains and kills
# runs. Modules not named come next, in their usual order; `LAST` after them: readers of the `demo` that would wait
# for it if they started early.
FIRST = ("test_sweep_slurm.py", "test_wheel.py", "test_run.py", "test_fast_path.py", "test_docs.py",
         "test_sweep_local.py", "test_dataset_cli.py", "test_live_logger.py", "test_hypotheses_papermill.py")
LAST = ("test_demo.py",)


def pytest_collection_modifyitems(config, items):
    "Order the tests: the modules of `FIRST` in that order, then the others, then `LAST` (stable: within a module,\n"
    "as written)."
    rank = {name: i for i, name in enumerate(FIRST)} | {name: len(FIRST) + 1 + i for i, name in enumerate(LAST)}
    items.sort(key=lambda it: rank.get(it.path.name, len(FIRST)))
