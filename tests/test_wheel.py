"""The package as a user gets it: build the sdist and the wheel (from the sdist, as `python -m build` does), check the
wheel's metadata (only run-time requirements, fastcore among them for `@patch`; nbdev, execnb, statsmodels and tensorboard only under
extras) and its job notebooks, install it into a fresh virtual environment under a temporary directory (no
`--system-site-packages`, no PYTHONPATH: nothing of this checkout is importable) and run `lls demo --seeds 1
--epochs 1` from an empty directory outside the checkout.

Unpacking torch and its CUDA libraries (~5 GB) is nearly all of a plain `pip install` (measured: 7+ minutes on the
shared 2-core machine). So, by default, the torch stack (torch, torchvision, triton, nvidia-*, cuda-*) is seeded
into the fresh venv as hard links to the files of the same, already installed, distributions of the environment
running the test (their dist-info included, so pip sees them installed at that version; their console scripts are
not linked); everything else, this package included, is resolved and installed by pip from the wheel's
metadata, and `pip check` then checks the whole environment. `LLS_WHEEL_FULL_INSTALL=1` installs everything with
pip instead (nothing seeded)."""
import email.parser
import os
import re
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
from helpers import ROOT, lls

DEV_ONLY = ("nbdev", "execnb", "statsmodels", "tensorboard")
HEAVY = re.compile(r"(torch|torchvision|triton|nvidia-.*|cuda-.*)")


def _seed_torch_stack(site: Path) -> list[str]:
    "Hard-link the installed torch stack's files (site-packages only) into `site`; returns the distributions."
    from importlib import metadata

    seeded = []
    for d in metadata.distributions():
        name = re.sub(r"[-_.]+", "-", d.metadata["Name"]).lower()
        if not HEAVY.fullmatch(name) or not d.files:
            continue
        base = Path(d.locate_file(""))
        for f in d.files:
            if f.parts[0] == "..":  # console scripts (bin/): not needed, and their shebang is the other venv's
                continue
            src, dst = base / f, site / f
            if not src.is_file():
                continue
            dst.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(src, dst)
            except OSError:  # another filesystem: copy
                shutil.copy2(src, dst)
        seeded.append(f"{name}=={d.version}")
    return sorted(seeded)


def _tracked_copy(dst: Path) -> Path:
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


def _requires(metadata: str) -> tuple[set, dict]:
    "(names required at run time, extra → names) from a wheel's METADATA."
    msg = email.parser.Parser().parsestr(metadata)
    run, extras = set(), {}
    for req in msg.get_all("Requires-Dist") or []:
        spec, _, marker = req.partition(";")
        name = spec.strip().split()[0]
        for ch in "<>=!~[":
            name = name.split(ch)[0]
        name = name.lower()
        if "extra ==" in marker:
            extras.setdefault(marker.split("extra ==")[1].strip().strip("'\""), set()).add(name)
        else:
            run.add(name)
    return run, extras


