"""A damaged store: readers skip each damaged piece with a warning naming it and serve the rest;
`imbtui doctor` lists the problems and quarantines them without deleting a byte. Compaction never
shows a row twice or loses one; `imbtui export --duckdb` copies runs out exactly.

Stores here are written through RunWriter with hand-made rows, so every expected count is known
without reading the store; the expected contents of exports come from reading the Parquet parts
with polars, not through the views under test.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from pathlib import Path

import duckdb
import numpy as np
import polars as pl
import pytest

from imbtui.cli import main
from imbtui.store import RunWriter, Store, StoreError
from imbtui.store.doctor import diagnose, quarantine
from imbtui.store.layout import scan_table
from imbtui.store.semantic import VIEWS

C = 3  # classes per synthetic run


def steps_cols(steps: range, value: float = 1.0) -> dict[str, np.ndarray]:
    k = len(steps) * C
    return {
        "step": np.repeat(np.asarray(steps), C), "epoch": np.zeros(k, dtype=int),
        "class_id": np.tile(np.arange(C), len(steps)), "n": np.full(k, 4),
        "loss_sum": np.full(k, value), "correct": np.full(k, 2), "p_true_sum": np.full(k, 1.5),
        "margin_sum": np.zeros(k), "pred_count": np.full(k, 4), "grad_norm": np.ones(k),
        "lr": np.full(k, 0.1),
    }


def make_run(root: Path, run_id: str, parts: int, steps_per_part: int = 2,
             finish: str | None = "finished", compact_min_parts: int = 10_000) -> RunWriter:
    """A run with `parts` steps parts of `steps_per_part` steps each (no compaction by default)."""
    w = RunWriter(root, run_id=run_id, heartbeat_s=3600, compact_min_parts=compact_min_parts)
    w.start({"name": run_id, "config": {"dataset": "toy", "ratio": 10.0, "n_classes": C}})
    w.write("classes", {"class_id": np.arange(C), "class_name": [str(i) for i in range(C)],
                        "train_count": [9, 5, 1], "test_count": [3, 3, 3], "rank": np.arange(C),
                        "grp": ["majority", "majority", "minority"], "shot": ["few"] * C})
    for p in range(parts):
        w.write("steps", steps_cols(range(p * steps_per_part, (p + 1) * steps_per_part), p))
    if finish:
        w.finish(finish)
    return w


def files_digest(root: Path) -> dict[str, str]:
    """relative path -> sha256 of every file under root."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def steps_part(root: Path, run_id: str, n: int) -> Path:
    return root / "runs" / run_id / "steps" / f"part-{n:06d}.parquet"


def count_steps(st: Store) -> dict[str, int]:
    frame = st.sql("SELECT run_id, count(*) AS n FROM steps GROUP BY run_id")
    return dict(frame.iter_rows())


def make_old(path: Path, seconds: float = 3600) -> None:
    t = time.time() - seconds
    os.utime(path, (t, t))


# ==== damaged parts =================================================================================

