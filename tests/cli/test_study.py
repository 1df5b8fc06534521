"""`imbtui study`: a grid trained once, reused on the next call, resumed after an interruption, and
an answer whose numbers are the store's views."""

from __future__ import annotations

import json
import math
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from imbtui.store import Store
from tests.conftest import REPO, imbtui

# two ratios x two seeds, two epochs of a few large batches: runs of seconds (their start-up costs
# most); --dynamics minimal has every row the report reads
SMALL = ["--epochs", "2", "--batch-size", "1024", "--dynamics", "minimal", "-q"]
GRID = ["--ratios", "10", "100", "--seeds", "0", "1", *SMALL]
T975_DF1 = 12.706204736174698  # Student's t, 97.5 % quantile, 1 degree of freedom (two seeds)


def study(store: Path, out: Path, *extra: str):
    return imbtui("study", *GRID, "--store", str(store), "--out", str(out), *extra, timeout=600)


def files_of(store: Path) -> dict[str, dict[str, float]]:
    """{run id: {file: mtime}} of every run folder."""
    return {d.name: {str(f.relative_to(d)): f.stat().st_mtime_ns for f in d.rglob("*")
                     if f.is_file()}
            for d in sorted((store / "runs").iterdir())}


def summary_rows(text: str, heading: str) -> list[list[str]]:
    """The body rows of the Markdown table under a `## heading`."""
    section = text.split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0]
    rows = [line.strip("|").split(" | ") for line in section.splitlines() if line.startswith("|")]
    return [[c.strip() for c in r] for r in rows[2:]]


def pm(mean: float, sd: float) -> str:
    """mean ± the 95 % t half-width over two seeds, as summary.md writes it."""
    return f"{mean:.3f} ± {T975_DF1 * sd / math.sqrt(2):.3f}"


@pytest.fixture(scope="module")
def first(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, str]:
    root = tmp_path_factory.mktemp("study")
    store, out = root / "store", root / "out"
    proc = study(store, out, "-j", "2")
    return store, out, proc.stderr


def test_study_trains_the_grid_and_writes_its_answer(first) -> None:
    store, out, stderr = first
    assert "4 runs, 0 reused" in stderr and "4 to train" in stderr
    runs = [json.loads((d / "run.json").read_text()) for d in (store / "runs").iterdir()]
    assert sorted(r["name"] for r in runs) == sorted(
        f"study-mnist1d-r{r}-ce-s{s}" for r in (10, 100) for s in (0, 1))
    assert {r["status"] for r in runs} == {"finished"}
    for name in ("summary.md", "report.txt", "findings.csv", "curves.png", "initial_drop.png",
                 "onset.png", "speed.png", "gap.png"):
        assert (out / name).stat().st_size > 0, name
    summary = (out / "summary.md").read_text()
    for figure in ("curves.png", "initial_drop.png", "onset.png", "speed.png", "gap.png"):
        assert f"]({figure})" in summary  # linked and shown
    assert "(1) classes learned alike?" in summary and "excess gap" in summary


