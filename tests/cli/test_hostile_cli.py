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
    # -- an empty store path would mean the working folder
    ("train-store-empty", ["train", "--max-steps", "1", "--store", ""]),
    ("runs-store-empty", ["runs", "--store", ""]),
    ("sweep-store-empty", ["sweep", "--max-steps", "1", "--dry-run", "--store", ""]),
    ("study-store-empty", ["study", "--dry-run", "--store", ""]),
    # -- whole numbers past any sane run (and past int64)
    ("train-epochs-huge", ["train", "--epochs", "99999999999999999999", "--store", "{store}"]),
    ("train-epochs-above-max", ["train", "--epochs", "100001", "--store", "{store}"]),
    ("train-batch-size-huge", ["train", "--batch-size", str(2**63), "--store", "{store}"]),
    ("train-max-steps-huge", ["train", "--max-steps", str(10**13), "--store", "{store}"]),
    ("train-seed-huge", ["train", "--seed", str(2**64), "--store", "{store}"]),
    ("train-seed-negative", ["train", "--seed", "-1", "--max-steps", "1", "--store", "{store}"]),
    ("train-subset-seed-huge", ["train", "--subset-seed", str(2**32), "--store", "{store}"]),
    ("train-drw-huge", ["train", "--drw", str(10**20), "--store", "{store}"]),
    ("train-stage2-epochs-huge", ["train", "--stage2", "crt", "--stage2-epochs", str(10**20),
                                  "--store", "{store}"]),
    ("train-probe-every-huge", ["train", "--probe-every", str(10**20), "--store", "{store}"]),
    ("train-conflict-every-huge", ["train", "--conflict-every", str(10**20), "--store",
                                   "{store}"]),
    ("train-sharpness-every-huge", ["train", "--sharpness-every", str(10**20), "--store",
                                    "{store}"]),
    ("train-sharpness-samples-huge", ["train", "--sharpness-samples", str(10**20), "--store",
                                      "{store}"]),
    ("sweep-epochs-huge", ["sweep", "--epochs", str(10**20), "--dry-run", "--store", "{store}"]),
    ("sweep-seed-list-huge", ["sweep", "--seed", "0", str(10**20), "--dry-run", "--store",
                              "{store}"]),
    ("sweep-jobs-huge", ["sweep", "--jobs", str(10**20), "--dry-run", "--store", "{store}"]),
    ("sweep-gpus-huge", ["sweep", "--emit", "slurm", "--gpus", str(10**20), "--store",
                         "{store}"]),
    ("report-early-huge", ["report", "--early", str(10**20), "--store", "{store}"]),
    ("study-seeds-huge", ["study", "--seeds", "0", str(2**32), "--dry-run", "--store",
                          "{store}"]),
    ("study-jobs-huge", ["study", "--jobs", str(10**20), "--dry-run", "--store", "{store}"]),
    ("study-early-huge", ["study", "--early", str(10**20), "--dry-run", "--store", "{store}"]),
    # -- milestones: strictly increasing, each in 1..epochs-1
    ("train-milestones-unordered", ["train", "--schedule", "step", "--epochs", "6",
                                    "--milestones", "5,3", "--store", "{store}"]),
    ("train-milestones-past-the-end", ["train", "--schedule", "step", "--epochs", "6",
                                       "--milestones", "5,99", "--store", "{store}"]),
    ("train-milestones-at-the-end", ["train", "--schedule", "step", "--epochs", "6",
                                     "--milestones", "6", "--store", "{store}"]),
    ("train-milestones-zero", ["train", "--schedule", "step", "--epochs", "6", "--milestones",
                               "0,3", "--store", "{store}"]),
    ("train-milestones-repeated", ["train", "--schedule", "step", "--epochs", "6",
                                   "--milestones", "3,3", "--store", "{store}"]),
    ("train-milestones-huge", ["train", "--schedule", "step", "--epochs", "6", "--milestones",
                               "99999999999999999999", "--store", "{store}"]),
    ("sweep-milestones-unordered", ["sweep", "--schedule", "step", "--epochs", "6",
                                    "--milestones", "5,3", "--dry-run", "--store", "{store}"]),
    # -- run names: printable text only (tables and one-line messages show them)
    ("train-name-newline", ["train", "--name", "a\nb", "--max-steps", "1", "--store",
                            "{store}"]),
    ("train-name-escape", ["train", "--name", "a\x1b[31mred", "--max-steps", "1", "--store",
                           "{store}"]),
    ("train-name-tab", ["train", "--name", "a\tb", "--max-steps", "1", "--store", "{store}"]),
    ("train-name-delete", ["train", "--name", "a\x7f", "--max-steps", "1", "--store",
                           "{store}"]),
    ("train-name-empty", ["train", "--name", "", "--max-steps", "1", "--store", "{store}"]),
    ("train-name-blank", ["train", "--name", "   ", "--max-steps", "1", "--store", "{store}"]),
    ("train-name-too-long", ["train", "--name", "x" * 201, "--max-steps", "1", "--store",
                             "{store}"]),
    ("sweep-name-newline", ["sweep", "--name", "a\nb", "--dry-run", "--store", "{store}"]),
    # -- a store that does not exist, for every command that reads one
    ("runs-missing-store", ["runs", "--store", "{missing}"]),
    ("sql-missing-store", ["sql", "SELECT 1", "--store", "{missing}"]),
    ("query-missing-store", ["query", "run_summary", "--store", "{missing}"]),
    ("report-missing-store", ["report", "--store", "{missing}"]),
    ("browse-missing-store", ["browse", "--store", "{missing}"]),
    ("export-missing-store", ["export", "--duckdb", "{out}/x.duckdb", "--store", "{missing}"]),
    # -- a dataset of the user's own that is not there or not what it says
    ("train-npz-missing", ["train", "--dataset", "npz:{missing}/x.npz", "--store", "{store}"]),
    ("train-npz-no-path", ["train", "--dataset", "npz:", "--store", "{store}"]),
    ("train-npz-not-npz", ["train", "--dataset", "npz:{file}", "--store", "{store}"]),
    ("train-folder-is-a-file", ["train", "--dataset", "folder:{file}", "--store", "{store}"]),
    ("train-folder-missing", ["train", "--dataset", "folder:{missing}", "--store", "{store}"]),
    ("train-folder-no-classes", ["train", "--dataset", "folder:{out}", "--store", "{store}"]),
    ("data-npz-missing", ["data", "--dataset", "npz:{missing}/x.npz"]),
    ("sweep-npz-missing", ["sweep", "--dataset", "npz:{missing}/x.npz", "--dry-run", "--store",
                           "{store}"]),
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


