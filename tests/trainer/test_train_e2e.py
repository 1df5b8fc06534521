"""End to end: `imbtui train` into a store, then check what it recorded with `imbtui sql`."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REPO, imbtui

N_MAX, C, BATCH = 4000, 10, 128  # MNIST-1D as imbtui ships it: 4,000 training samples per class


def expected_counts(ratio: float) -> list[int]:
    # DESIGN.md's exponential profile, written out again independently of trainer.data
    return [int(N_MAX * ratio ** (-i / (C - 1)) + 1e-9) for i in range(C)]


def sql(store: Path, query: str) -> list[dict]:
    return json.loads(imbtui("sql", query, "--format", "json", "--store", str(store)).stdout)


def test_step_rows_cover_every_class_of_every_step(trained_store: Path) -> None:
    n_train = sum(expected_counts(100))
    steps = 2 * (n_train // BATCH)
    (run,) = sql(trained_store, "SELECT run_id, status, step_done, epoch_done FROM runs")
    assert run["status"] == "finished" and run["epoch_done"] == 2 and run["step_done"] == steps
    (agg,) = sql(trained_store, "SELECT count(*) AS rows, count(DISTINCT step) AS steps, "
                                "min(step) AS lo, max(step) AS hi FROM steps")
    assert agg == {"rows": steps * C, "steps": steps, "lo": 0, "hi": steps - 1}


def test_per_step_n_sums_to_the_batch_size(trained_store: Path) -> None:
    rows = sql(trained_store, "SELECT step, sum(n) AS n, sum(pred_count) AS preds, "
                              "count(*) AS classes FROM steps GROUP BY step")
    assert {(r["n"], r["preds"], r["classes"]) for r in rows} == {(BATCH, BATCH, C)}


def test_epoch_rows_count_the_long_tailed_classes(trained_store: Path) -> None:
    rows = sql(trained_store, "SELECT epoch, split, class_id, n FROM epochs "
                              "ORDER BY epoch, split, class_id")
    want = expected_counts(100)
    assert sorted({r["epoch"] for r in rows}) == [0, 1, 2]
    for epoch in (0, 1, 2):
        train = [r["n"] for r in rows if r["epoch"] == epoch and r["split"] == "train"]
        test = [r["n"] for r in rows if r["epoch"] == epoch and r["split"] == "test"]
        assert train == want
        assert test == [500] * C  # the test split stays balanced
    classes = sql(trained_store, "SELECT class_id, train_count, grp FROM classes ORDER BY class_id")
    assert [c["train_count"] for c in classes] == want
    assert [c["grp"] for c in classes] == ["majority"] * 5 + ["minority"] * 5


def test_accuracy_columns_are_consistent(trained_store: Path) -> None:
    # correct <= n everywhere, and p_true / margin stay in their ranges
    (bad,) = sql(trained_store, "SELECT count(*) FILTER (WHERE correct > n OR p_true_sum > n "
                                "OR p_true_sum < 0) AS bad FROM steps")
    assert bad["bad"] == 0


def test_same_seed_gives_identical_records(tmp_path: Path) -> None:
    for name in ("a", "b"):
        imbtui("train", "--ratio", "10", "--epochs", "1", "--max-steps", "25", "--seed", "3",
               "--name", name, "--store", str(tmp_path), "-q")
    cols = "step, class_id, n, loss_sum, correct, p_true_sum, margin_sum, pred_count, grad_norm, lr"
    q = (f"SELECT {cols} FROM steps WHERE run_id = (SELECT run_id FROM runs WHERE name = '{{}}') "
         f"ORDER BY step, class_id")
    a, b = sql(tmp_path, q.format("a")), sql(tmp_path, q.format("b"))
    assert len(a) == 25 * C and a == b
    qe = ("SELECT epoch, split, class_id, n, correct, loss_sum FROM epochs JOIN runs USING (run_id) "
          "WHERE name = '{}' ORDER BY ALL")
    assert sql(tmp_path, qe.format("a")) == sql(tmp_path, qe.format("b"))


READER = """
import sys, time
from imbtui.store import Store
st, errors, reads = Store(sys.argv[1]), 0, 0
deadline = time.time() + float(sys.argv[2])
while time.time() < deadline:
    try:
        st.sql("SELECT run_id, count(*), sum(n) FROM steps GROUP BY run_id")
        st.sql("SELECT * FROM runs")
        reads += 1
    except Exception as exc:
        errors += 1
        print(repr(exc), file=sys.stderr)
    time.sleep(0.05)
print(reads, errors)
"""


def test_two_trainers_and_a_reader_share_one_store(tmp_path: Path) -> None:
    reader = subprocess.Popen([sys.executable, "-c", READER, str(tmp_path), "25"], cwd=REPO,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    trainers = [subprocess.Popen(
        [sys.executable, "-m", "imbtui", "train", "--ratio", r, "--epochs", "2", "--name", r,
         "--store", str(tmp_path), "-q"], cwd=REPO, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True) for r in ("10", "100")]
    for t in trainers:
        _, err = t.communicate(timeout=900)
        assert t.returncode == 0, err
    out, err = reader.communicate(timeout=60)
    reads, errors = map(int, out.split())
    assert errors == 0, err
    assert reads > 10
    for ratio in (10, 100):
        steps = 2 * (sum(expected_counts(ratio)) // BATCH)
        (row,) = sql(tmp_path, f"SELECT count(*) AS rows, count(DISTINCT (step, class_id)) AS "
                               f"uniq FROM steps JOIN runs USING (run_id) WHERE name = '{ratio}'")
        assert row == {"rows": steps * C, "uniq": steps * C}


@pytest.mark.slow
def test_default_run_shows_the_studys_effect(tmp_path: Path) -> None:
    """`imbtui train --ratio 100` with every default: minority learned late, then memorised."""
    t0 = time.perf_counter()
    proc = imbtui("train", "--ratio", "100", "--store", str(tmp_path))
    wall = time.perf_counter() - t0
    assert "majority vs minority" in proc.stdout
    acc = {(r["epoch"], r["split"], r["grp"]): r["acc"] for r in sql(
        tmp_path, "SELECT epoch, split, grp, sum(correct) / sum(n) AS acc FROM epochs "
                  "JOIN classes USING (run_id, class_id) GROUP BY ALL")}
    last = max(e for e, _, _ in acc)
    assert last == 30
    # (1) after the first epoch the minority is far behind on its own training samples
    assert acc[(1, "train", "minority")] < acc[(1, "train", "majority")] - 0.4
    # (2) at the end both are fitted, but the minority's train-test gap is several times larger
    gap_min = acc[(last, "train", "minority")] - acc[(last, "test", "minority")]
    gap_maj = acc[(last, "train", "majority")] - acc[(last, "test", "majority")]
    assert acc[(last, "train", "minority")] > 0.98
    assert gap_min > 0.1 and gap_min > 5 * gap_maj
    print(f"default run: {wall:.1f} s wall")  # the 30 s target is checked by bench/overhead.py