def test_summary_numbers_are_the_views(first) -> None:
    """Each number of summary.md, recomputed here from the views with plain DuckDB SQL."""
    store, out, _ = first
    summary = (out / "summary.md").read_text()
    con = Store(store).connect()
    finals = con.sql("""
        SELECT r.ratio, avg(test_balanced), stddev_samp(test_balanced),
               avg(test_majority), stddev_samp(test_majority),
               avg(test_minority), stddev_samp(test_minority),
               avg(gap_minority), stddev_samp(gap_minority), count(*)
        FROM runs r JOIN final_results f USING (run_id) GROUP BY r.ratio ORDER BY r.ratio
    """).fetchall()
    rows = summary_rows(summary, "Final test accuracy")
    assert len(rows) == 2
    for row, (ratio, *stats, n) in zip(rows, finals):
        assert row[:3] == [f"{ratio:g}", "ce", str(n)]
        assert row[3:] == [pm(stats[i], stats[i + 1]) for i in range(0, 8, 2)]
    # finding 3: the minority's excess train - test gap; finding 1: the spread of the onsets
    excess = dict(con.sql("""
        SELECT r.ratio, printf('%+.3f', avg(gap_minority - gap_majority))
        FROM runs r JOIN final_results f USING (run_id) GROUP BY r.ratio""").fetchall())
    spread = dict(con.sql("""
        WITH onset AS (
            SELECT run_id, class_id, min(epoch) FILTER (WHERE acc >= 0.5) AS onset,
                   max(epoch) AS last
            FROM class_results WHERE split = 'train' AND epoch >= 1 GROUP BY ALL),
        per_run AS (
            SELECT run_id, max(coalesce(onset, last + 1)) - min(coalesce(onset, last + 1)) AS s
            FROM onset GROUP BY run_id)
        SELECT r.ratio, printf('%.1f', avg(s)) FROM per_run JOIN runs r USING (run_id)
        GROUP BY r.ratio""").fetchall())
    table = {r[0]: r[1:] for r in summary_rows(summary, "The three findings")}
    assert [c.split(" ±")[0] for c in table["excess gap, minority - majority"]] == [
        excess[10.0], excess[100.0]]
    assert [c.split(" ±")[0] for c in table["onset spread, max - min (epochs)"]] == [
        spread[10.0], spread[100.0]]


def test_second_call_reuses_every_run_and_a_third_trains_only_what_is_missing(first) -> None:
    store, out, _ = first
    before = files_of(store)
    again = study(store, out)
    assert "4 runs, 4 reused" in again.stderr and "0 to train" in again.stderr
    assert files_of(store) == before  # same run ids, no file rewritten

    # interrupted halfway: one run left unfinished, another gone
    by_name = {json.loads((store / "runs" / rid / "run.json").read_text())["name"]: rid
               for rid in before}
    stopped, gone = by_name["study-mnist1d-r100-ce-s1"], by_name["study-mnist1d-r100-ce-s0"]
    meta_path = store / "runs" / stopped / "run.json"
    meta = json.loads(meta_path.read_text())
    meta_path.write_text(json.dumps({**meta, "status": "interrupted", "finished_at": None}))
    for f in sorted((store / "runs" / gone).rglob("*"), reverse=True):
        f.unlink() if f.is_file() else f.rmdir()
    (store / "runs" / gone).rmdir()
    kept = {rid: files for rid, files in files_of(store).items()}

    third = study(store, out)
    assert "4 runs, 2 reused" in third.stderr and "2 to train" in third.stderr
    after = files_of(store)
    new = set(after) - set(kept)
    names = {json.loads((store / "runs" / rid / "run.json").read_text())["name"] for rid in new}
    assert names == {"study-mnist1d-r100-ce-s0", "study-mnist1d-r100-ce-s1"}
    assert {rid: after[rid] for rid in kept} == kept  # nothing else trained or touched
    report = (out / "report.txt").read_text()
    assert all(rid in report for rid in new) and stopped not in report