def test_wheel_installs_and_runs_the_demo(tmp_path):
    t0 = time.time()
    src = _tracked_copy(tmp_path / "src")
    dist = tmp_path / "dist"
    # --no-isolation: setuptools/wheel come from the dev environment (the [dev] extra has `build`); the wheel is
    # built from the sdist, so a file missing from the sdist (settings.ini, the notebooks) fails here
    subprocess.run([sys.executable, "-m", "build", "--no-isolation", "--outdir", str(dist), str(src)], check=True,
                   capture_output=True, text=True)
    (whl,) = dist.glob("loss_lin_slope-*.whl")
    with zipfile.ZipFile(whl) as z:
        names = z.namelist()
        meta = z.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
        for nb in ("train.ipynb", "validate_metrics.ipynb"):  # real files, identical to the one source in nbs/
            assert z.read(f"loss_lin_slope/notebooks/{nb}") == (ROOT / "nbs" / nb).read_bytes(), nb
    run, extras = _requires(meta)
    assert not run & set(DEV_ONLY), f"development packages required at run time: {sorted(run & set(DEV_ONLY))}"
    assert {"torch", "lightning", "papermill", "ipykernel", "submitit", "pyarrow"} <= run, run
    assert set(DEV_ONLY) <= extras["dev"] and extras["tensorboard"] == {"tensorboard"}, extras
    assert "submitit<1.6,>=1.5" in meta.replace(" ", "") or "submitit>=1.5,<1.6" in meta.replace(" ", ""), meta
    t_build = time.time() - t0

    venv = tmp_path / "venv"
    py = venv / "bin" / "python"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    env.update(PATH=f"{venv / 'bin'}:/usr/local/bin:/usr/bin:/bin", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    # --no-compile: no .pyc for the ~150 packages pip installs (Python compiles what the demo imports, on import)
    pip = [str(py), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-compile"]
    t1 = time.time()
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    site = Path(subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               check=True, capture_output=True, text=True, env=env).stdout.strip())
    seeded = [] if os.environ.get("LLS_WHEEL_FULL_INSTALL") == "1" else _seed_torch_stack(site)
    subprocess.run([*pip, str(whl)], check=True, env=env, timeout=1500)
    t_install = time.time() - t1
    subprocess.run([str(py), "-m", "pip", "check"], check=True, env=env, capture_output=True)
    probe = ("import importlib.util as u, loss_lin_slope, loss_lin_slope.executors as s; "
             f"print(loss_lin_slope.__file__); print(s.default_notebook()); "
             f"print([m for m in {DEV_ONLY!r} if u.find_spec(m)])")
    out = subprocess.run([str(py), "-c", probe], check=True, env=env, capture_output=True, text=True,
                         cwd=tmp_path).stdout.splitlines()
    assert Path(out[0]).is_relative_to(site), out  # the installed package, not this checkout
    assert Path(out[1]).is_relative_to(site) and Path(out[1]).is_file() and not Path(out[1]).is_symlink(), out
    assert out[2] == "[]", f"development packages installed by the wheel: {out[2]}"

    work = tmp_path / "empty"
    work.mkdir()
    t2 = time.time()
    p = lls("demo", "--seeds", "1", "--epochs", "1", exe=venv / "bin" / "lls", cwd=work, env=env, inherit_env=False,
            timeout=1500)
    sweep = work / "demo" / "runs" / "demo"
    assert p.returncode == 0, p.stdout + p.stderr
    t_demo = time.time() - t2
    assert "verdict:" in p.stdout and "report:" in p.stdout, p.stdout
    runs = sorted(sweep.glob("*/summary.json"))
    assert len(runs) == 8, runs  # 4 variants × 2 lrs × 1 wd × 1 seed
    import json

    assert {json.loads(r.read_text())["status"] for r in runs} == {"completed"}
    specs = list((sweep / ".jobs").glob("*.json"))
    assert specs and all(Path(json.loads(s.read_text())["notebook"]).is_relative_to(site) for s in specs)
    assert (work / "demo" / "report" / "report.html").exists() and (work / "demo" / "dataset").is_dir()
    print(f"\nwheel test: build {t_build:.0f} s, install {t_install:.0f} s "
          f"({'seeded: ' + ', '.join(seeded) if seeded else 'all by pip'}), demo {t_demo:.0f} s, "
          f"total {time.time() - t0:.0f} s", file=sys.stderr)


@pytest.mark.parametrize("nb", ["train.ipynb", "validate_metrics.ipynb"])
def test_packaged_notebooks_are_the_nbs_ones(nb):
    "One source: the package's job notebooks are symlinks to nbs/ (copied as real files into the wheel)."
    p = ROOT / "loss_lin_slope" / "notebooks" / nb
    assert p.is_symlink() and p.resolve() == (ROOT / "nbs" / nb).resolve(), p
