"""`lls demo`, the README's main command, end to end at a reduced size (1 seed, 2 epochs: 8 real papermill runs of
the four variants on the local executor, then verify → export → report): the shared `demo` fixture (conftest.py),
run once per session by the installed wheel from an empty directory; then a rerun, by this checkout's `lls`, that
reuses the finished runs. The full-size demo (2 seeds, 10 epochs) is timed by hand (benchmarks/bench_demo.py),
not in CI."""
import re
import shutil
import time

import pandas as pd
import yaml
from helpers import ENV


def test_demo_end_to_end_then_rerun_reuses_runs(demo, tmp_path, lls):
    out = demo.out
    text = demo.stdout + demo.stderr
    assert demo.returncode == 0, text[-3000:]
    assert "verify: demo: 8 expected runs: 8 complete" in demo.stdout, text[-3000:]
    verdict = re.search(r"^verdict: (GO|NO-GO)", demo.stdout, re.M)
    assert verdict, demo.stdout
    assert re.search(r"^  H1\b", demo.stdout, re.M) and re.search(r"^  H2\b", demo.stdout, re.M), demo.stdout
    assert text.count("finished, ") == 8  # no terminal: one progress line per finished run

    runs = pd.read_parquet(out / "dataset" / "runs.parquet")
    assert len(runs) == 8 and set(runs.state) == {"complete"} and set(runs.variant) == {"base", "bn_off", "narrow",
                                                                                        "adamw"}
    assert (out / "dataset" / "DATA_DICTIONARY.md").exists()
    html = (out / "report" / "report.html").read_text()
    assert html.count("data:image/png;base64,") >= 3 and verdict.group(1) in html

    widths = {}
    for rd in demo.sweep.iterdir():
        if (rd / "config.yaml").exists():
            c = yaml.safe_load((rd / "config.yaml").read_text())
            widths[c["variant"]] = c["model"]["width_mult"] * c["model"]["width_factor"]
    assert widths["narrow"] == widths["base"] / 2, widths  # narrow stays half of base at the demo's width

    mine = tmp_path / "demo"
    shutil.copytree(out, mine, symlinks=True)  # the shared demo is read only
    t0 = time.time()
    again = lls("demo", "--out", str(mine), "--seeds", "1", "--epochs", "2", env=ENV)
    assert again.returncode == 0, (again.stdout + again.stderr)[-3000:]
    assert "reused 8 runs" in again.stdout and f"verdict: {verdict.group(1)}" in again.stdout, again.stdout
    assert time.time() - t0 < 120  # no training: verify, export and report only
