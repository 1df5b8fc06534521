"""One question, one number: every surface shows the same group accuracies and gaps.

The store's semantic layer (imbtui/store/semantic.py) defines a group's accuracy once (the mean of
its classes' accuracies) and a run's final results once (its last evaluated epoch). Here the same
runs are read through every surface that shows those numbers — `imbtui runs --json`, `show --json`,
`report --format json`, the named queries, the app's data layer, the Python API and the trainer's
own closing numbers — and each must equal a plain Python computation from the stored epoch rows.

The runs: the shared 2-epoch ratio-100 run, whose minority is far from train accuracy 1.0 (where
pooling the group's samples and averaging its classes give different numbers), and the bundled
sample runs.
"""

from __future__ import annotations

import json
import shutil
from collections import defaultdict
from pathlib import Path

import polars as pl
import pytest

import imbtui
from imbtui.store import RunWriter, Store
from imbtui.tui.data import StoreSession, class_finals, group_curves, runs_table
from tests.conftest import REPO, imbtui as cli

GROUPS = ("majority", "minority")
# Every value below is the same float64 DuckDB result read through another path, or a mean of at
# most a few hundred float64 ratios of integers: 1e-9 is far above their round-off.
TOL = 1e-9


def by_hand(root: Path) -> dict[str, dict[str, float]]:
    """run_id -> {train_majority, ..., gap_minority} from the stored epoch rows, in plain Python:
    each class's correct / n at the run's last epoch, averaged over the group's classes."""
    out: dict[str, dict[str, float]] = {}
    for run_dir in sorted((root / "runs").iterdir()):
        epochs = pl.read_parquet(str(run_dir / "epochs" / "*.parquet")).to_dicts()
        classes = pl.read_parquet(str(run_dir / "classes" / "*.parquet")).to_dicts()
        grp = {c["class_id"]: c["grp"] for c in classes}
        last = max(r["epoch"] for r in epochs)
        accs: dict[tuple[str, str], list[float]] = defaultdict(list)
        for r in epochs:
            if r["epoch"] == last and r["n"] > 0:
                for g in (grp[r["class_id"]], "balanced"):
                    accs[r["split"], g].append(r["correct"] / r["n"])
        row = {f"{split}_{g}": sum(v) / len(v) for (split, g), v in accs.items()}
        for g in (*GROUPS, "balanced"):
            row[f"gap_{g}"] = row[f"train_{g}"] - row[f"test_{g}"]
        out[run_dir.name] = row
    return out