# ==== the edges above, from the inside ============================================================

def test_every_whole_number_option_has_a_ceiling_that_fits_int64() -> None:
    from trainer.options import OPTIONS

    for o in OPTIONS:
        if o.kind == "int":
            assert o.maximum is not None and o.maximum < 2**63, o.name
            if o.name in ("epochs", "drw", "stage2_epochs", "sharpness_every"):
                assert o.maximum < 2**31, o.name  # the store's epochs columns are int32


def test_the_ceilings_hold_for_configs_made_in_python() -> None:
    from trainer.config import TrainConfig, check_config, resolve_config
    from trainer.data import DataError

    with pytest.raises(DataError, match="--epochs 10000000000 is above its maximum 100,000"):
        check_config(resolve_config(TrainConfig(epochs=10**10)), image=False)


def test_milestones_that_mean_something_pass_and_the_recipe_never_trips_the_check() -> None:
    from trainer.config import TrainConfig, resolve_config

    assert resolve_config(TrainConfig(schedule="step", epochs=6, milestones=(2, 5))
                          ).milestones == (2, 5)
    # CIFAR's scaled milestones: one on or after the last epoch never acts and is left out
    assert resolve_config(TrainConfig(dataset="cifar10", epochs=1)).milestones == ()
    assert resolve_config(TrainConfig(dataset="cifar10", epochs=20)).milestones == (16, 18)


def test_a_name_may_hold_slashes_and_any_printable_text() -> None:
    from trainer.config import check_name

    for name in ("ablation/ce", "ratio 100, seed 0", "résumé-λ-β", "a" * 200):
        check_name(name)


def test_browse_without_store_still_falls_back_to_the_sample_runs(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Only a store named with --store must exist; the default one missing opens the bundled
    sample runs (docs/app.md)."""
    import imbtui.tui.app

    opened = []
    monkeypatch.setattr(imbtui.tui.app.ImbtuiApp, "run", lambda self, *a, **k: opened.append(
        self.session.sample))
    monkeypatch.delenv("IMBTUI_STORE", raising=False)
    monkeypatch.chdir(tmp_path)
    assert main(["browse"]) == 0 and opened == [True]


def test_read_only_sql_still_reads_files_the_user_can_read(places: dict[str, str],
                                                           capsys: pytest.CaptureFixture[str]
                                                           ) -> None:
    """Documented behaviour (docs/analyses.md): DuckDB's external access stays on, since the views
    read the store's own files, so read_text and read_csv open any file the user may open."""
    assert main(["sql", f"SELECT content FROM read_text('{places['file']}')", "--format", "csv",
                 "--store", places["store"]]) == 0
    assert "not a store" in capsys.readouterr().out
    docs = (REPO / "docs" / "analyses.md").read_text()
    assert "enable_external_access" in docs and "read_text" in docs
