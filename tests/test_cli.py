"""The `lls` entry point through a real subprocess: `plan`, `config`, exit codes and help."""
import csv
import io
import json

import yaml


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