@pytest.fixture(scope="module")
def store(trained_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The 2-epoch ratio-100 run beside the bundled sample runs, in one store."""
    root = tmp_path_factory.mktemp("one-number")
    shutil.copytree(trained_store, root, dirs_exist_ok=True)
    shutil.copytree(REPO / "sample_runs" / "runs", root / "runs", dirs_exist_ok=True)
    return root


@pytest.fixture(scope="module")
def want(store: Path) -> dict[str, dict[str, float]]:
    got = by_hand(store)
    # the case this test exists for: a minority far from fitting its training set
    assert min(r["train_minority"] for r in got.values()) < 0.9
    return got


def close(got: float | None, expected: float) -> bool:
    return got is not None and abs(got - expected) <= TOL


def test_runs_json(store: Path, want) -> None:
    rows = json.loads(cli("runs", "--json", "--store", str(store)).stdout)
    assert {r["run_id"] for r in rows} == set(want)
    for r in rows:
        for key, value in want[r["run_id"]].items():
            assert close(r[key], value), (r["run_id"], key)


def test_show_json(store: Path, want) -> None:
    for run_id, w in want.items():
        shown = json.loads(cli("show", run_id, "--json", "--store", str(store)).stdout)
        groups = {g["group"]: g for g in shown["groups"]}
        for g in GROUPS:
            assert close(groups[g]["train acc"], w[f"train_{g}"])
            assert close(groups[g]["test acc"], w[f"test_{g}"])
            assert close(groups[g]["gap"], w[f"gap_{g}"])


def test_report_json(store: Path, want) -> None:
    rows = json.loads(cli("report", "--format", "json", "--store", str(store)).stdout)
    assert {r["run_id"] for r in rows} == set(want)
    for r in rows:
        for g in GROUPS:
            assert close(r[f"gap_{g}"], want[r["run_id"]][f"gap_{g}"])


def test_named_queries(store: Path, want) -> None:
    api = imbtui.open_store(store)
    for run_id, w in want.items():
        (summary,) = api.query("run_summary").filter(pl.col("run_id") == run_id).to_dicts()
        for key, value in w.items():
            assert close(summary[key], value), key
        (sweep,) = api.query("ratio_sweep", runs=[run_id]).to_dicts()
        assert close(sweep["test_majority"], w["test_majority"])
        assert close(sweep["test_minority"], w["test_minority"])
        assert close(sweep["train_minority"], w["train_minority"])
        assert close(sweep["minority_gap"], w["gap_minority"])
        (method,) = api.query("method_comparison", runs=[run_id]).to_dicts()
        for g in (*GROUPS, "balanced"):
            assert close(method[f"test_{g}"], w[f"test_{g}"])
        gap = api.query("generalisation_gap", runs=[run_id]).filter(pl.col("class_id").is_null())
        for r in gap.to_dicts():
            assert close(r["train_acc"], w[f"train_{r['grp']}"])
            assert close(r["gap"], w[f"gap_{r['grp']}"])
        curves = api.query("group_curves", runs=[run_id])
        last = curves.filter(pl.col("epoch") == curves["epoch"].max())
        for r in last.to_dicts():
            g = "balanced" if r["grp"] == "all" else r["grp"]
            assert close(r["acc"], w[f"{r['split']}_{g}"])


def test_python_api(store: Path, want) -> None:
    api = imbtui.open_store(store)
    for r in api.runs().to_dicts():
        for key, value in want[r["run_id"]].items():
            assert close(r[key], value), key
    for r in api.report().to_dicts():
        for g in GROUPS:
            assert close(r[f"gap_{g}"], want[r["run_id"]][f"gap_{g}"])


def test_app_data_layer(store: Path, want) -> None:
    session = StoreSession(store)
    session.refresh()
    cur = session.cursor()
    for r in runs_table(cur).to_dicts():
        for g in (*GROUPS, "balanced"):
            assert close(r[f"test_{g}"], want[r["run_id"]][f"test_{g}"])
    for run_id, w in want.items():
        curves = group_curves(cur, run_id, 200, "epoch")
        for g in GROUPS:  # the run screen's last point of each group's curve
            assert close(curves["test_acc"][g][-1], w[f"test_{g}"])
            assert close(curves["train_acc"][g][-1], w[f"train_{g}"])
        finals = class_finals(cur, run_id)
        for g in GROUPS:
            mine = finals.filter(pl.col("grp") == g)
            assert close(float(mine["gap"].mean()), w[f"gap_{g}"])


def test_the_trainers_own_closing_numbers(tmp_path: Path) -> None:
    """The trainer's per-epoch summary (its progress bar) uses the same definition as the store."""
    from trainer.loop import TrainConfig, train

    result = train(TrainConfig(ratio=100, epochs=1, max_steps=20, device="cpu",
                               dynamics="minimal"), RunWriter(tmp_path))
    (row,) = Store(tmp_path).sql("SELECT * FROM final_results").to_dicts()
    (hand,) = by_hand(tmp_path).values()
    for g in (*GROUPS, "balanced"):
        for split in ("train", "test"):
            key = f"{split}_{g}"
            assert close(result.final[key], hand[key]) and close(row[key], hand[key]), key


def test_the_live_numbers_are_the_views_numbers() -> None:
    """The progress display's accuracies come from the views' own SQL over rows in memory: a
    class with no samples is left out of its group's mean, as in group_results."""
    import numpy as np

    from imbtui.store.semantic import live_group_accuracy

    rows = {"train": {"n": np.array([100, 50, 20, 0]), "correct": np.array([90, 40, 5, 0])},
            "test": {"n": np.array([10, 10, 10, 10]), "correct": np.array([9, 8, 3, 1])}}
    got = live_group_accuracy(rows, ["majority", "majority", "minority", "minority"])
    want = {"train_majority": (0.9 + 0.8) / 2, "train_minority": 0.25,
            "train_balanced": (0.9 + 0.8 + 0.25) / 3, "test_majority": 0.85,
            "test_minority": 0.2, "test_balanced": (0.9 + 0.8 + 0.3 + 0.1) / 4}
    assert got.keys() == want.keys()
    for key, value in want.items():
        assert close(got[key], value), key
