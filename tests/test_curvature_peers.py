"""The curvature peers side by side: `benchmarks/bench_curvature_peers.py --quick` in a real process agrees with
PyHessian and curvlinops on lambda_max (BatchNorm in eval mode, the peers' only mode).

Slow (~1-3 min on 2 shared cores: a width-0.0625 ResNet-18, 32 images, the peers' HVPs); the full comparison
(seconds at equal accuracy, width 0.25, 128 images) is the benchmark itself."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
from helpers import ENV, ROOT, user_env

pytest.importorskip("pyhessian")
pytest.importorskip("curvlinops")


@pytest.mark.slow
def test_measure_agrees_with_pyhessian_and_curvlinops(tmp_path):
    out = tmp_path / "peers.json"
    env = user_env({**ENV, "PYTHONPATH": str(ROOT)})  # this checkout's package, whatever is installed
    p = subprocess.run([sys.executable, "benchmarks/bench_curvature_peers.py", "--quick", "--json", str(out)], cwd=ROOT,
                       capture_output=True, text=True, timeout=900, env=env)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    r = json.loads(out.read_text())
    ref = r["reference"]
    ours, ph, cl = r["ours"]["lam"], r["pyhessian"]["lam"], r["curvlinops"]["lam"]
    for name, v in (("ours", ours), ("PyHessian", ph), ("curvlinops", cl)):
        assert abs(v - ref) <= 1e-3 * abs(ref), (name, v, ref)
    assert abs(ours - ph) <= 1e-3 * abs(ph) and abs(ours - cl) <= 1e-3 * abs(cl), (ours, ph, cl)
    assert r["ours"]["hvps"] <= 30 and r["ours"]["lam_hvps"] < r["curvlinops"]["lam_hvps"], r["ours"]
