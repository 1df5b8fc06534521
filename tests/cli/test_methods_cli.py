"""Every method trains end to end from the CLI with the full dynamics, carries its method label,
shows in `method_comparison` and in the app's runs table; bad combinations are refused before
anything is written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from imbtui.cli import main
from tests.conftest import imbtui

# method label -> the `imbtui train` options that make it
METHODS: dict[str, list[str]] = {
    "ce": [],
    "ce+ls": ["--smoothing", "0.1"],
    "ce+las": ["--smoothing", "0.3", "--smoothing-tail", "0"],
    "ce+mixup": ["--mixup", "1"],
    "balanced-softmax+mixup": ["--loss", "balanced-softmax", "--mixup", "0.5"],
    "ce-drw+mixup": ["--mixup", "1", "--drw", "0"],
    "ce+sam": ["--optimizer", "sam"],
    "ce+imbsam": ["--optimizer", "imbsam"],
    "ce+maxnorm": ["--weight-decay", "5e-3", "--max-norm", "0.1"],
    "ce+maxnorm+cb-finetune": ["--weight-decay", "5e-3", "--stage2", "cb-finetune",
                               "--max-norm", "0.1", "--stage2-weight-decay", "0.1",
                               "--stage2-lr", "0.01"],
    "ce+crt": ["--stage2", "crt"],
    "ce+lws": ["--stage2", "lws"],
    "ce+tau-norm": ["--stage2", "tau-norm"],
}
BATCH = 128


def sql(store: Path, query: str) -> list[dict]:
    return json.loads(imbtui("sql", query, "--format", "json", "--store", str(store)).stdout)


@pytest.fixture(scope="module")
def methods_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every method trained by the CLI's own entry point, in this process (the CLI's option
    parsing and checks as a user's call makes them, without a fresh interpreter per method)."""
    root = tmp_path_factory.mktemp("methods")
    for label, options in METHODS.items():
        code = main(["train", "--ratio", "100", "--epochs", "1", "--stage2-epochs", "1",
                     "--probe-every", "20", "--store", str(root), "-q", "--name", label,
                     *options])
        assert code == 0, f"imbtui train {label}: exit {code}"
    return root


def test_every_method_finishes_under_its_label(methods_store: Path) -> None:
    rows = sql(methods_store, "SELECT name, method, status FROM runs")
    assert {r["name"]: (r["method"], r["status"]) for r in rows} == {
        label: (label, "finished") for label in METHODS}


def test_every_method_records_the_full_dynamics(methods_store: Path) -> None:
    spe = sql(methods_store, "SELECT DISTINCT steps_per_epoch AS s FROM runs")[0]["s"]
    rows = sql(methods_store, """
        SELECT r.name,
               (SELECT count(DISTINCT step) FROM steps s WHERE s.run_id = r.run_id) AS steps,
               (SELECT count(*) FROM probes p WHERE p.run_id = r.run_id) AS probes,
               (SELECT count(*) FROM samples x WHERE x.run_id = r.run_id) AS samples,
               (SELECT count(*) FROM geometry_summary g WHERE g.run_id = r.run_id) AS geometry,
               (SELECT max(epoch) FROM epochs e WHERE e.run_id = r.run_id) AS epochs
        FROM runs r""")
    for r in rows:
        stage2 = r["name"].endswith(("crt", "lws", "cb-finetune"))
        trained = 2 if stage2 else 1
        assert r["steps"] == trained * spe, r
        assert r["samples"] == trained * spe * BATCH, r  # one presentation per sample and step
        assert r["probes"] == 2 * len(range(0, trained * spe, 20)), r  # both groups per probe
        assert r["geometry"] > 0, r
        assert r["epochs"] == (2 if r["name"].endswith(("crt", "lws", "cb-finetune", "tau-norm"))
                               else 1), r