GARBAGE = {
    # valid magic at both ends, random bytes between: the footer length is nonsense
    "magic-garbage": lambda good: b"PAR1" + os.urandom(2000) + b"PAR1",
    # valid magic and a plausible footer length, but the footer does not parse
    "bad-footer": lambda good: b"PAR1" + os.urandom(2000) + (300).to_bytes(4, "little") + b"PAR1",
    "truncated": lambda good: good[: len(good) // 2],
    "empty": lambda good: b"",
    "text": lambda good: b"not parquet at all\n",
}


@pytest.mark.parametrize("kind", sorted(GARBAGE))
def test_damaged_part_is_skipped_with_a_warning_naming_it(tmp_path: Path, kind: str) -> None:
    make_run(tmp_path, "good", parts=3)
    make_run(tmp_path, "hurt", parts=3)
    bad = steps_part(tmp_path, "hurt", 1)
    bad.write_bytes(GARBAGE[kind](bad.read_bytes()))
    st = Store(tmp_path)
    # 3 parts x 2 steps x 3 classes = 18 rows; the damaged part held 6 of hurt's
    assert count_steps(st) == {"good": 18, "hurt": 12}
    assert [w for w in st.warnings if str(bad) in w and "damaged" in w]
    assert len(st.warnings) == 1


def test_part_damaged_inside_its_pages_is_found_when_a_query_trips_on_it(tmp_path: Path) -> None:
    """A footer that parses over pages that do not: DuckDB fails without naming the file, so the
    store decodes its parts, leaves the bad one out, and answers the query anyway."""
    make_run(tmp_path, "good", parts=3)
    make_run(tmp_path, "hurt", parts=3)
    bad = steps_part(tmp_path, "hurt", 2)
    data = bytearray(bad.read_bytes())
    for i in range(4, len(data) // 3):  # the first pages, well before the footer
        data[i] ^= 0x5A
    bad.write_bytes(bytes(data))
    st = Store(tmp_path)
    con = st.connect()
    assert st.warnings == []  # the footer is fine: nothing to see before the data is read
    with pytest.raises(duckdb.Error):
        con.sql("SELECT sum(loss_sum), sum(n) FROM steps").fetchall()  # plain DuckDB fails...
    got = st.sql("SELECT run_id, count(*) AS n FROM steps GROUP BY run_id", con=con)
    assert dict(got.iter_rows()) == {"good": 18, "hurt": 12}  # ...the store answers
    assert [w for w in st.warnings if str(bad) in w]


def test_part_of_another_table_is_skipped(tmp_path: Path) -> None:
    make_run(tmp_path, "a", parts=2)
    classes = tmp_path / "runs" / "a" / "classes" / "part-000000.parquet"
    shutil.copy(classes, steps_part(tmp_path, "a", 7))  # valid Parquet, wrong table
    st = Store(tmp_path)
    assert count_steps(st) == {"a": 12}
    assert any("part-000007" in w and "not a steps part" in w for w in st.warnings)


# ==== damaged run.json, unknown files ===============================================================

def test_bad_run_json_files_are_skipped_and_the_rest_served(tmp_path: Path) -> None:
    for rid in ("ok", "garbled", "listed", "gone", "typed", "renamed"):
        make_run(tmp_path, rid, parts=1)
    runs = tmp_path / "runs"
    (runs / "garbled" / "run.json").write_text('{"run_id": "garbled", "status": ')
    (runs / "listed" / "run.json").write_text("[1, 2, 3]")
    (runs / "gone" / "run.json").unlink()
    make_old(runs / "gone")
    typed = json.loads((runs / "typed" / "run.json").read_text())
    typed.update(status=5, ratio="high", epochs=[1], step_done=1.5, name={"x": 1},
                 created_at=12, config="not a dict")
    (runs / "typed" / "run.json").write_text(json.dumps(typed))
    renamed = json.loads((runs / "renamed" / "run.json").read_text())
    renamed["run_id"] = "../../escape"
    (runs / "renamed" / "run.json").write_text(json.dumps(renamed))
    st = Store(tmp_path)
    assert count_steps(st) == {"ok": 6, "typed": 6, "renamed": 6}
    frame = st.sql("SELECT run_id, status, ratio, epochs, step_done, name, created_at "
                   "FROM runs ORDER BY run_id")
    assert frame.rows() == [("ok", "finished", 10.0, None, None, "ok", frame["created_at"][0]),
                            ("renamed", "finished", 10.0, None, None, "renamed",
                             frame["created_at"][1]),
                            ("typed", None, None, None, None, None, None)]
    text = "\n".join(st.warnings)
    for rid in ("garbled", "listed", "gone", "renamed"):
        assert f"run {rid}" in text, rid


def test_unknown_files_are_skipped_with_warnings(tmp_path: Path) -> None:
    make_run(tmp_path, "a", parts=2)
    runs = tmp_path / "runs"
    strays = [runs / "notes.txt", runs / "a" / "notes.txt", runs / "a" / "steps" / "junk.parquet",
              runs / "a" / "steps" / "part-1.parquet", runs / "has space"]
    for p in strays[:-1]:
        p.write_bytes(b"PAR1 stray PAR1")
    strays[-1].mkdir()
    (runs / "a" / ".part-000009.parquet.tmp").write_bytes(b"in flight")  # a write in progress
    st = Store(tmp_path)
    assert count_steps(st) == {"a": 12}
    for p in strays:
        assert any(str(p) in w for w in st.warnings), p
    assert len(st.warnings) == len(strays)


def test_cli_commands_serve_a_damaged_store_with_one_warning_per_piece(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    make_run(tmp_path, "good", parts=2)
    make_run(tmp_path, "hurt", parts=2)
    bad = steps_part(tmp_path, "hurt", 0)
    bad.write_bytes(b"PAR1" + b"\0" * 100 + b"PAR1")
    (tmp_path / "runs" / "hurt" / "stray.bin").write_bytes(b"?")
    store = ["--store", str(tmp_path)]
    for argv in (["runs", *store], ["runs", "--json", *store], ["show", "good", *store],
                 ["sql", "SELECT run_id, count(*) FROM steps GROUP BY ALL", *store],
                 ["query", "run_summary", *store]):
        assert main(argv) == 0, argv
        err = capsys.readouterr().err
        assert "Traceback" not in err
        assert err.count("warning:") == 2 and str(bad.name) in err and "stray.bin" in err, argv


# ==== doctor ==========================================================================================

def damaged_store(root: Path) -> set[tuple[str, Path]]:
    """One store with a problem of each kind doctor knows; returns {(kind, path)}."""
    make_run(root, "good", parts=3)
    make_run(root, "parts", parts=4)
    make_run(root, "nojson", parts=1)
    make_run(root, "badjson", parts=1)
    make_run(root, "copied", parts=2)
    make_run(root, "live", parts=2, finish=None)
    runs = root / "runs"
    damaged = steps_part(root, "parts", 1)
    damaged.write_bytes(b"PAR1" + os.urandom(500) + b"PAR1")
    (runs / "nojson" / "run.json").unlink()
    make_old(runs / "nojson")
    (runs / "badjson" / "run.json").write_text("{")
    foreign = steps_part(root, "copied", 5)
    shutil.copy(steps_part(root, "good", 0), foreign)  # another run's rows
    stray = runs / "parts" / "notes.txt"
    stray.write_text("hello")
    temp = runs / "parts" / "steps" / ".part-000009.parquet.x.tmp"
    temp.write_bytes(b"half")
    make_old(temp)
    dup = steps_part(root, "good", 9)
    shutil.copy(steps_part(root, "good", 2), dup)  # the same rows twice under a new number
    beat = json.loads((runs / "live" / "run.json").read_text())
    beat["heartbeat_at"] = "2020-01-01T00:00:00+00:00"
    (runs / "live" / "run.json").write_text(json.dumps(beat))
    return {("damaged-part", damaged), ("no-run-json", runs / "nojson"),
            ("bad-run-json", runs / "badjson"), ("foreign-part", foreign),
            ("unknown-file", stray), ("stale-temp", temp), ("duplicate-rows", runs / "good" / "steps"),
            ("crashed-run", runs / "live" / "run.json"),
            # the crashed run's disk-space reserve (finished runs remove theirs)
            ("stale-temp", runs / "live" / ".reserve")}


def test_doctor_finds_each_kind_of_problem(tmp_path: Path) -> None:
    expected = damaged_store(tmp_path)
    found = {(p.kind, p.path) for p in diagnose(tmp_path)}
    assert found == expected


def test_doctor_quarantine_moves_without_deleting(tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    expected = damaged_store(tmp_path)
    before = files_digest(tmp_path)
    rows_before = count_steps(Store(tmp_path))
    assert main(["doctor", "--store", str(tmp_path)]) == 1
    listing = capsys.readouterr().out
    for kind, path in expected:
        assert kind in listing and str(path.relative_to(tmp_path)) in listing
    assert files_digest(tmp_path) == before  # listing changes nothing

    assert main(["doctor", "--quarantine", "--store", str(tmp_path)]) == 1  # duplicates remain
    capsys.readouterr()
    after = files_digest(tmp_path)
    # every byte is still there: each file is either where it was or under quarantine/<time>/
    moved = {k: v for k, v in after.items() if k.startswith("quarantine/")}
    (qdir,) = {Path(k).parts[1] for k in moved}
    restored = {k.split("/", 2)[2]: v for k, v in moved.items() if not k.endswith("manifest.json")}
    assert {**{k: v for k, v in after.items() if k not in moved}, **restored} == before
    manifest = json.loads((tmp_path / "quarantine" / qdir / "manifest.json").read_text())
    assert {(m["kind"], tmp_path / m["from"]) for m in manifest["moves"]} == {
        (k, p) for k, p in expected if k not in ("duplicate-rows", "crashed-run")}
    # before: good's 3 parts (18 rows) + the duplicated part (6) + its part copied into "copied"
    # (6 rows that say run_id = good); parts: 4 parts less the damaged one; nojson and badjson
    # are invisible without their run.json
    assert rows_before == {"good": 30, "parts": 18, "copied": 12, "live": 12}
    st = Store(tmp_path)
    assert count_steps(st) == {"good": 24, "parts": 18, "copied": 12, "live": 12}
    assert st.warnings == []  # nothing left for a reader to warn about
    remaining = {p.kind for p in diagnose(tmp_path)}
    assert remaining == {"duplicate-rows", "crashed-run"}  # to be fixed by a person


def test_doctor_on_a_clean_store_and_a_missing_one(tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    make_run(tmp_path, "a", parts=2)
    assert main(["doctor", "--store", str(tmp_path)]) == 0
    assert "no problems" in capsys.readouterr().out
    assert main(["doctor", "--json", "--store", str(tmp_path)]) == 0
    assert json.loads(capsys.readouterr().out) == []
    assert main(["doctor", "--store", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no run store" in err


def test_quarantine_of_nothing_creates_nothing(tmp_path: Path) -> None:
    make_run(tmp_path, "a", parts=2)
    assert quarantine(tmp_path, diagnose(tmp_path)) is None
    assert not (tmp_path / "quarantine").exists()


# ==== compaction ======================================================================================

def test_finish_compacts_parts_into_one_with_every_row(tmp_path: Path) -> None:
    make_run(tmp_path, "a", parts=12, steps_per_part=5, compact_min_parts=8)
    names = sorted(p.name for p in (tmp_path / "runs" / "a" / "steps").iterdir())
    assert names == ["part-000000-000011.parquet"]
    frame = pl.read_parquet(tmp_path / "runs" / "a" / "steps" / names[0])
    assert frame["step"].to_list() == np.repeat(np.arange(60), C).tolist()
    assert frame["loss_sum"].to_list() == np.repeat(np.arange(12), 5 * C).astype(float).tolist()
    assert count_steps(Store(tmp_path)) == {"a": 180}


def test_a_compaction_killed_before_cleanup_counts_nothing_twice(tmp_path: Path) -> None:
    """Killed after renaming the compacted part into place but before deleting the parts it holds:
    readers read the compacted part only; doctor calls the rest superseded."""
    make_run(tmp_path, "a", parts=10, steps_per_part=2, finish=None)
    steps = tmp_path / "runs" / "a" / "steps"
    keep = tmp_path / "keep"
    shutil.copytree(steps, keep)
    w = RunWriter(tmp_path, run_id="a")  # the same run's writer, to compact it
    assert w.compact("steps") is not None
    for p in keep.iterdir():  # the plain parts come back, as if never deleted
        shutil.copy(p, steps / p.name)
    listing = scan_table(steps)
    assert [p.name for p in listing.parts] == ["part-000000-000009.parquet"]
    assert len(listing.superseded) == 10
    assert count_steps(Store(tmp_path)) == {"a": 60}
    assert {p.kind for p in diagnose(tmp_path)} == {"superseded-part"}
    # a part written after the compaction is read beside it
    w.write("steps", steps_cols(range(20, 22)))
    assert count_steps(Store(tmp_path)) == {"a": 66}


def test_views_made_before_a_compaction_still_answer(tmp_path: Path) -> None:
    w = make_run(tmp_path, "a", parts=10, finish=None, compact_min_parts=2)
    st = Store(tmp_path)
    con = st.connect()
    w.finish("finished")  # compacts: the files under the views are gone
    assert not steps_part(tmp_path, "a", 0).exists()
    assert st.sql("SELECT count(*) FROM steps", con=con).item() == 60


def test_a_compaction_while_the_semantic_layer_is_made_means_listing_again(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A run compacts after its tables were listed and before the semantic views bind to them:
    connecting lists again, and counts every row once."""
    from imbtui.store import reader

    w = make_run(tmp_path, "a", parts=10, finish=None, compact_min_parts=2)
    real, calls = reader.create_views, []

    def compacting_first(con: duckdb.DuckDBPyConnection) -> None:
        calls.append(1)
        if len(calls) == 1:
            assert w.compact("steps") is not None  # the listed plain parts vanish
        real(con)

    monkeypatch.setattr(reader, "create_views", compacting_first)
    st = Store(tmp_path)
    con = st.connect()
    assert len(calls) == 2
    assert st.sql("SELECT count(*) FROM steps", con=con).item() == 60


def test_compaction_never_touches_a_damaged_part(tmp_path: Path) -> None:
    make_run(tmp_path, "a", parts=10, finish=None)
    bad = steps_part(tmp_path, "a", 4)
    bad.write_bytes(b"PAR1" + b"x" * 50 + b"PAR1")
    w = RunWriter(tmp_path, run_id="a")  # the same run's writer, to compact it
    assert w.compact("steps") is None  # fails on the damaged part, leaving every part in place
    assert len(scan_table(bad.parent).parts) == 10
    assert count_steps(Store(tmp_path)) == {"a": 54}


def write_and_keep_copies(root: Path, parts: int) -> tuple[RunWriter, Path]:
    """A live run whose caller reuses one set of arrays for every part (as a recorder with a
    fixed buffer might), plus a copy of its plain parts as they were on disk before finish."""
    w = RunWriter(root, run_id="a", heartbeat_s=3600, compact_min_parts=2)
    w.start({"name": "a", "config": {"dataset": "toy", "ratio": 10.0, "n_classes": C}})
    cols = steps_cols(range(0, 2))
    for p in range(parts):
        cols["step"][:] = np.repeat(np.arange(2 * p, 2 * p + 2), C)
        cols["loss_sum"][:] = float(p)
        w.write("steps", cols)
    cols["loss_sum"][:] = -1.0  # the caller changes its arrays after the last write, too
    copies = root / "copies"
    shutil.copytree(root / "runs" / "a" / "steps", copies)
    return w, copies


@pytest.mark.parametrize("cache_bytes", [None, 1], ids=["from-memory", "over-the-cap"])
def test_compacted_part_holds_exactly_the_rows_of_the_parts(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cache_bytes: int | None) -> None:
    """Compaction merges the writer's own frames from memory while they fit its cap, and reads the
    parts back otherwise: either way the compacted part holds the rows the parts held."""
    import imbtui.store.writer as writer_mod

    if cache_bytes is not None:
        monkeypatch.setattr(writer_mod, "FRAME_CACHE_BYTES", cache_bytes)
    w, copies = write_and_keep_copies(tmp_path, parts=6)
    assert (w._frames["steps"] is None) == (cache_bytes is not None)
    w.finish("finished")
    compacted = sorted((tmp_path / "runs" / "a" / "steps").iterdir())
    assert [p.name for p in compacted] == ["part-000000-000005.parquet"]
    expected = pl.concat([pl.read_parquet(p) for p in sorted(copies.iterdir())])
    got = pl.read_parquet(compacted[0])
    assert got.equals(expected)
    assert got["loss_sum"].to_list() == np.repeat(np.arange(6.0), 2 * C).tolist()


def test_a_part_changed_on_disk_is_compacted_from_the_disk(tmp_path: Path) -> None:
    """The writer merges from memory only parts still the size it wrote; one damaged since then
    sends compaction to the files, which refuses it and leaves every part in place."""
    w, _ = write_and_keep_copies(tmp_path, parts=6)
    bad = steps_part(tmp_path, "a", 2)
    bad.write_bytes(b"PAR1" + b"x" * 50 + b"PAR1")
    w.finish("finished")
    assert len(scan_table(bad.parent).parts) == 6
    assert count_steps(Store(tmp_path)) == {"a": 5 * 2 * C}


def test_a_writer_that_never_started_writes_nothing(tmp_path: Path) -> None:
    """Finishing a run whose start never came (an interrupt before it, or a refused start) must
    not make a run folder, nor touch the run that made start refuse."""
    RunWriter(tmp_path, run_id="fresh").finish("interrupted", "stopped")
    assert not (tmp_path / "runs" / "fresh").exists()
    make_run(tmp_path, "a", parts=2, finish=None)
    before = files_digest(tmp_path)
    twin = RunWriter(tmp_path, run_id="a")
    with pytest.raises(StoreError, match="already exists"):
        twin.start({"name": "twin"})
    twin.update(step_done=5)
    twin.finish("failed", "refused")
    assert files_digest(tmp_path) == before


def test_an_interrupt_inside_start_still_records_the_run(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """A sweep's SIGINT can land while start() starts the heartbeat, just after run.json appeared:
    the trainer's handlers then finish the run as interrupted (start is inside their try)."""
    import threading

    from trainer.loop import TrainConfig, train

    def interrupted_start(self: threading.Thread) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(threading.Thread, "start", interrupted_start)
    w = RunWriter(tmp_path, run_id="a")
    with pytest.raises(KeyboardInterrupt):
        train(TrainConfig(ratio=10, epochs=1, max_steps=3, device="cpu"), w)
    monkeypatch.undo()
    meta = json.loads((tmp_path / "runs" / "a" / "run.json").read_text())
    assert (meta["status"], meta["step_done"]) == ("interrupted", 0)
    assert not (tmp_path / "runs" / "a" / ".reserve").exists()


# ==== export ============================================================================================

def parts_frame(root: Path, table: str, run_ids: list[str]) -> pl.DataFrame:
    """The rows of `table` for `run_ids`, read straight from the Parquet parts with polars."""
    paths = [p for r in run_ids for p in scan_table(root / "runs" / r / table).parts]
    return pl.read_parquet(paths) if paths else pl.DataFrame()


def test_export_writes_a_standalone_duckdb_file(tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "store"
    make_run(root, "a", parts=3)
    make_run(root, "b", parts=12, compact_min_parts=8)
    make_run(root, "c", parts=1, finish="diverged")
    before = files_digest(root)
    dest = tmp_path / "out" / "runs.duckdb"
    dest.parent.mkdir()
    assert main(["export", "--duckdb", str(dest), "a", "b", "--store", str(root)]) == 0
    assert "steps 90" in capsys.readouterr().out  # (3 + 12) parts x 2 steps x 3 classes
    assert files_digest(root) == before
    assert [p.name for p in dest.parent.iterdir()] == ["runs.duckdb"]  # no temp file left
    with duckdb.connect(str(dest), read_only=True) as con:
        kinds = dict(con.sql("SELECT table_name, table_type FROM information_schema.tables"
                             ).fetchall())
        assert {t for t, k in kinds.items() if k == "BASE TABLE"} == {
            "runs", "classes", "steps", "epochs", "probes", "samples", "geometry",
            "geometry_summary", "posthoc", "logits", "conflict", "direction", "sharpness",
            "export_info"}
        # the semantic layer travels with the data, as views over the file's own tables
        assert {t for t, k in kinds.items() if k == "VIEW"} == {v.name for v in VIEWS}
        ours = Store(root).sql("SELECT * FROM final_results ORDER BY run_id")
        assert con.sql("SELECT * FROM final_results ORDER BY run_id").pl().equals(ours)
        assert con.sql("SELECT run_id, status FROM runs ORDER BY run_id").fetchall() == [
            ("a", "finished"), ("b", "finished")]
        for table in ("steps", "classes"):
            got = con.sql(f"SELECT * FROM {table}").pl()
            want = parts_frame(root, table, ["a", "b"])
            key = ["run_id", "class_id"] + (["step"] if table == "steps" else [])
            assert got.sort(key).equals(want.sort(key)), table


def test_export_selects_runs_with_where(tmp_path: Path) -> None:
    root = tmp_path / "store"
    make_run(root, "a", parts=1)
    make_run(root, "c", parts=2, finish="diverged")
    dest = tmp_path / "d.duckdb"
    assert main(["export", "--duckdb", str(dest), "--where", "status = 'diverged'",
                 "--store", str(root)]) == 0
    with duckdb.connect(str(dest), read_only=True) as con:
        assert con.sql("SELECT DISTINCT run_id FROM steps").fetchall() == [("c",)]
        assert con.sql("SELECT count(*) FROM steps").fetchall() == [(12,)]


@pytest.mark.parametrize("case", ["inside-store", "exists", "folder", "no-parent", "no-runs",
                                  "where-drop", "unknown-run"])
def test_export_refuses_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                    case: str) -> None:
    root = tmp_path / "store"
    make_run(root, "a", parts=1)
    existing = tmp_path / "there.duckdb"
    existing.write_bytes(b"keep me")
    dest, extra = tmp_path / "x.duckdb", []
    if case == "inside-store":
        dest = root / "runs" / "x.duckdb"
    elif case == "exists":
        dest = existing
    elif case == "folder":
        dest = tmp_path
    elif case == "no-parent":
        dest = tmp_path / "no" / "x.duckdb"
    elif case == "no-runs":
        extra = ["--where", "ratio > 1000"]
    elif case == "where-drop":
        extra = ["--where", "true); DROP VIEW runs; SELECT (1"]
    else:
        extra = ["zzz"]
    before = files_digest(tmp_path)
    assert main(["export", "--duckdb", str(dest), *extra, "--store", str(root)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("imbtui: error:") and "Traceback" not in err
    assert files_digest(tmp_path) == before


# ==== the in-memory copies of the small tables, and parts of older versions ===========================

def epochs_cols(epoch: int) -> dict[str, object]:
    return {"epoch": [epoch] * C, "step": [epoch * 10] * C, "split": ["train"] * C,
            "class_id": np.arange(C), "n": [5] * C, "correct": [epoch] * C,
            "loss_sum": [1.0] * C, "p_true_sum": [0.5] * C, "feature_norm": [1.0] * C,
            "weight_norm": [1.0] * C, "bias": [0.0] * C}


def test_small_tables_follow_compaction_and_new_parts(tmp_path: Path) -> None:
    w = make_run(tmp_path, "a", parts=1, finish=None, compact_min_parts=2)
    for e in range(6):
        w.write("epochs", epochs_cols(e))
    st = Store(tmp_path)
    con = st.connect()
    total = "SELECT count(*), sum(correct) FROM epochs"
    assert con.sql(total).fetchall() == [(18, 3 * (0 + 1 + 2 + 3 + 4 + 5))]
    w.write("epochs", epochs_cols(6))  # a live run's new part...
    st.refresh(con)
    assert con.sql(total).fetchall() == [(21, 3 * 21)]
    w.finish("finished")  # ...then compaction replaces all seven parts with one
    st.refresh(con)
    assert con.sql(total).fetchall() == [(21, 3 * 21)]
    assert con.sql("SELECT count(DISTINCT _part) FROM _imbtui_epochs").fetchall() == [(1,)]


def test_small_table_part_damaged_inside_is_skipped_at_refresh(tmp_path: Path) -> None:
    w = make_run(tmp_path, "a", parts=1, finish=None)
    for e in range(3):
        w.write("epochs", epochs_cols(e))
    bad = tmp_path / "runs" / "a" / "epochs" / "part-000001.parquet"
    data = bytearray(bad.read_bytes())
    for i in range(4, len(data) // 3):
        data[i] ^= 0x5A
    bad.write_bytes(bytes(data))
    st = Store(tmp_path)
    assert st.sql("SELECT DISTINCT epoch FROM epochs ORDER BY epoch")["epoch"].to_list() == [0, 2]
    assert [w for w in st.warnings if str(bad) in w]


def test_a_part_from_an_older_version_reads_missing_columns_as_null(tmp_path: Path) -> None:
    make_run(tmp_path, "a", parts=2)
    old = pl.read_parquet(steps_part(tmp_path, "a", 0)).drop("grad_norm", "margin_sum")
    old.with_columns(pl.col("step") + 100).write_parquet(steps_part(tmp_path, "a", 5))
    st = Store(tmp_path)
    got = st.sql("SELECT step >= 100 AS old, count(*) AS n, count(grad_norm) AS g, "
                 "count(margin_sum) AS m, sum(n) AS s FROM steps GROUP BY ALL ORDER BY old")
    assert got.rows() == [(False, 12, 12, 12, 48), (True, 6, 0, 0, 24)]
    assert st.warnings == []
