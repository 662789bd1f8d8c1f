"""`lls verify`, `lls export`, `lls collect` and `lls report` as a user runs them: real subprocesses on synthetic sweeps."""

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
from helpers import lls

from loss_lin_slope.export import RESULT_COLUMNS, dataset_schemas
from loss_lin_slope.testing import make_synthetic_sweep
from loss_lin_slope.verify import ISSUE_KINDS

KW = dict(epochs=16, steps_per_epoch=40, curvature_every_n_steps=100)
FAULTS = {"missing": [1], "nan": [2], "duplicate": [3], "truncated": [4], "frequency": [5], "failed": [6],
          "diverged": [7], "interrupted": [8], "adjusted": [9]}
EXPECT = {"missing": ("missing", []), "nan": ("corrupt", ["nan"]), "duplicate": ("corrupt", ["duplicate_steps"]),
          "truncated": ("corrupt", ["unreadable"]), "frequency": ("corrupt", ["frequency"]),
          "failed": ("failed", []), "diverged": ("diverged", []), "interrupted": ("incomplete", []),
          "adjusted": ("complete", [])}


CACHE = {}


def run_lls(*args, env=None):
    "(exit code, stdout, stderr) of `lls ARGS…` with this module's `$LLS_CACHE_DIR`, unless `env` sets another."
    p = lls(*args, env={**CACHE, **(env or {})}, timeout=300)
    return p.returncode, p.stdout, p.stderr


@pytest.fixture(scope="module")
def sweeps(tmp_path_factory):
    CACHE["LLS_CACHE_DIR"] = str(tmp_path_factory.mktemp("cache"))  # never the user's ~/.cache
    root = tmp_path_factory.mktemp("runs")
    faulty = make_synthetic_sweep(root, "faulty", n_runs=12, faults=FAULTS, **KW)  # compacted, as runs leave them
    clean = make_synthetic_sweep(root, "clean", n_runs=20, chunk_epochs=4, **KW)
    return root, faulty, clean


def test_verify_finds_every_fault_and_nothing_else(sweeps):
    root, faulty, _ = sweeps
    code, out, err = run_lls("verify", "faulty", "--runs-dir", root, "--json")
    assert code == 1, err
    d = json.loads(out)
    assert [r["run_id"] for r in d["runs"]] == faulty.run_ids
    for r in d["runs"]:
        state, kinds = EXPECT.get(faulty.faults.get(r["run_id"]), ("complete", []))
        assert (r["state"], [i["kind"] for i in r["issues"]]) == (state, kinds), r
    assert set(ISSUE_KINDS) >= {i["kind"] for r in d["runs"] for i in r["issues"]}


def test_verify_table_and_exit_codes(sweeps):
    root, faulty, clean = sweeps
    code, out, _ = run_lls("verify", "faulty", "--runs-dir", root)
    lines = out.strip().splitlines()
    assert code == 1 and lines[0].split()[:3] == ["run_id", "variant", "lr"]
    bad = [r for r, k in faulty.faults.items() if k != "adjusted"]
    assert len(lines) == 1 + len(bad) + 1 and all(any(r in ln for ln in lines) for r in bad)
    assert lines[-1].startswith("NOT COMPLETE faulty: 12 expected runs")
    code, out, _ = run_lls("verify", "clean", env={"LLS_RUNS_DIR": str(root)})
    assert code == 0 and out.strip().splitlines()[-1].startswith("OK clean: 20 expected runs: 20 complete"), out
    code, out, _ = run_lls("verify", clean.path, "--all", "--workers", "1")
    assert code == 0 and len(out.strip().splitlines()) == 1 + 20 + 1
    code, out, err = run_lls("verify", "nope", "--runs-dir", root)
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1 and "sweep 'nope' not found" in err


