"""Snapshots (pytest-textual-snapshot) of every screen at fixed terminal sizes.

The store is built row by row with RunWriter from closed-form curves and fixed run ids and
timestamps, so each snapshot is the same on every machine; the trainer's own output is exercised
by the pilot tests in test_tui.py.
"""

from __future__ import annotations

import json
import math
import re
import time
from pathlib import Path

import numpy as np
import pytest
from textual.pilot import Pilot

from imbtui.store import RunWriter
from imbtui.store.layout import atomic_write_json
from imbtui.tui.app import make_app
from imbtui.tui.screenshots import settle

N_CLASSES, STEPS, EPOCHS, BATCH = 10, 400, 4, 128
STARTED = "2026-01-15T09:30:00.000+00:00"


def counts(ratio: float, n_max: int = 1000, n_classes: int = N_CLASSES) -> list[int]:
    return [int(n_max * ratio ** (-i / (n_classes - 1))) for i in range(n_classes)]


def accuracy(t: np.ndarray, size: int, ratio: float) -> np.ndarray:
    """Large classes are learned first; the smallest ones late and only part of the way."""
    tau = 0.05 + 0.6 * (1 - size / 1000) * (ratio > 1)
    top = 1.0 - 0.5 * (1 - size / 1000) * (ratio > 1)
    return 0.1 + (top - 0.1) * (1 - np.exp(-t / max(tau, 1e-3) / 4))


