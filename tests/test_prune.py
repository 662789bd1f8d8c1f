"""`lls backtest` through the real console script on a synthetic sweep (no training): the table, backtest.json and
the figure; bad input exits 2 with one line naming the option and writes nothing; without Optuna, asking for one of
its rules says how to install it."""
import json

from loss_lin_slope.testing import SMALL, make_synthetic_sweep


def test_backtest_writes_the_table_json_and_figure(lls, tmp_path):
    sw = make_synthetic_sweep(tmp_path / "runs", "bt", n_runs=8, **SMALL)
    out = tmp_path / "out"
    p = lls("backtest", "bt", "--runs-dir", tmp_path / "runs", "--out", out, "--n-boot", "5", "--no-cache",
            "--concurrency", "2")
    assert p.returncode == 0, p.stdout + p.stderr
    lines = p.stdout.strip().splitlines()
    assert lines[0].startswith("bt: 8 runs in") and "decided at epoch 4, replayed 2 at a time" in lines[0], p.stdout
    assert lines[1].split() == ["rule", "at", "epoch", "compute", "saved", "regret", "(nats)", "best", "kept", "pruned"]
    assert [ln.split()[0] for ln in lines[2:]] == ["median", "successive_halving", "hyperband", "slope"], p.stdout
    d = json.loads((out / "backtest.json").read_text())
    assert d["meta"]["sweep"] == "bt" and d["meta"]["concurrency"] == 2 and d["meta"]["at_epoch"] == 4.0
    assert [r["rule"] for r in d["rules"]] == ["median", "successive_halving", "hyperband", "slope"]
    assert all(r["n_runs"] == 8 and 0 < r["compute_fraction"] <= 1 for r in d["rules"]), d["rules"]
    assert set(sum((r["pruned"] for r in d["rules"]), [])) <= set(sw.run_ids)
    assert (out / "backtest.png").read_bytes()[:4] == b"\x89PNG"


def test_backtest_bad_input(lls, tmp_path):
    make_synthetic_sweep(tmp_path / "runs", "bt", n_runs=4, **SMALL)
    make_synthetic_sweep(tmp_path / "runs", "idle", n_runs=2, faults={"running": 2}, **SMALL)
    cases = [(["bt", "--at-epoch", "16"], "--at-epoch=16.0 is not allowed: a number of epochs in (0, 16)"),
             (["bt", "--at-epoch", "-1"], "'-1' is not a number of epochs > 0"),
             (["bt", "--rules", "median,asha"], "'asha' is not a pruning rule"),
             (["idle"], "sweep='idle' is not allowed: a sweep with complete runs"),
             (["nowhere"], "sweep 'nowhere' not found")]
    for argv, msg in cases:
        p = lls("backtest", *argv, "--runs-dir", tmp_path / "runs", "--out", tmp_path / "out", "--no-cache")
        assert p.returncode == 2 and msg in p.stderr, (argv, p.stderr)
        assert len(p.stderr.strip().splitlines()) == 1, (argv, p.stderr)
    assert not (tmp_path / "out").exists()


def test_backtest_without_optuna(lls, tmp_path):
    """An `optuna` that cannot be imported (a stand-in first on the path): asking for an Optuna rule says how to get
    it (the default, the slope rule alone, is tested in the notebook)."""
    import os

    block = tmp_path / "block" / "optuna"
    block.mkdir(parents=True)
    (block / "__init__.py").write_text("raise ImportError('optuna is not installed (stand-in for the test)')\n")
    env = {"PYTHONPATH": os.pathsep.join([str(tmp_path / "block"), os.environ.get("PYTHONPATH", "")])}
    make_synthetic_sweep(tmp_path / "runs", "bt", n_runs=4, **SMALL)
    base = ("backtest", "bt", "--runs-dir", tmp_path / "runs", "--out", tmp_path / "out", "--no-cache")
    p = lls(*base, "--rules", "median", env=env)
    assert p.returncode == 2 and 'pip install "loss_lin_slope[prune]"' in p.stderr, p.stderr