def test_mixed_batches_count_each_sample_once_under_its_primary_label(methods_store: Path
                                                                      ) -> None:
    rows = sql(methods_store, """
        SELECT s.step, sum(s.n) AS n FROM steps s JOIN runs r USING (run_id)
        WHERE r.name = 'ce+mixup' GROUP BY s.step""")
    assert {r["n"] for r in rows} == {BATCH}


def test_maxnorm_bounds_the_classifier_rows(methods_store: Path) -> None:
    # the first evaluation's row norms set nothing: the bound comes from the rows when the stage
    # begins; after it every recorded row norm stays within the largest at the start
    rows = sql(methods_store, """
        SELECT e.epoch, max(e.weight_norm) AS top, min(e.weight_norm) AS low
        FROM epochs e JOIN runs r USING (run_id)
        WHERE r.name = 'ce+maxnorm' AND e.split = 'train' GROUP BY e.epoch ORDER BY e.epoch""")
    start, end = rows[0], rows[-1]
    bound = start["low"] + 0.1 * (start["top"] - start["low"])
    assert end["top"] <= bound * (1 + 1e-5)


def test_method_comparison_has_a_row_per_method(methods_store: Path) -> None:
    out = json.loads(imbtui("query", "method_comparison", "--store", str(methods_store),
                            "-f", "json").stdout)
    assert sorted(r["method"] for r in out) == sorted(METHODS)
    base = next(r for r in out if r["method"] == "ce")
    for r in out:
        assert r["seeds"] == 1
        assert r["d_balanced"] == pytest.approx(r["test_balanced"] - base["test_balanced"],
                                                abs=1e-12)


def test_the_app_lists_each_method(methods_store: Path) -> None:
    from imbtui.tui.data import StoreSession
    from imbtui.tui.widgets.runs_table import method

    session = StoreSession(methods_store)
    session.refresh()
    cur = session.cursor()
    rows = cur.sql("SELECT * FROM runs").pl().to_dicts()
    assert sorted(method(r) for r in rows) == sorted(METHODS)


@pytest.mark.parametrize("options, words", [
    (["--loss", "ldam", "--max-norm", "0.1"], "cosine classifier"),
    (["--optimizer", "imbsam", "--mixup", "1"], "two classes"),
    (["--loss", "focal", "--smoothing", "0.1"], "focal"),
    (["--stage2", "crt", "--epochs", "2", "--max-steps", "5"], "first stage"),
    (["--stage2", "tau-norm", "--loss", "ldam"], "norm 1"),
])
def test_bad_combinations_are_refused_before_anything_is_written(tmp_path: Path, options,
                                                                 words) -> None:
    store = tmp_path / "store"
    proc = imbtui("train", "--store", str(store), *options, check=False)
    assert proc.returncode == 2
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and words in lines[0] and "Traceback" not in proc.stderr
    assert not (store / "runs").exists() or not any((store / "runs").iterdir())


def test_the_run_screen_reads_post_hoc_adjustment(methods_store: Path) -> None:
    from imbtui.store import Store
    from imbtui.tui.data.curves import load_run

    con = Store(methods_store).connect()
    run_id = con.execute("SELECT run_id FROM runs WHERE name = 'ce'").fetchall()[0][0]
    (row,) = load_run(con.cursor(), run_id, 40, "epoch").posthoc
    # by hand from the stored counts: the last epoch's test classes, adjusted with tau = 1
    per_class = con.execute("""
        SELECT p.correct / p.n, c.grp FROM posthoc p
        JOIN classes c ON c.run_id = p.run_id AND c.class_id = p.class_id
        WHERE p.run_id = ? AND p.split = 'test' AND p.tau = 1
          AND p.epoch = (SELECT max(epoch) FROM posthoc WHERE run_id = ?)""",
                            [run_id, run_id]).fetchall()
    accs = [a for a, _ in per_class]
    minority = [a for a, g in per_class if g == "minority"]
    assert row["tau"] == 1.0
    assert row["adjusted_balanced"] == pytest.approx(sum(accs) / len(accs), abs=1e-12)
    assert row["adjusted_minority"] == pytest.approx(sum(minority) / len(minority), abs=1e-12)
