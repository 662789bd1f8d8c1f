"""`papermill nbs/validate_metrics.ipynb … -p sweep_dir …`: the analysis notebook runs on a given sweep."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import ROOT

from loss_lin_slope.testing import make_synthetic_sweep

NB = ROOT / "nbs" / "validate_metrics.ipynb"


def _outputs(nb_path: Path) -> str:
    nb = json.loads(nb_path.read_text())
    text = []
    for c in nb["cells"]:
        for o in c.get("outputs", []):
            text.append(o.get("text", "") if isinstance(o.get("text"), str) else "".join(o.get("text", [])))
            for v in (o.get("data") or {}).values():
                text.append(v if isinstance(v, str) else "".join(v) if isinstance(v, list) else "")
    return "\n".join(text)


@pytest.mark.parametrize("faults,word", [({}, "GO"), ({"missing": [1], "frequency": [2]}, "NO-GO")])
def test_validate_metrics_papermill(tmp_path, faults, word):
    sw = make_synthetic_sweep(tmp_path / "runs", "pm", n_runs=8, epochs=16, steps_per_epoch=40, chunk_epochs=4,
                              curvature_every_n_steps=100, faults=faults)
    out_nb, rep = tmp_path / "out.ipynb", tmp_path / "rep"
    p = subprocess.run([sys.executable, "-m", "papermill", str(NB), str(out_nb), "-p", "sweep_dir", str(sw.path),
                        "-p", "out_dir", str(rep), "-p", "n_boot", "200", "-p", "workers", "1", "--no-progress-bar"],
                       capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "Passed unknown parameter" not in p.stderr  # the `parameters` tag survived nbdev_clean
    text = _outputs(out_nb)
    assert f"{word} (pm)" in text and "synthetic demo sweep" not in text
    assert (rep / "report.html").exists() and json.loads((rep / "report.json").read_text())["verdict"] == word


def test_validate_metrics_bad_sweep_dir(tmp_path):
    p = subprocess.run([sys.executable, "-m", "papermill", str(NB), str(tmp_path / "o.ipynb"), "-p", "sweep_dir",
                        str(tmp_path / "nowhere"), "--no-progress-bar"], capture_output=True, text=True, cwd=ROOT,
                       timeout=600)
    assert p.returncode != 0 and "is not a directory" in p.stderr