def test_parallel_and_cached_passes_equal_serial(sweeps, tmp_path):
    root, faulty, clean = sweeps
    for name in ("faulty", "clean"):
        one = json.loads(run_lls("verify", name, "--runs-dir", root, "--json", "--workers", "1", "--no-cache")[1])
        two = json.loads(run_lls("verify", name, "--runs-dir", root, "--json", "--workers", "2", "--no-cache")[1])
        env = {"LLS_CACHE_DIR": str(tmp_path / "c")}
        cold = json.loads(run_lls("verify", name, "--runs-dir", root, "--json", "--workers", "2", env=env)[1])
        warm = json.loads(run_lls("verify", name, "--runs-dir", root, "--json", env=env)[1])
        assert one == two == cold == warm
    assert len(list((tmp_path / "c" / "runs").glob("*.npz"))) == 11 + 20  # npz + JSON entries: no pickle
    a = run_lls("export", "faulty", "--runs-dir", root, "--out", tmp_path / "e1", "--no-cache")
    b = run_lls("export", "faulty", "--runs-dir", root, "--out", tmp_path / "e2", env={"LLS_CACHE_DIR": str(tmp_path / "c")})
    assert a[0] == b[0] == 0
    for f in ("runs", "loss_trajectory", "val_trajectory", "curvature", "noise", "slopes"):
        pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "e1" / f"{f}.parquet"),
                                      pd.read_parquet(tmp_path / "e2" / f"{f}.parquet"))


def test_export_roundtrip(sweeps, tmp_path):
    root, faulty, _ = sweeps
    code, out, err = run_lls("export", "faulty", "--runs-dir", root, "--out", tmp_path / "ds", "--workers", "2")
    assert code == 0, err
    assert "runs are not complete: they are in runs.parquet with their state and reason only" in out
    for stem, schema in dataset_schemas().items():
        t = pq.read_table(tmp_path / "ds" / f"{stem}.parquet")
        assert t.schema.equals(schema, check_metadata=False)
        assert all(t.schema.field(f.name).metadata == f.metadata for f in schema)
    runs = pd.read_parquet(tmp_path / "ds" / "runs.parquet")
    assert runs.run_id.tolist() == faulty.run_ids
    assert runs[runs.state != "complete"][list(RESULT_COLUMNS)].isna().all().all()
    assert (runs[runs.state != "complete"].reason != "").all()
    complete = set(runs.run_id[runs.state == "complete"])
    assert set(pd.read_parquet(tmp_path / "ds" / "loss_trajectory.parquet").run_id) == complete
    dd = (tmp_path / "ds" / "DATA_DICTIONARY.md").read_text()
    assert all(f"| `{f.name}` |" in dd for s in dataset_schemas().values() for f in s)
    code, _, _ = run_lls("export", "faulty", "--runs-dir", root, "--out", tmp_path / "csv", "--format", "csv")
    assert code == 0 and pd.read_csv(tmp_path / "csv" / "runs.csv").run_id.tolist() == faulty.run_ids
    code, _, err = run_lls("export", "faulty", "--runs-dir", root, "--out", tmp_path / "x", "--format", "xlsx")
    assert code == 2 and "invalid choice" in err


def _hashes(root):
    return {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(Path(root).rglob("*")) if p.is_file()}


def test_collect(sweeps, tmp_path):
    root, faulty, _ = sweeps
    before = _hashes(faulty.path)
    code, out, err = run_lls("collect", "faulty", "--runs-dir", root, "--to", tmp_path / "arch", "--checkpoints")
    assert code == 0, err
    assert _hashes(faulty.path) == before  # sources untouched
    dest = tmp_path / "arch" / "faulty"
    assert {p.name for p in dest.iterdir()} >= {"base", "bn_off", "narrow", "adamw", "sweep.json", "MANIFEST.sha256"}
    if shutil.which("sha256sum"):
        subprocess.run(["sha256sum", "--quiet", "-c", "MANIFEST.sha256"], cwd=dest, check=True)
    # the archive verifies exactly like the sweep
    a = json.loads(run_lls("verify", dest, "--json")[1])
    b = json.loads(run_lls("verify", faulty.path, "--json")[1])
    assert [(r["run_id"], r["state"], r["issues"]) for r in a["runs"]] == \
           [(r["run_id"], r["state"], r["issues"]) for r in b["runs"]]
    code, out, _ = run_lls("collect", "faulty", "--runs-dir", root, "--to", tmp_path / "arch", "--checkpoints")
    assert code == 0 and "0 copied" in out


