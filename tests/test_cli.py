"""The `lls` entry point through a real subprocess: `plan`, `config`, exit codes and help."""
import csv
import io
import json
import os
import subprocess
import sys

import yaml
from helpers import ROOT


def test_plan_csv_has_216_rows(lls):
    p = lls("plan", "--format", "csv", check=True)
    rows = list(csv.DictReader(io.StringIO(p.stdout)))
    assert len(rows) == 216
    assert len({r["run_id"] for r in rows}) == 216
    prios = [int(r["priority"]) for r in rows]
    assert prios == sorted(prios, reverse=True)
    top = rows[0]
    assert (top["lr"], top["weight_decay"], top["seed"], top["priority"]) == ("0.1", "0.0001", "0", "185")
    assert top["tags"].split() == ["lr0.1", "wd0.0001", top["variant"]]


def test_plan_subset_json_and_table(lls):
    p = lls("plan", "--variants", "narrow,adamw", "--seeds", "0,1", "--format", "json", check=True)
    rows = json.loads(p.stdout)
    assert len(rows) == 2 * 9 * 2 and {r["variant"] for r in rows} == {"narrow", "adamw"}
    p = lls("plan", check=True)
    assert p.stdout.strip().splitlines()[-1] == "216 runs"


def test_config_prints_validated_yaml(lls):
    p = lls("config", "adamw", "lr=0.05", "optim.momentum=0.8", "gradient_clip_val=null", check=True)
    d = yaml.safe_load(p.stdout)
    assert d["variant"] == "adamw" and d["optim"]["name"] == "adamw"
    assert d["optim"]["lr"] == 0.05 and d["optim"]["momentum"] == 0.8
    assert d["trainer"]["gradient_clip_val"] is None


def test_bad_input_exits_2_with_one_line(lls):
    cases = [
        (("config", "adamw", "lr=-1"), "optim.lr"),
        (("config", "nope"), "variant='nope'"),
        (("config", "base", "lrr=0.1"), "did you mean 'lr'"),
        (("config", "base", "learning_rate=0.1"), "did you mean 'lr'?"),  # the flat alias, not 'variant'
        (("config", "base", "lr"), "not key=value"),
        (("plan", "--variants", "base,bogus"), "'bogus' is not a variant"),
        (("plan", "--seeds", "a"), "not a comma-separated list of integers"),
        (("frobnicate",), "invalid choice"),
    ]
    for args, needle in cases:
        p = lls(*args)
        assert p.returncode == 2, (args, p.returncode, p.stderr)
        assert needle in p.stderr, (args, p.stderr)
        assert len(p.stderr.strip().splitlines()) == 1, (args, p.stderr)
        assert p.stdout == ""


def test_help_everywhere(lls):
    for args in (("--help",), ("plan", "--help"), ("config", "--help")):
        p = lls(*args)
        assert p.returncode == 0 and "usage: lls" in p.stdout, args


def _parsers(parser, path=("lls",)):
    "Every (command path, parser) of the `lls` parser tree."
    import argparse

    yield path, parser
    for a in parser._actions:
        if isinstance(a, argparse._SubParsersAction):
            for name, sub in a.choices.items():
                yield from _parsers(sub, (*path, name))


def test_every_option_has_help_and_sweeps_live_in_runs_dir():
    "One vocabulary: help text on every option; --runs-dir wherever a sweep is read or written; outputs in --out."
    import argparse

    from loss_lin_slope.cli import build_parser

    missing, runs_dir = [], []
    for path, p in _parsers(build_parser()):
        opts = {s for a in p._actions for s in a.option_strings}
        for a in p._actions:
            if a.help is None and not isinstance(a, (argparse._HelpAction, argparse._SubParsersAction)):
                missing.append(f"{' '.join(path)} {'/'.join(a.option_strings) or a.dest}")
        if any(a.dest == "name" for a in p._actions) or path[-1] == "preflight":  # commands on a sweep
            runs_dir.append((" ".join(path), "--runs-dir" in opts))
        assert "--to" not in opts or path[-1] == "collect", path  # only collect keeps --to, hidden
    assert not missing, f"options without help: {missing}"
    assert runs_dir and all(ok for _, ok in runs_dir), runs_dir
    cmds = {c for c, _ in runs_dir}
    assert {"lls sweep submit", "lls sweep status", "lls sweep recover", "lls verify", "lls export", "lls collect",
            "lls report", "lls preflight"} <= cmds, cmds


def test_runs_dir_default_from_env(lls, tmp_path):
    "`$LLS_RUNS_DIR` is the default sweep directory of `lls sweep` too (it was ignored before)."
    env = {"LLS_RUNS_DIR": str(tmp_path / "elsewhere")}
    p = lls("sweep", "submit", "envs", "--variants", "base", "--lrs", "0.1", "--wds", "1e-4", "--seeds", "0",
            "--dry-run", "--json", env=env, cwd=tmp_path, check=True)
    assert json.loads(p.stdout)["submit"], p.stdout
    p = lls("sweep", "status", "envs", "--no-scheduler", env=env, cwd=tmp_path)
    assert p.returncode == 2 and str(tmp_path / "elsewhere" / "envs") in p.stderr, p.stderr


def test_old_spellings_still_work(lls, tmp_path):
    "`--out-dir` (now --runs-dir) and `collect --to` (now --out) are accepted, hidden from the help."
    from loss_lin_slope.cli import build_parser

    p = build_parser()
    assert p.parse_args(["sweep", "status", "x", "--out-dir", "/a"]).out_dir == "/a"
    assert p.parse_args(["collect", "x", "--to", "/b"]).out == "/b"
    assert "--out-dir" not in lls("sweep", "submit", "--help").stdout
    assert "--to" not in lls("collect", "--help").stdout


def test_help_reads_well_in_a_terminal(lls):
    "Every command's help: exit 0, no line wider than the terminal, no option name broken across lines."
    from loss_lin_slope.cli import build_parser

    for path, _ in _parsers(build_parser()):
        p = lls(*path[1:], "--help", env={"COLUMNS": "100"})
        assert p.returncode == 0 and p.stdout.startswith("usage: lls"), path
        lines = p.stdout.splitlines()
        assert max(map(len, lines)) <= 100, (path, max(lines, key=len))
        assert not any(line.rstrip().endswith(("-", "--")) for line in lines), path


def test_python_dash_m_is_lls(lls, tmp_path):
    "`python -m loss_lin_slope …` and `python -m loss_lin_slope.cli …`, run outside the checkout, are `lls …`: same\n"
    "output, same exit codes (the wheel test runs `python -m loss_lin_slope demo --help` from an installed wheel)."
    env = {**os.environ, "PYTHONPATH": str(ROOT)}  # this checkout's package, from a directory outside it
    env.pop("IN_TEST", None)
    for args in (("plan", "--variants", "base", "--seeds", "0", "--format", "csv"), ("config", "base", "lr"),
                 ("demo", "--help")):
        want = lls(*args, cwd=tmp_path)
        for mod in ("loss_lin_slope", "loss_lin_slope.cli"):
            p = subprocess.run([sys.executable, "-m", mod, *args], cwd=tmp_path, env=env, capture_output=True,
                               text=True, timeout=120)
            assert (p.returncode, p.stdout, p.stderr) == (want.returncode, want.stdout, want.stderr), (mod, args)
    assert want.returncode == 0 and want.stdout.startswith("usage: lls demo"), want.stdout
    assert lls("config", "base", "lr", cwd=tmp_path).returncode == 2
