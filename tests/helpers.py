"""What the tests share: the one runner of the real `lls` console script, the helpers that start, wait for, stop
and read papermill jobs of `nbs/train.ipynb`, and the build and install of the wheel (the `wheel` fixture).

Test modules import it as `helpers` (pytest puts `tests/` on `sys.path` for the modules it collects there);
`conftest.py` also gives the runner as the `lls` fixture."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import psutil

if TYPE_CHECKING:
    import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
TRAIN_NB = ROOT / "nbs" / "train.ipynb"
# One BLAS/OpenMP thread per job (the test machines are shared), and no warnings in the logs the tests read.
ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}


def console_script(name: str) -> str:
    "The console script `name` next to this interpreter (the venv's), else the one on PATH."
    here = Path(sys.executable).with_name(name)
    return str(here) if here.exists() else (shutil.which(name) or name)


def user_env(env: Mapping | None = None, inherit_env: bool = True) -> dict:
    "The environment of a process started as a user starts it: this one's (unless not `inherit_env`) updated with\n"
    "`env`, without `IN_TEST` (nbdev_test sets it: the train notebook would run its tiny test configuration instead)."
    e = {**(os.environ if inherit_env else {}), **(env or {})}
    e.pop("IN_TEST", None)
    return {k: str(v) for k, v in e.items()}


def lls(*args, exe: str | os.PathLike | None = None, cwd=ROOT, env: Mapping | None = None, inherit_env: bool = True,
        timeout: float = 900, check: bool = False) -> subprocess.CompletedProcess:
    "Run `lls ARGS…` (the console script `exe`, by default this venv's) in a real subprocess from `cwd`, stdout and\n"
    "stderr captured as text; raise with its output when `check` and it exits non-zero."
    p = subprocess.run([str(exe or console_script("lls")), *map(str, args)], cwd=cwd, capture_output=True, text=True,
                       timeout=timeout, env=user_env(env, inherit_env))
    if check and p.returncode != 0:
        raise AssertionError(f"lls {' '.join(map(str, args))} exited {p.returncode}\n{p.stdout}\n{p.stderr}")
    return p


def lls_popen(*args, cwd=ROOT, env: Mapping | None = None, **popen_kw) -> subprocess.Popen:
    "Start `lls ARGS…` like `lls` runs it, without waiting: stdout and stderr piped as text (`communicate()` them)."
    return subprocess.Popen([console_script("lls"), *map(str, args)], cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=user_env(env), **popen_kw)


def papermill_cmd(out_nb: Path, notebook="nbs/train.ipynb", **params) -> list[str]:
    "The command line `papermill NOTEBOOK OUT_NB --no-progress-bar -p KEY VALUE …`."
    cmd = [console_script("papermill"), str(notebook), str(out_nb), "--no-progress-bar"]
    for k, v in params.items():
        cmd += ["-p", k, str(v)]
    return cmd


def start(tmp: Path, tag: str, **params) -> subprocess.Popen:
    "Start papermill nbs/train.ipynb from the repository root in its own session; stdout+stderr go to tmp/<tag>.log."
    out = tmp / f"{tag}.ipynb"
    logf = open(tmp / f"{tag}.log", "w")
    return subprocess.Popen(papermill_cmd(out, **params), cwd=ROOT, stdout=logf, stderr=subprocess.STDOUT,
                            env={**os.environ, **ENV}, start_new_session=True)


def kill_tree(pid: int, sig) -> list[int]:
    "Send `sig` to `pid` and all its descendants (as SLURM signals every process of a job step); returns the pids."
    try:
        procs = [psutil.Process(pid)] + psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []
    for p in procs:
        try:
            p.send_signal(sig)
        except psutil.NoSuchProcess:
            pass
    return [p.pid for p in procs]


def finish(p: subprocess.Popen, timeout: float = 240) -> int:
    "Wait for `p` and return its exit code; after `timeout` seconds kill it and its descendants and raise."
    try:
        return p.wait(timeout)
    except subprocess.TimeoutExpired:
        kill_tree(p.pid, signal.SIGKILL)
        raise


def kernel_of(p: subprocess.Popen) -> psutil.Process:
    "The Jupyter kernel process (the training process) of a papermill job."
    kids = [c for c in psutil.Process(p.pid).children(recursive=True) if "ipykernel" in " ".join(c.cmdline())]
    assert kids, "no kernel process found"
    return kids[0]


def wait_until(pred, timeout: float = 180, what: str = "condition", interval: float = 1.0,
               proc: subprocess.Popen | None = None):
    "Poll `pred()` every `interval` seconds until it returns something truthy (returned); fail with `what` after\n"
    "`timeout` seconds, or as soon as `proc` (when given) has exited."
    t0 = time.time()
    while True:
        v = pred()
        if v:
            return v
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"process exited ({proc.returncode}) while waiting for {what}")
        if time.time() - t0 > timeout:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def summary_of(rd: Path) -> dict:
    "A run directory's summary.json ({} when there is none yet)."
    from loss_lin_slope import run

    for _ in range(20):
        try:
            return run.read_summary(rd) or {}
        except json.JSONDecodeError:  # cannot happen with atomic writes; retry defensively
            time.sleep(0.05)
    return {}


def steps_done(rd: Path) -> int:
    "The steps a run has completed, once it has a checkpoint to resume from (else 0)."
    s = summary_of(rd)
    return int(s.get("steps_completed") or 0) if (rd / "checkpoints" / "last.ckpt").exists() else 0


def values(rd: Path) -> pd.DataFrame:
    "The run's metrics without the wall-clock column, indexed by (metric, step)."
    from loss_lin_slope import store

    df = store.read_metrics(rd)
    return df.drop(columns="time").set_index(["metric", "step"]).sort_index()


# ---- the package as a user installs it (the `wheel` fixture, tests/test_wheel.py) -------------------------------

def tracked_copy(dst: Path) -> Path:
    "Copy what git would commit (tracked + untracked, not ignored) to `dst`, symlinks as symlinks."
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, check=True,
                           capture_output=True).stdout.decode().split("\0")
    for rel in filter(None, files):
        src, out = ROOT / rel, dst / rel
        if not src.exists() and not src.is_symlink():  # deleted, not yet committed
            continue
        out.parent.mkdir(parents=True, exist_ok=True)
        if src.is_symlink():
            out.symlink_to(os.readlink(src))
        else:
            shutil.copy2(src, out)
    return dst


def venv_env(venv: Path) -> dict:
    "An environment for a venv's programs: its bin first on PATH, nothing of this checkout (no PYTHONPATH)."
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME", "IN_TEST")}
    env.update(PATH=f"{Path(venv) / 'bin'}:/usr/local/bin:/usr/bin:/bin", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    return env


def requirement_closure(requires: list[str]) -> list:
    """The distributions installed here that the PEP 508 requirements `requires` need, transitively (markers
    evaluated, extras followed): what a fresh `pip install` of a wheel with these `Requires-Dist` would resolve
    from this environment. A requirement that is not installed here is left to pip."""
    from importlib import metadata

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    dists = {canonicalize_name(d.metadata["Name"]): d for d in metadata.distributions()}
    todo, done, out = [(Requirement(r), "") for r in requires], set(), {}
    while todo:
        req, extra = todo.pop()
        if req.marker is not None and not req.marker.evaluate({"extra": extra}):
            continue
        name = canonicalize_name(req.name)
        if (name, tuple(sorted(req.extras))) in done or name not in dists:
            continue
        done.add((name, tuple(sorted(req.extras))))
        out[name] = d = dists[name]
        todo += [(Requirement(r), e) for r in d.requires or [] for e in ("", *req.extras)]
    return sorted(out.values(), key=lambda d: canonicalize_name(d.metadata["Name"]))


def seed_distributions(dists, venv: Path, site: Path) -> list[str]:
    """Hard-link the files of the installed distributions `dists` into the fresh venv (site-packages to `site`, data
    files such as Jupyter's kernel specs to the venv's prefix; their console scripts are left out: their shebangs
    name this interpreter), dist-info included, so pip sees them installed at their versions; returns `name==version`."""
    seeded = []
    for d in dists:
        base = Path(d.locate_file(""))
        for f in d.files or []:
            src = Path(os.path.normpath(base / f))
            if src.is_relative_to(base):
                dst = site / src.relative_to(base)
            elif src.is_relative_to(sys.prefix) and not src.is_relative_to(Path(sys.prefix) / "bin"):
                dst = Path(venv) / src.relative_to(sys.prefix)
            else:
                continue
            if not src.is_file():
                continue
            dst.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(src, dst)
            except FileExistsError:
                pass
            except OSError:  # another filesystem: copy
                shutil.copy2(src, dst)
        seeded.append(f"{d.metadata['Name']}=={d.version}")
    return seeded


def run_checked(cmd: list, **kw) -> subprocess.CompletedProcess:
    "`subprocess.run(cmd)` with its output captured as text; raise with the output's tail if it exits non-zero."
    p = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, **kw)
    if p.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, cmd))} exited {p.returncode}\n{(p.stdout + p.stderr)[-4000:]}")
    return p


def install_wheel(folder: Path) -> dict:
    """Build the sdist and the wheel (from the sdist, as `python -m build` does) of a copy of the tracked files, and
    install the wheel into a fresh venv in `folder` (no `--system-site-packages`, no PYTHONPATH: nothing of this
    checkout is importable there).

    Unpacking torch and its CUDA libraries (~5 GB) and ~150 other packages is nearly all of a plain `pip install`
    (7+ minutes on the shared 2-core machine), so by default the wheel's run-time requirements, resolved
    transitively from its `Requires-Dist` against this environment (`requirement_closure`), are seeded into the
    venv as hard links to this environment's files (`seed_distributions`); pip then installs the wheel itself from
    its metadata without the index (it fails if a requirement is missing), and `pip check` checks the whole venv.
    `LLS_WHEEL_FULL_INSTALL=1` seeds nothing and lets pip install everything from the index."""
    import email.parser
    import zipfile

    folder = Path(folder)
    t0 = time.time()
    src, dist = tracked_copy(folder / "src"), folder / "dist"
    # --no-isolation: setuptools/wheel come from the dev environment (the [dev] extra has `build`); the wheel is
    # built from the sdist, so a file missing from the sdist (settings.ini, the notebooks) fails here
    run_checked([sys.executable, "-m", "build", "--no-isolation", "--outdir", dist, src])
    (whl,) = dist.glob("loss_lin_slope-*.whl")
    with zipfile.ZipFile(whl) as z:
        meta = z.read(next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))).decode()
    build_s = time.time() - t0

    venv, t1 = folder / "venv", time.time()
    py, env = venv / "bin" / "python", venv_env(venv)
    run_checked([sys.executable, "-m", "venv", venv])
    site = Path(run_checked([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                            env=env).stdout.strip())
    full = os.environ.get("LLS_WHEEL_FULL_INSTALL") == "1"
    requires = email.parser.Parser().parsestr(meta).get_all("Requires-Dist") or []
    seeded = [] if full else seed_distributions(requirement_closure(requires), venv, site)
    # --no-compile: no .pyc for the packages pip installs (Python compiles what the demo imports, on import)
    run_checked([py, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-compile",
                 *([] if full else ["--no-index"]), whl], env=env, timeout=1500)
    run_checked([py, "-m", "pip", "check"], env=env)
    return dict(whl=str(whl), venv=str(venv), python=str(py), lls=str(venv / "bin" / "lls"), site=str(site),
                seeded=seeded, build_s=build_s, install_s=time.time() - t1)
