"""The package as a user gets it (the `wheel` fixture, see conftest.py and `helpers.install_wheel`): the wheel
built from the sdist, its metadata (only run-time requirements, fastcore among them for `@patch`; nbdev, execnb,
statsmodels and tensorboard only under extras) and its job notebooks, installed into a fresh virtual environment
under a temporary directory (no `--system-site-packages`, no PYTHONPATH: nothing of this checkout is importable),
`python -m loss_lin_slope` there, and `lls demo` run by it from an empty directory outside the checkout (the shared
`demo` fixture: `--seeds 1 --epochs 2`, whose output tests/test_demo.py reads too)."""
import email.parser
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from helpers import ROOT

DEV_ONLY = ("nbdev", "execnb", "statsmodels", "tensorboard")


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


def test_wheel_metadata_and_notebooks(wheel):
    with zipfile.ZipFile(wheel.whl) as z:
        names = z.namelist()
        meta = z.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
        for nb in ("train.ipynb", "validate_metrics.ipynb"):  # real files, identical to the one source in nbs/
            assert z.read(f"loss_lin_slope/notebooks/{nb}") == (ROOT / "nbs" / nb).read_bytes(), nb
        assert "loss_lin_slope/__main__.py" in names  # `python -m loss_lin_slope`
    run, extras = _requires(meta)
    assert not run & set(DEV_ONLY), f"development packages required at run time: {sorted(run & set(DEV_ONLY))}"
    assert {"torch", "lightning", "papermill", "ipykernel", "submitit", "pyarrow"} <= run, run
    assert set(DEV_ONLY) <= extras["dev"] and extras["tensorboard"] == {"tensorboard"}, extras
    assert "submitit<1.6,>=1.5" in meta.replace(" ", "") or "submitit>=1.5,<1.6" in meta.replace(" ", ""), meta


def test_wheel_installs_and_runs_the_demo(wheel, demo, tmp_path):
    probe = ("import importlib.util as u, loss_lin_slope, loss_lin_slope.executors as s; "
             f"print(loss_lin_slope.__file__); print(s.default_notebook()); "
             f"print([m for m in {DEV_ONLY!r} if u.find_spec(m)])")
    out = subprocess.run([str(wheel.python), "-c", probe], check=True, env=wheel.env, capture_output=True, text=True,
                         cwd=tmp_path).stdout.splitlines()
    site = wheel.site
    assert Path(out[0]).is_relative_to(site), out  # the installed package, not this checkout
    assert Path(out[1]).is_relative_to(site) and Path(out[1]).is_file() and not Path(out[1]).is_symlink(), out
    assert out[2] == "[]", f"development packages installed by the wheel: {out[2]}"
    # `python -m loss_lin_slope` of the installed package is its `lls`
    p = subprocess.run([str(wheel.python), "-m", "loss_lin_slope", "demo", "--help"], env=wheel.env, cwd=tmp_path,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0 and p.stdout.startswith("usage: lls demo") and "--seeds" in p.stdout, p.stdout + p.stderr

    # `lls demo` of the installed package, from an empty directory (the shared `demo` fixture)
    assert demo.returncode == 0, demo.stdout + demo.stderr
    assert "verdict:" in demo.stdout and "report:" in demo.stdout, demo.stdout
    runs = sorted(demo.sweep.glob("*/summary.json"))
    assert len(runs) == 8, runs  # 4 variants × 2 lrs × 1 wd × 1 seed
    assert {json.loads(r.read_text())["status"] for r in runs} == {"completed"}
    specs = list((demo.sweep / ".jobs").glob("*.json"))
    assert specs and all(Path(json.loads(s.read_text())["notebook"]).is_relative_to(site) for s in specs)
    assert (demo.out / "report" / "report.html").exists() and (demo.out / "dataset").is_dir()
    print(f"\nwheel test: build {wheel.build_s:.0f} s, install {wheel.install_s:.0f} s "
          f"({'seeded: ' + str(len(wheel.seeded)) + ' distributions' if wheel.seeded else 'all by pip'}), "
          f"demo {demo.seconds:.0f} s", file=sys.stderr)


@pytest.mark.parametrize("nb", ["train.ipynb", "validate_metrics.ipynb"])
def test_packaged_notebooks_are_the_nbs_ones(nb):
    "One source: the package's job notebooks are symlinks to nbs/ (copied as real files into the wheel)."
    p = ROOT / "loss_lin_slope" / "notebooks" / nb
    assert p.is_symlink() and p.resolve() == (ROOT / "nbs" / nb).resolve(), p