def test_report(sweeps, tmp_path):
    root, faulty, clean = sweeps
    code, out, err = run_lls("report", "clean", "--runs-dir", root, "--out", tmp_path / "r1", "--n-boot", "200")
    assert code == 0, err
    assert len(out.strip().splitlines()) == 1 and out.startswith("GO (clean) || H1 ")
    html = (tmp_path / "r1" / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 5 and "<script" not in html and "http://" not in html
    code, out, err = run_lls("report", "faulty", "--runs-dir", root, "--out", tmp_path / "r2", "--n-boot", "200")
    assert code == 0 and len(out.strip().splitlines()) == 1 and out.startswith("NO-GO (faulty): frequencies:")
    rep = json.loads((tmp_path / "r2" / "report.json").read_text())
    assert {c["condition"]: c["holds"] for c in rep["conditions"]} == {"frequencies": False, "r2": True, "data": False}
    assert len(rep["exclusions"]) == 8


def test_sweep_recover_plans_on_a_synthetic_sweep(sweeps):
    "The synthetic ledger is what `lls sweep submit` writes (params, resources): recover classifies and plans."
    root, faulty, _ = sweeps
    before = (faulty.path / "sweep.json").read_text()
    code, out, err = run_lls("sweep", "recover", "faulty", "--runs-dir", root, "--dry-run", "--json")
    assert code == 0, err
    rows = {r["run_id"]: (r["state"], r["kind"], r["action"]) for r in json.loads(out)["rows"]}
    assert rows == {faulty.with_fault("failed")[0]: ("failed", "oom", "resubmit"),
                    faulty.with_fault("diverged")[0]: ("diverged", "divergence", "resubmit"),
                    faulty.with_fault("interrupted")[0]: ("interrupted", "other", "resubmit")}, rows
    assert (faulty.path / "sweep.json").read_text() == before  # a dry run changes nothing


def test_verify_reads_a_run_killed_mid_compaction_once(sweeps, tmp_path):
    "Leftover chunks that the compacted file supersedes (a kill -9 before the deletions) are not read again."
    root, faulty, _ = sweeps
    sweep = tmp_path / "faulty"
    shutil.copytree(faulty.path, sweep)
    rid = next(r for r in faulty.run_ids if r not in faulty.faults)
    (merged,) = (sweep / rid / "metrics").iterdir()
    t = pq.read_table(merged).sort_by("step")
    n = int(merged.name.split("-")[1].split(".")[0])
    for k in range(n):  # the chunks it was merged from, back again
        pq.write_table(t.slice(k * t.num_rows // n, (k + 1) * t.num_rows // n - k * t.num_rows // n),
                       sweep / rid / "metrics" / f"chunk-{k + 1:06d}.parquet")
    a = json.loads(run_lls("verify", faulty.path, "--json", "--no-cache")[1])
    b = json.loads(run_lls("verify", sweep, "--json", "--no-cache")[1])
    assert [(r["run_id"], r["state"], r["issues"]) for r in a["runs"]] == \
           [(r["run_id"], r["state"], r["issues"]) for r in b["runs"]]
    code, _, err = run_lls("collect", sweep, "--to", tmp_path / "arch")
    assert code == 0, err
    assert [p.name for p in (tmp_path / "arch" / "faulty").rglob(f"{rid}/metrics/*")] == [merged.name]


def test_modules_import_light():
    "`lls --help` imports every module the commands live on: none may pull in torch, pandas, pyarrow, scipy or matplotlib."
    code = ("import sys, loss_lin_slope.cli; "
            "print(sorted({'torch', 'pandas', 'pyarrow', 'matplotlib', 'scipy'} & set(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]", out


def test_empty_sweep_is_refused_by_verify_export_report(tmp_path):
    "A sweep with no expected runs is not 'OK': verify, export and report exit non-zero saying there is nothing to verify."
    (tmp_path / "runs" / "nothing").mkdir(parents=True)
    for cmd in (["verify"], ["export", "--out", tmp_path / "x"], ["report", "--out", tmp_path / "r"]):
        code, out, err = run_lls(*cmd, "nothing", "--runs-dir", tmp_path / "runs")
        assert code != 0 and "nothing to verify" in err, (cmd, code, out, err)
        assert not out.startswith("OK")
    assert not (tmp_path / "x").exists() and not (tmp_path / "r").exists()


def test_collect_refuses_a_stored_variant_that_escapes_the_archive(sweeps, tmp_path):
    "`variant: ../../../x` in a config.yaml (or the ledger) must not write outside --to: exit 2 naming the value."
    root, _, clean = sweeps
    sw = tmp_path / "evil"
    shutil.copytree(clean.path, sw)
    rid = clean.run_ids[0]
    (sw / "sweep.json").write_text(json.dumps({**json.loads((sw / "sweep.json").read_text()),
                                               "runs": {rid: {"variant": "../../../escaped"}}}))
    code, out, err = run_lls("collect", sw, "--to", tmp_path / "archive")
    assert code == 2 and "variant='../../../escaped' is not allowed" in err, (code, out, err)
    assert not (tmp_path / "escaped").exists() and not (tmp_path.parent / "escaped").exists()
    assert not (tmp_path / "archive").exists()


def test_sweep_status_shows_what_verify_finds(sweeps, tmp_path):
    "`lls sweep status` and `lls verify` use one checker: a truncated chunk and a garbage config.yaml are problems\n"
    "in both (on a run whose summary says completed), and a chunk rewritten in place is read again."
    _, _, clean = sweeps
    shutil.copytree(clean.path, tmp_path / "st")
    sw = tmp_path / "st"
    a, b, c = clean.run_ids[:3]
    chunks = sorted((sw / a / "metrics").glob("chunk-*.parquet"))
    chunks[-1].write_bytes(chunks[-1].read_bytes()[:100])  # truncated
    (sw / b / "config.yaml").write_text("- not: [a config")
    code, out, err = run_lls("sweep", "status", "st", "--runs-dir", tmp_path, "--json", "--no-scheduler")
    assert code == 0, err
    st = json.loads(out)
    assert any(p.startswith("unreadable: chunk-") for p in st["checks"][a]), st["checks"].get(a)
    assert any(p.startswith("config: config.yaml") for p in st["checks"][b]), st["checks"].get(b)
    assert sorted(next(x for x in st["alerts"] if x["kind"] == "corrupt")["runs"]) == sorted([a, b])
    code, out, _ = run_lls("verify", sw, "--json", "--no-cache")
    verdict = {r["run_id"]: r["state"] for r in json.loads(out)["runs"]}
    assert {r: st["runs"][r]["check"] for r in verdict} == verdict
    # rewrite a chunk of c in place (same name, same directory mtime): status reads it again
    (chunk_c,) = sorted((sw / c / "metrics").glob("chunk-*.parquet"))[-1:]
    m = os.stat(chunk_c.parent)
    chunk_c.write_bytes(chunk_c.read_bytes()[:-9])
    os.utime(chunk_c.parent, ns=(m.st_atime_ns, m.st_mtime_ns))
    st = json.loads(run_lls("sweep", "status", "st", "--runs-dir", tmp_path, "--json", "--no-scheduler")[1])
    assert c in st["checks"] and st["runs"][c]["check"] == "corrupt", st["checks"].get(c)
