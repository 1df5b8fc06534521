"""Hostile input to every command: bad numbers, unknown names, missing files, odd characters in
names and run ids, paths that escape (or write into) the store, destructive SQL.

Each invocation must exit 2 with exactly one line on stderr and no traceback, and leave the store's
files byte for byte as they were. The commands run in-process through `imbtui.cli.main` (the same
entry point as the `imbtui` script; a stray exception would fail the test with its traceback), and
a few run as real processes to check the same from the outside.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from imbtui.cli import main

REPO = Path(__file__).resolve().parents[2]

# {store}: a copy of a real store with one run; {run}: that run's id; {file}: a regular file;
# {missing}: a path that does not exist; {out}: a folder outside the store.
CASES: list[tuple[str, list[str]]] = [
    # -- train: bad numbers, unknown names, impossible requests, odd run ids
    ("train-ratio-word", ["train", "--ratio", "abc", "--store", "{store}"]),
    ("train-ratio-below-1", ["train", "--ratio", "0.5", "--store", "{store}"]),
    ("train-ratio-nan", ["train", "--ratio", "nan", "--store", "{store}"]),
    ("train-ratio-empties-a-class", ["train", "--ratio", "1e9", "--store", "{store}"]),
    ("train-epochs-zero", ["train", "--epochs", "0", "--store", "{store}"]),
    ("train-epochs-float", ["train", "--epochs", "1.5", "--store", "{store}"]),
    ("train-unknown-dataset", ["train", "--dataset", "imagenet-9000", "--store", "{store}"]),
    ("train-unknown-model", ["train", "--model", "gpt5", "--max-steps", "1", "--store",
                             "{store}"]),
    ("train-unknown-loss", ["train", "--loss", "nope", "--max-steps", "1", "--store", "{store}"]),
    ("train-batch-too-big", ["train", "--batch-size", "10000000", "--store", "{store}"]),
    ("train-negative-lr", ["train", "--lr", "-1", "--max-steps", "1", "--store", "{store}"]),
    ("train-step-fraction", ["train", "--profile", "step", "--minority-fraction", "2",
                             "--store", "{store}"]),
    ("train-unknown-profile", ["train", "--profile", "zipf", "--store", "{store}"]),
    ("train-unknown-device", ["train", "--device", "tpu", "--store", "{store}"]),
    ("train-run-id-escapes", ["train", "--run-id", "../../escape", "--store", "{store}"]),
    ("train-store-is-a-file", ["train", "--max-steps", "1", "--store", "{file}"]),
    # -- data / sweep
    ("data-unknown-dataset", ["data", "--dataset", "nope"]),
    ("data-ratio-empties-a-class", ["data", "--ratio", "1e9"]),
    ("sweep-ratio-word", ["sweep", "--ratio", "abc", "--dry-run", "--store", "{store}"]),
    ("sweep-unknown-loss", ["sweep", "--loss", "nope", "--dry-run", "--store", "{store}"]),
    ("sweep-zero-jobs", ["sweep", "--jobs", "0", "--dry-run", "--store", "{store}"]),
    # -- runs / show
    ("runs-store-is-a-file", ["runs", "--store", "{file}"]),
    ("runs-unknown-option", ["runs", "--colour", "--store", "{store}"]),
    ("show-unknown-run", ["show", "nope", "--store", "{store}"]),
    ("show-path-escape", ["show", "../../../etc/passwd", "--store", "{store}"]),
    ("show-empty-id", ["show", "", "--store", "{store}"]),
    ("show-glob", ["show", "*", "--store", "{store}"]),
    ("show-newline-and-escape", ["show", "a\nb\x1b[31m", "--store", "{store}"]),
    ("show-shell-chars", ["show", "$(rm -rf ~); `id`", "--store", "{store}"]),
    ("show-missing-store", ["show", "{run}", "--store", "{missing}"]),
    ("show-no-argument", ["show", "--store", "{store}"]),
    # -- sql: destructive statements, bad SQL, bad options
    ("sql-drop", ["sql", "DROP VIEW steps", "--store", "{store}"]),
    ("sql-delete", ["sql", "DELETE FROM steps", "--store", "{store}"]),
    ("sql-copy-into-store", ["sql", "COPY (SELECT 1) TO '{store}/runs/x.csv'", "--store",
                             "{store}"]),
    ("sql-explain-analyze-copy", ["sql", "EXPLAIN ANALYZE COPY (SELECT 1) TO '{store}/x.csv'",
                                  "--store", "{store}"]),
    ("sql-attach", ["sql", "ATTACH '{store}/db.duckdb' AS d", "--store", "{store}"]),
    ("sql-two-statements", ["sql", "SELECT 1; DROP VIEW runs", "--store", "{store}"]),
    ("sql-syntax", ["sql", "SELEC 1", "--store", "{store}"]),
    ("sql-unknown-table", ["sql", "SELECT * FROM nope", "--store", "{store}"]),
    ("sql-empty", ["sql", "", "--store", "{store}"]),
    ("sql-bad-format", ["sql", "SELECT 1", "--format", "xml", "--store", "{store}"]),
    # -- query / report
    ("query-unknown", ["query", "nope", "--store", "{store}"]),
    ("query-path-escape", ["query", "../../../etc/passwd", "--store", "{store}"]),
    ("query-bad-param", ["query", "run_summary", "--param", "x", "--store", "{store}"]),
    ("query-out-into-store", ["query", "run_summary", "--out", "{store}/runs/x.csv", "--store",
                              "{store}"]),
    ("query-parquet-to-terminal", ["query", "run_summary", "--format", "parquet", "--store",
                                   "{store}"]),
    ("report-unknown-run", ["report", "nope", "--store", "{store}"]),
    ("report-threshold", ["report", "--threshold", "2", "--store", "{store}"]),
    ("report-png-missing-folder", ["report", "--png", "{missing}/x.png", "--store", "{store}"]),
    # -- browse (refused before the app starts)
    ("browse-unknown-run", ["browse", "--run", "nope", "--store", "{store}"]),
    ("browse-store-is-a-file", ["browse", "--store", "{file}"]),
    # -- doctor / export
    ("doctor-missing-store", ["doctor", "--store", "{missing}"]),
    ("doctor-store-is-a-file", ["doctor", "--quarantine", "--store", "{file}"]),
    ("export-no-file", ["export", "--store", "{store}"]),
    ("export-into-store", ["export", "--duckdb", "{store}/runs/x.duckdb", "--store", "{store}"]),
    ("export-over-a-file", ["export", "--duckdb", "{file}", "--store", "{store}"]),
    ("export-unknown-run", ["export", "--duckdb", "{out}/x.duckdb", "nope", "--store",
                            "{store}"]),
    ("export-where-injection", ["export", "--duckdb", "{out}/x.duckdb", "--where",
                                "true; DROP VIEW runs", "--store", "{store}"]),
    ("export-missing-folder", ["export", "--duckdb", "{missing}/x.duckdb", "--store", "{store}"]),
    # -- the program itself
    ("unknown-command", ["nosuchcommand"]),
    ("unknown-global-option", ["--frobnicate", "runs"]),
]


def digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def places(trained_store: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    base = tmp_path_factory.mktemp("hostile")
    store = base / "store"
    shutil.copytree(trained_store, store)
    (base / "a-file").write_text("not a store\n")
    (base / "out").mkdir()
    (run,) = [p.name for p in (store / "runs").iterdir()]
    return {"store": str(store), "run": run, "file": str(base / "a-file"),
            "missing": str(base / "missing"), "out": str(base / "out"), "base": str(base)}


def fill(args: list[str], places: dict[str, str]) -> list[str]:
    return [a.format(**places) if "{" in a and "}" in a and "(" not in a else a for a in args]


def test_the_table_covers_every_command() -> None:
    import typer

    from imbtui.cli import app

    commands = set(typer.main.get_command(app).commands)
    covered = {args[0] for _, args in CASES}
    assert commands <= covered, f"no hostile case for {sorted(commands - covered)}"
    assert len(CASES) >= 30


@pytest.mark.parametrize("args", [c[1] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_invocation_is_one_line_and_changes_nothing(
        args: list[str], places: dict[str, str], monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    import imbtui.tui.app

    def no_app(self, *a, **k):
        raise AssertionError("the terminal app started")

    monkeypatch.setattr(imbtui.tui.app.ImbtuiApp, "run", no_app)
    monkeypatch.setenv("IMBTUI_STORE", places["store"])
    monkeypatch.chdir(places["base"])
    store, base = Path(places["store"]), Path(places["base"])
    before, around = digest(store), digest(base)
    code = main(fill(args, places))
    captured = capsys.readouterr()
    assert code == 2, captured.err
    assert "Traceback" not in captured.err + captured.out
    lines = captured.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("imbtui: error:"), captured.err
    assert digest(store) == before  # the store, byte for byte
    assert digest(base) == around  # and nothing written beside it


@pytest.mark.parametrize("name", ["show-path-escape", "sql-explain-analyze-copy",
                                  "export-into-store", "unknown-command"])
def test_as_a_real_process(name: str, places: dict[str, str]) -> None:
    """The same through `python -m imbtui`: what a user's terminal shows."""
    (args,) = [a for n, a in CASES if n == name]
    store = Path(places["store"])
    before = digest(store)
    proc = subprocess.run([sys.executable, "-m", "imbtui", *fill(args, places)], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert len(proc.stderr.splitlines()) == 1 and "Traceback" not in proc.stderr
    assert digest(store) == before