def write_run(root: Path, run_id: str, name: str, ratio: float, loss: str, status: str,
              minute: int, n_classes: int = N_CLASSES, full: bool = False) -> None:
    """One run; `full` adds what `--dynamics full` records beyond the per-class rows: the
    classifier-gradient split, feature geometry and per-sample presentations."""
    n = counts(ratio, n_classes=n_classes)
    w = RunWriter(root, run_id=run_id, heartbeat_s=3600)
    config = {"dataset": "mnist1d", "profile": "exp", "ratio": ratio, "model": "cnn1d",
              "loss": loss, "sampler": "none", "epochs": EPOCHS, "batch_size": BATCH, "lr": 0.05,
              "seed": 0, "n_train": sum(n), "n_classes": n_classes}
    w.start({"name": name, "config": config, "device": "cpu", "code_version": "0.1.0",
             "epoch_done": 0, "step_done": 0, "total_steps": STEPS})
    grp = ["majority"] * (n_classes // 2) + ["minority"] * (n_classes - n_classes // 2)
    w.write("classes", {"class_id": np.arange(n_classes), "class_name": [f"c{i}" for i in range(
        n_classes)], "train_count": n, "test_count": [500] * n_classes,
        "rank": np.arange(n_classes), "grp": grp, "shot": ["many"] * n_classes})
    done = STEPS if status == "finished" else STEPS // 2
    steps = np.arange(done)
    per = np.array([max(1, round(BATCH * c / sum(n))) for c in n])
    cols: dict[str, list[np.ndarray]] = {k: [] for k in ("step", "epoch", "class_id", "n",
                                                          "correct", "loss_sum", "p_true_sum",
                                                          "margin_sum", "pred_count", "grad_norm",
                                                          "lr")}
    for c in range(n_classes):
        acc = accuracy(steps / STEPS, n[c], ratio)
        cols["step"].append(steps)
        cols["epoch"].append(1 + steps * EPOCHS // STEPS)
        cols["class_id"].append(np.full(done, c))
        cols["n"].append(np.full(done, per[c]))
        cols["correct"].append(np.rint(per[c] * acc).astype(np.int64))
        cols["loss_sum"].append(per[c] * -np.log(acc))
        cols["p_true_sum"].append(per[c] * acc * 0.9)
        cols["margin_sum"].append(per[c] * (4 * acc - 1))
        major = c < n_classes // 2
        cols["pred_count"].append(np.rint(per[c] * (acc + major * (1 - acc))).astype(np.int64))
        cols["grad_norm"].append(0.5 * (1 - acc) + 0.01)
        cols["lr"].append(0.05 * np.cos(steps / STEPS * math.pi / 2))
        if full:  # small classes: most of their row's gradient is the others' push
            own = 0.2 + 0.6 * n[c] / 1000
            cols.setdefault("grad_pos", []).append(cols["grad_norm"][-1] * own)
            cols.setdefault("grad_neg", []).append(cols["grad_norm"][-1] * (1 - own) * 1.2)
    w.write("steps", {k: np.concatenate(v) for k, v in cols.items()})
    for e in range(0, EPOCHS + 1 if status == "finished" else EPOCHS // 2 + 1):
        t = np.array([e / EPOCHS])
        for split in ("train", "test"):
            acc = np.array([accuracy(t, n[c], ratio)[0] for c in range(n_classes)])
            if split == "test":
                acc = acc * np.linspace(1.0, 0.6 if ratio > 1 else 1.0, n_classes)
            total = np.array(n if split == "train" else [500] * n_classes)
            w.write("epochs", {"epoch": np.full(n_classes, e), "step": np.full(n_classes, e * 100),
                               "split": [split] * n_classes, "class_id": np.arange(n_classes),
                               "n": total, "correct": np.rint(total * acc).astype(np.int64),
                               "loss_sum": total * -np.log(acc), "p_true_sum": total * acc,
                               "feature_norm": 5 + 10 * acc, "weight_norm": 0.5 + acc,
                               "bias": np.zeros(n_classes)})
    if full:
        write_full_dynamics(w, n, ratio, EPOCHS if status == "finished" else EPOCHS // 2)
    w.update(epoch_done=EPOCHS if status == "finished" else EPOCHS // 2, step_done=done)
    if status != "crashed":
        w.finish(status, None if status == "finished" else "RuntimeError: out of memory")
    else:
        w._stop.set()  # a trainer that died without a word: its heartbeat simply stops
    meta = json.loads((w.dir / "run.json").read_text())
    at = STARTED.replace("09:30", f"09:{30 + minute}")
    meta.update(created_at=at, heartbeat_at=at,
                finished_at=None if status == "crashed" else at)
    atomic_write_json(w.dir / "run.json", meta)


def write_full_dynamics(w: RunWriter, n: list[int], ratio: float, epochs: int) -> None:
    """Geometry (the minority's classifier rows merge, within_rel falls slower for small classes)
    and 20 training samples per class, presented once per epoch, correct by a fixed pseudo-random
    rule at the class's accuracy (so some are forgotten)."""
    c_n = len(n)
    for e in range(epochs + 1):
        t = e / EPOCHS
        rel = [2.0 * math.exp(-3 * t) * (1 + (1 - k / 1000)) for k in n]
        ones = [1.0] * c_n
        w.write("geometry", {"epoch": [e] * c_n, "step": [e * 100] * c_n, "split": ["train"] * c_n,
                             "class_id": list(range(c_n)), "n": n, "mean_norm": ones,
                             "within_var": rel, "within_rel": rel, "cos_mean": ones,
                             "cos_max": ones, "shift": [None] * c_n, "shift_rel": [None] * c_n})
        summary = {"nc1": None, "within_rel": sum(rel) / c_n, "within_var": 1.0,
                   "between_var": 1.0, "cos_mean": 0.0, "cos_std": 0.0, "norm_cv": 0.0,
                   "majority_cos": 0.0, "minority_cos": 0.0, "w_cos_mean": 0.0,
                   "w_majority_cos": -0.1 - 0.05 * t,
                   "w_minority_cos": 0.05 + 0.7 * t * (ratio > 1)}
        w.write("geometry_summary", {"epoch": [e], "step": [e * 100], "split": ["train"],
                                     **{k: [v] for k, v in summary.items()}})
    rows: dict[str, list[object]] = {k: [] for k in ("epoch", "step", "sample_id", "class_id",
                                                     "correct", "p_true", "loss")}
    for e in range(1, epochs + 1):
        for c in range(c_n):
            acc = accuracy(np.array([e / EPOCHS]), n[c], ratio)[0]
            for k in range(20):
                sid = c * 20 + k
                rows["epoch"].append(e)
                rows["step"].append((e - 1) * 100 + (sid * 7) % 100)
                rows["sample_id"].append(sid)
                rows["class_id"].append(c)
                rows["correct"].append((sid * 37 + e * 11) % 100 < 100 * acc)
                rows["p_true"].append(acc)
                rows["loss"].append(-math.log(acc))
    w.write("samples", rows)


@pytest.fixture()
def snap_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.chdir(tmp_path)  # the app shows the store path: keep it relative and fixed
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    root = tmp_path / "snap-store"
    write_run(root, "run-balanced", "balanced-ce", 1.0, "ce", "finished", 0)
    write_run(root, "run-exp100-ce", "exp100-ce", 100.0, "ce", "finished", 1, full=True)
    write_run(root, "run-exp100-ldam", "exp100-ldam", 100.0, "ldam", "failed", 2)
    write_run(root, "run-exp10-crash", "exp10-ce", 10.0, "ce", "crashed", 3)
    yield "snap-store"
    monkeypatch.delenv("TZ")
    time.tzset()


class TestRunsScreen:
    def test_runs(self, snap_compare, snap_store: str) -> None:  # type: ignore[no-untyped-def]
        assert snap_compare(make_app(snap_store), terminal_size=(100, 32), run_before=settle)

    def test_runs_80x24_marked_and_sorted(self, snap_compare, snap_store: str
                                          ) -> None:  # type: ignore[no-untyped-def]
        async def before(pilot: Pilot[None]) -> None:
            await settle(pilot)
            await pilot.press("space", "down", "space", "s", "s", "s", "s", "s")  # sort: method
            await settle(pilot)

        assert snap_compare(make_app(snap_store), terminal_size=(80, 24), run_before=before)

    def test_filter(self, snap_compare, snap_store: str) -> None:  # type: ignore[no-untyped-def]
        async def before(pilot: Pilot[None]) -> None:
            await settle(pilot)
            pilot.app.screen.query_one("#runs-filter").cursor_blink = False  # the focus stays there
            await pilot.press("slash", *"exp100")
            await settle(pilot)

        assert snap_compare(make_app(snap_store), terminal_size=(100, 32), run_before=before)

    def test_delete_dialog(self, snap_compare, snap_store: str
                           ) -> None:  # type: ignore[no-untyped-def]
        async def before(pilot: Pilot[None]) -> None:
            await settle(pilot)
            await pilot.press("d")
            await pilot.pause()

        assert snap_compare(make_app(snap_store), terminal_size=(100, 32), run_before=before)


class TestRunScreen:
    def test_run_step(self, snap_compare, snap_store: str) -> None:  # type: ignore[no-untyped-def]
        app = make_app(snap_store, open_run="run-exp100-ce")
        assert snap_compare(app, terminal_size=(100, 32), run_before=settle)

    def test_run_epoch_80x24(self, snap_compare, snap_store: str
                             ) -> None:  # type: ignore[no-untyped-def]
        async def before(pilot: Pilot[None]) -> None:
            await settle(pilot)
            await pilot.press("e", "m")
            await settle(pilot)

        app = make_app(snap_store, open_run="run-exp100-ce")
        assert snap_compare(app, terminal_size=(80, 24), run_before=before)

    def test_run_classes_160x48(self, snap_compare, snap_store: str
                                ) -> None:  # type: ignore[no-untyped-def]
        app = make_app(snap_store, open_run="run-exp100-ce")
        assert snap_compare(app, terminal_size=(160, 48), run_before=settle)


class TestRunScreen100Classes:
    """CIFAR-100-like: the class-count chart puts several classes in a column, rows scroll."""

    @pytest.fixture()
    def store100(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
        monkeypatch.chdir(tmp_path)
        write_run(tmp_path / "store100", "run-c100", "c100-exp100", 100.0, "ce", "finished", 0,
                  n_classes=100, full=True)
        return "store100"

    def test_run_100_classes_80x24(self, snap_compare, store100: str
                                   ) -> None:  # type: ignore[no-untyped-def]
        app = make_app(store100, open_run="run-c100")
        assert snap_compare(app, terminal_size=(80, 24), run_before=settle)


class TestCompareScreen:
    def test_compare(self, snap_compare, snap_store: str) -> None:  # type: ignore[no-untyped-def]
        async def before(pilot: Pilot[None]) -> None:
            await settle(pilot)
            await pilot.press("space", "down", "space", "c")
            await settle(pilot)

        assert snap_compare(make_app(snap_store), terminal_size=(100, 32), run_before=before)


class TestSqlScreen:
    def test_sql_results(self, snap_compare, snap_store: str
                         ) -> None:  # type: ignore[no-untyped-def]
        async def before(pilot: Pilot[None]) -> None:
            await settle(pilot)
            await pilot.press("f3")
            await pilot.pause()
            screen = pilot.app.screen
            screen.editor.cursor_blink = False
            screen.editor.load_text("SELECT name, ratio, loss, status\nFROM runs ORDER BY name")
            await pilot.press("ctrl+r")
            await settle(pilot)
            # the query's wall time differs from run to run
            status = str(screen.status.render())
            screen.status.update(re.sub(r"in \d+ ms", "in N ms", status))
            await pilot.pause()

        assert snap_compare(make_app(snap_store), terminal_size=(100, 32), run_before=before)

    def test_sql_error(self, snap_compare, snap_store: str) -> None:  # type: ignore[no-untyped-def]
        async def before(pilot: Pilot[None]) -> None:
            await settle(pilot)
            await pilot.press("f3")
            await pilot.pause()
            pilot.app.screen.editor.cursor_blink = False
            pilot.app.screen.editor.load_text("DELETE FROM runs")
            await pilot.press("ctrl+r")
            await settle(pilot)

        assert snap_compare(make_app(snap_store), terminal_size=(80, 24), run_before=before)


class TestHelpScreen:
    def test_help(self, snap_compare, snap_store: str) -> None:  # type: ignore[no-untyped-def]
        async def before(pilot: Pilot[None]) -> None:
            await settle(pilot)
            await pilot.press("f1")
            await pilot.pause(0.3)

        assert snap_compare(make_app(snap_store), terminal_size=(100, 32), run_before=before)