@pytest.mark.slow
def test_killed_halfway_the_next_call_trains_only_what_is_missing(first) -> None:
    """A real interruption: SIGTERM (as `kill` or a scheduler sends; Ctrl-C takes the same path)
    while the first of two new cells trains. The run records itself as interrupted, the study
    exits 130, and the next call trains exactly the cells without a finished run."""
    store, out, _ = first
    grid = ["--ratios", "10", "100", "--seeds", "0", "1", "2", *SMALL, "--store", str(store),
            "--out", str(out)]
    before = set(files_of(store))
    proc = subprocess.Popen([sys.executable, "-m", "imbtui", "study", *grid], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and not any(
            (json.loads(p.read_text()).get("step_done") or 0) > 0
            for p in (store / "runs").glob("*/run.json") if p.parent.name not in before):
        time.sleep(0.3)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "the same command trains only what is missing" in stderr
    status = {rid: json.loads((store / "runs" / rid / "run.json").read_text())
              for rid in set(files_of(store)) - before}
    assert "interrupted" in {m["status"] for m in status.values()}
    done = {m["name"] for m in status.values() if m["status"] == "finished"}
    missing = {f"study-mnist1d-r{r}-ce-s2" for r in (10, 100)} - done

    kept = files_of(store)
    again = imbtui("study", *grid, timeout=600)
    assert f"{len(missing)} to train" in again.stderr
    new = set(files_of(store)) - set(kept)
    assert {json.loads((store / "runs" / rid / "run.json").read_text())["name"]
            for rid in new} == missing
    report = (out / "report.txt").read_text()
    assert not any(rid in report for rid, m in status.items() if m["status"] != "finished")


def test_dry_run_says_which_runs_it_would_reuse(first) -> None:
    store, out, _ = first
    proc = study(store, out, "--dry-run")
    lines = proc.stdout.splitlines()
    assert len(lines) == 4 and all(re.match(r"reuse \d{8}-\d{6}-\w{6}\s+study-", ln)
                                   for ln in lines)
    # another config (here the learning rate) is another run
    other = study(store, out, "--dry-run", "--lr", "0.02")
    assert all(ln.startswith("train ") for ln in other.stdout.splitlines())


@pytest.mark.parametrize("args, message", [
    (["--methods", "xyz"], "unknown method 'xyz'"),
    (["--methods", "ce+nope"], "no part 'nope'"),
    (["--methods", "ldam-mean"], "would train as 'ldam'"),
    (["--ratios", "0.5"], "--ratios"),
    (["--drw", "3"], "--drw is a parameter of a method none of --methods uses"),
    (["--out", "FILE"], "is a file, not a folder"),
])
def test_bad_input_is_one_line_and_writes_nothing(tmp_path: Path, args: list[str],
                                                  message: str) -> None:
    (tmp_path / "FILE").write_text("x")
    args = [str(tmp_path / a) if a == "FILE" else a for a in args]
    out = [] if "--out" in args else ["--out", str(tmp_path / "out")]
    proc = imbtui("study", *args, *out, "--store", str(tmp_path / "store"), check=False)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and message in proc.stderr, proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["FILE"]


def test_a_run_of_an_older_code_version_matches_the_config_it_trained() -> None:
    """A run written before some options existed has a config without those fields, which
    resolve to the defaults it trained with (here: the bundled ratio-100 sample run's config with
    the fields of later options taken out); another lr is another run."""
    from imbtui.study import resolved_identity, stored_identity
    from trainer.config import TrainConfig

    (meta,) = [m for m in (json.loads(p.read_text())
                           for p in (REPO / "sample_runs" / "runs").glob("*/run.json"))
               if m["name"] == "sample-mnist1d-r100-ce-s0"]
    later = ("posthoc_tau", "stage2_epochs", "optimizer", "rho", "smoothing", "mixup")
    older = {k: v for k, v in meta["config"].items() if k not in later}
    cfg = TrainConfig(ratio=100, epochs=20, seed=0, name="other name",
                      sharpness_every=meta["config"].get("sharpness_every"),
                      conflict_every=meta["config"].get("conflict_every"))
    assert stored_identity(meta["config"]) == resolved_identity(cfg)
    assert stored_identity(older) == resolved_identity(cfg)
    assert stored_identity({**meta["config"], "lr": 0.02}) != resolved_identity(cfg)


def test_method_spellings_become_their_options() -> None:
    from imbtui.errors import UserError
    from imbtui.study import method_options, unused_method_options

    assert method_options("ldam-drw", {}, 30) == {"loss": "ldam", "drw": 24}
    assert method_options("ldam-drw", {"drw": 5}, 30)["drw"] == 5
    assert method_options("cb-mean", {}, 30) == {"loss": "cb", "cb_reduction": "mean"}
    assert method_options("ce+class-balanced+crt", {}, 30) == {
        "loss": "ce", "sampler": "class-balanced", "stage2": "crt"}
    assert method_options("ce+las", {"smoothing": 0.4}, 30) == {
        "loss": "ce", "smoothing": 0.4, "smoothing_tail": 0.0}
    assert unused_method_options(["ce", "ce+mixup"], {"mixup": 0.5, "drw": 3}) == ["drw"]
    with pytest.raises(UserError):
        method_options("ce+", {}, 30)
