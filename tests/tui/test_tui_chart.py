"""The chart view (screens/chart.py): opened from the run and compare screens, its cursor, x-axes,
log-y, seed bands and PNG export, each checked against values read from the store's Parquet files
with DuckDB or computed by hand from the formulas the store was written with."""

from __future__ import annotations

import json
import math
import re
import struct
from pathlib import Path

import duckdb
import numpy as np
import pytest

from imbtui.store import RunWriter
from imbtui.store.layout import atomic_write_json
from imbtui.tui.app import make_app
from imbtui.tui.data.chart import load_chart
from imbtui.tui.data.session import StoreSession
from imbtui.tui.screens.chart import ChartExported, ChartScreen
from imbtui.tui.screens.compare import CompareScreen
from imbtui.tui.screenshots import settle
from imbtui.tui.widgets.metric_row import fmt_value
from tests.tui.conftest import drive

N_CLASSES, STEPS, EPOCHS = 4, 60, 3
COUNTS = [400, 300, 40, 20]
GRP = ["majority", "majority", "minority", "minority"]
SEEDS = {"run-s0": 0, "run-s1": 1, "run-s2": 2}
OTHER = "run-r20"


# ==== a store with known values ===================================================================

def batch(step: np.ndarray, c: int) -> np.ndarray:
    """Class c's samples in each step's batch: 4, 5 or 6 (so samples seen is not step x const)."""
    return 4 + (step + c) % 3


def correct(step: np.ndarray, c: int, seed: int) -> np.ndarray:
    """Large classes learned first, small ones late; each seed a little apart."""
    n = batch(step, c)
    acc = 1 - 0.9 * np.exp(-(step + 1) / (6.0 * (c + 1))) - 0.05 * seed * (c >= 2)
    return np.floor(n * np.clip(acc, 0, 1)).astype(np.int64)


def loss_sum(step: np.ndarray, c: int, seed: int) -> np.ndarray:
    return batch(step, c) * 3.0 * np.exp(-step / (5.0 * (c + 1))) * (1 + 0.1 * seed)


def write_chart_run(root: Path, run_id: str, seed: int, ratio: float, minute: int) -> None:
    w = RunWriter(root, run_id=run_id, heartbeat_s=3600)
    config = {"dataset": "mnist1d", "profile": "exp", "ratio": ratio, "model": "cnn1d",
              "loss": "ce", "sampler": "none", "epochs": EPOCHS, "batch_size": 20, "lr": 0.05,
              "seed": seed, "subset_seed": seed, "n_classes": N_CLASSES, "name": run_id}
    w.start({"name": run_id, "config": config, "device": "cpu", "code_version": "0.1.0",
             "epoch_done": 0, "step_done": 0, "total_steps": STEPS})
    w.write("classes", {"class_id": np.arange(N_CLASSES),
                        "class_name": [f"c{i}" for i in range(N_CLASSES)],
                        "train_count": COUNTS, "test_count": [50] * N_CLASSES,
                        "rank": np.arange(N_CLASSES), "grp": GRP, "shot": ["many"] * N_CLASSES})
    s = np.arange(STEPS)
    cols: dict[str, list[np.ndarray]] = {}
    for c in range(N_CLASSES):
        n = batch(s, c)
        part = {"step": s, "epoch": 1 + s * EPOCHS // STEPS, "class_id": np.full(STEPS, c),
                "n": n, "correct": correct(s, c, seed), "loss_sum": loss_sum(s, c, seed),
                "p_true_sum": n * 0.5, "margin_sum": n * 0.1, "pred_count": n,
                "grad_norm": np.full(STEPS, 0.1), "lr": np.full(STEPS, 0.05)}
        for k, v in part.items():
            cols.setdefault(k, []).append(v)
    w.write("steps", {k: np.concatenate(v) for k, v in cols.items()})
    for e in range(EPOCHS + 1):
        for split in ("train", "test"):
            ok = [(e * 7 + c * 3 + seed * 5 + (split == "test")) % 51 for c in range(N_CLASSES)]
            w.write("epochs", {"epoch": [e] * N_CLASSES, "step": [e * STEPS // EPOCHS] * N_CLASSES,
                               "split": [split] * N_CLASSES, "class_id": list(range(N_CLASSES)),
                               "n": [50] * N_CLASSES, "correct": ok,
                               "loss_sum": [50.0] * N_CLASSES, "p_true_sum": [25.0] * N_CLASSES,
                               "feature_norm": [1.0] * N_CLASSES,
                               "weight_norm": [1.0] * N_CLASSES, "bias": [0.0] * N_CLASSES})
    w.update(epoch_done=EPOCHS, step_done=STEPS)
    w.finish("finished")
    meta = json.loads((w.dir / "run.json").read_text())
    at = f"2026-01-15T09:{30 + minute}:00.000+00:00"
    meta.update(created_at=at, heartbeat_at=at, finished_at=at)
    atomic_write_json(w.dir / "run.json", meta)


def write_chart_store(root: Path) -> Path:
    for i, (rid, seed) in enumerate(SEEDS.items()):
        write_chart_run(root, rid, seed, 100.0, i)
    write_chart_run(root, OTHER, 0, 20.0, 5)
    return root


@pytest.fixture()
def chart_store(tmp_path: Path) -> Path:
    return write_chart_store(tmp_path / "chart-store")


# ==== reading the store independently =============================================================

def parquet(root: Path, run_id: str, table: str) -> str:
    return f"read_parquet('{root}/runs/{run_id}/{table}/*.parquet')"


def step_value(root: Path, run_id: str, step: int, grp: str, expr: str = "s.correct / s.n"
               ) -> float:
    """A group's value at one step: the mean over its classes of `expr` (the semantic layer's
    definition), straight from the Parquet parts."""
    sql = (f"SELECT avg({expr}) FROM {parquet(root, run_id, 'steps')} s "
           f"JOIN {parquet(root, run_id, 'classes')} c USING (class_id) "
           f"WHERE s.step = {step} AND c.grp = '{grp}' AND s.n > 0")
    return duckdb.sql(sql).fetchall()[0][0]


def epoch_value(root: Path, run_id: str, epoch: int, grp: str, split: str = "train") -> float:
    sql = (f"SELECT avg(e.correct / e.n) FROM {parquet(root, run_id, 'epochs')} e "
           f"JOIN {parquet(root, run_id, 'classes')} c USING (class_id) "
           f"WHERE e.epoch = {epoch} AND e.split = '{split}' AND c.grp = '{grp}'")
    return duckdb.sql(sql).fetchall()[0][0]


def samples_before(root: Path, run_id: str, step: int) -> float:
    sql = f"SELECT sum(n) FROM {parquet(root, run_id, 'steps')} WHERE step < {step}"
    return float(duckdb.sql(sql).fetchall()[0][0] or 0)


def shown(screen: ChartScreen, grp: str) -> str:
    m = re.search(rf"{grp}\[/\] (\S+)", screen.readout_text())
    assert m, screen.readout_text()
    return m.group(1)


# ==== tests =======================================================================================

def test_from_the_run_screen_cursor_reads_the_stores_values(chart_store: Path) -> None:
    async def script(app, pilot):  # type: ignore[no-untyped-def]
        await pilot.press("v")
        await settle(pilot)
        screen = app.screen
        assert isinstance(screen, ChartScreen) and screen.metric == "train_acc"
        assert screen.cursor_x == STEPS - 1  # 180 buckets >= 60 steps: one point per step
        await pilot.press("left", "left", "left", "left", "left")
        assert screen.cursor_x == STEPS - 6
        for grp in ("majority", "minority"):
            want = step_value(chart_store, "run-s0", STEPS - 6, grp)
            assert shown(screen, grp) == fmt_value(want)
        await pilot.press("shift+left", "shift+left")
        assert screen.cursor_x == STEPS - 26
        assert shown(screen, "minority") == fmt_value(
            step_value(chart_store, "run-s0", STEPS - 26, "minority"))

    drive(make_app(chart_store, open_run="run-s0"), script)


def test_x_axis_epoch_and_samples_seen(chart_store: Path) -> None:
    async def script(app, pilot):  # type: ignore[no-untyped-def]
        await pilot.press("v")
        await settle(pilot)
        screen = app.screen
        await pilot.press("x")  # epoch: the eval pass over the training set
        await settle(pilot)
        assert screen.x_axis == "epoch" and screen.cursor_x == EPOCHS
        await pilot.press("left")
        assert shown(screen, "majority") == fmt_value(
            epoch_value(chart_store, "run-s0", EPOCHS - 1, "majority"))
        assert screen.chart.plot.x_label == "epoch"
        await pilot.press("x")  # samples seen before each step
        await settle(pilot)
        assert screen.x_axis == "samples"
        assert screen.cursor_x == samples_before(chart_store, "run-s0", STEPS - 1)
        await pilot.press("left", "left")
        assert screen.cursor_x == samples_before(chart_store, "run-s0", STEPS - 3)
        assert shown(screen, "minority") == fmt_value(
            step_value(chart_store, "run-s0", STEPS - 3, "minority"))
        assert "samples seen" in screen.chart.render().plain

    drive(make_app(chart_store, open_run="run-s0"), script)


def test_log_y(chart_store: Path) -> None:
    async def script(app, pilot):  # type: ignore[no-untyped-def]
        await pilot.press("v")
        await settle(pilot)
        screen = app.screen
        await pilot.press("down", "down")  # train accuracy -> test accuracy -> train loss
        await settle(pilot)
        assert screen.metric == "loss"
        await pilot.press("l")
        plot = screen.chart.plot
        assert plot.log_y and screen.chart.plot.y_label.endswith("(log)")
        losses = [step_value(chart_store, "run-s0", s, g, "s.loss_sum / s.n")
                  for s in (0, STEPS - 1) for g in ("majority", "minority")]
        lo, hi = plot.y_range  # log10 units, whole decades around every value
        assert lo <= math.log10(min(losses)) and hi >= math.log10(max(losses))
        assert lo == math.floor(lo) and hi == math.ceil(hi)
        assert shown(screen, "majority") == fmt_value(
            step_value(chart_store, "run-s0", STEPS - 1, "majority", "s.loss_sum / s.n"))
        await pilot.press("l")
        assert not screen.chart.plot.log_y

    drive(make_app(chart_store, open_run="run-s0"), script)


def hand_band(step: int, grp: str, seeds: list[int]) -> tuple[float, float, float]:
    """(mean, min, max) over `seeds` of the group's accuracy at `step`, from the formulas."""
    s = np.array([step])
    per_seed = [float(np.mean([correct(s, c, k)[0] / batch(s, c)[0]
                               for c in range(N_CLASSES) if GRP[c] == grp])) for k in seeds]
    return sum(per_seed) / len(per_seed), min(per_seed), max(per_seed)


def test_seed_band_mean_min_max_by_hand(chart_store: Path) -> None:
    session = StoreSession(chart_store)
    session.refresh()
    cur = session.cursor()
    data = load_chart(cur, [*SEEDS, OTHER], "train_acc", "step", 180, pool=True)
    pooled = [ln for ln in data.lines if len(ln.run_ids) == 3]
    alone = [ln for ln in data.lines if ln.run_ids == (OTHER,)]
    assert len(pooled) == 2 and len(alone) == 2 and len(data.lines) == 4
    for line in pooled:
        assert line.x == [float(s) for s in range(STEPS)]
        for step in (0, 7, 33, STEPS - 1):
            mean, lo, hi = hand_band(step, line.grp, list(SEEDS.values()))
            assert line.y[step] == pytest.approx(mean)
            assert line.lo[step] == pytest.approx(lo) and line.hi[step] == pytest.approx(hi)
    each = load_chart(cur, [*SEEDS, OTHER], "train_acc", "step", 180, pool=False)
    assert len(each.lines) == 8 and all(ln.lo is None for ln in each.lines)


def test_from_compare_overlay_and_seed_toggle(chart_store: Path) -> None:
    ids = ["run-s0", "run-s1", OTHER]

    async def script(app, pilot):  # type: ignore[no-untyped-def]
        app.push_screen(CompareScreen(ids))
        await settle(pilot)
        await pilot.press("v")
        await settle(pilot)
        screen = app.screen
        assert isinstance(screen, ChartScreen) and screen.run_ids == ids
        labels = {(ln.label, ln.grp) for ln in screen.drawn_lines()}
        assert labels == {("run-s0 (2 seeds)", "majority"), ("run-s0 (2 seeds)", "minority"),
                          (OTHER, "majority"), (OTHER, "minority")}
        await pilot.press("left", "left")
        step = STEPS - 3
        mean, lo, hi = hand_band(step, "minority", [0, 1])
        text = re.sub(r"\[[^\]]*\]", "", screen.readout_text())
        assert (f"run-s0 (2 seeds) minority {fmt_value(mean)} ({fmt_value(lo)}–{fmt_value(hi)})"
                in text)
        assert f"{OTHER} majority {fmt_value(step_value(chart_store, OTHER, step, 'majority'))}" \
            in text
        await pilot.press("s")  # each run on its own
        assert len(screen.drawn_lines()) == 6 and screen.cursor_x == step
        await pilot.press("g")  # majority only
        assert {ln.grp for ln in screen.drawn_lines()} == {"majority"}

    drive(make_app(chart_store), script, size=(120, 36))


def test_one_run_brings_in_its_seeds(chart_store: Path) -> None:
    async def script(app, pilot):  # type: ignore[no-untyped-def]
        await pilot.press("v")
        await settle(pilot)
        screen = app.screen
        await pilot.press("s")
        await settle(pilot)
        assert screen.run_ids == list(SEEDS)  # not run-r20: its ratio differs
        mean, lo, hi = hand_band(STEPS - 1, "majority", list(SEEDS.values()))
        assert re.search(r"majority\[/\] (\S+) \((\S+)–(\S+)\)", screen.readout_text()).groups() \
            == (fmt_value(mean), fmt_value(lo), fmt_value(hi))
        assert "run-s0 (3 seeds)" in str(screen.query_one("#chart-legend").render())

    drive(make_app(chart_store, open_run="run-s0"), script)


def test_png_export(chart_store: Path, tmp_path: Path) -> None:
    from imbtui.figures import CHART_H, CHART_W

    messages: list = []

    async def script(app, pilot):  # type: ignore[no-untyped-def]
        await pilot.press("v")
        await settle(pilot)
        app.screen.export_dir = tmp_path
        await pilot.press("p")
        await settle(pilot)
        for _ in range(100):
            if any(isinstance(m, ChartExported) for m in messages):
                break
            await pilot.pause(0.1)

    drive(make_app(chart_store, open_run="run-s0"), script, messages=messages)
    done = [m for m in messages if isinstance(m, ChartExported)]
    assert done, "no ChartExported message"
    data = Path(done[0].path).read_bytes()
    assert Path(done[0].path).parent == tmp_path
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    assert (width, height) == (round(CHART_W * 150), round(CHART_H * 150))


# ==== a line per class ============================================================================

def class_steps(root: Path, run_id: str, class_id: int, expr: str = "correct / n"
                ) -> np.ndarray:
    """One class's value at every step, straight from the run's Parquet parts."""
    sql = (f"SELECT {expr} FROM {parquet(root, run_id, 'steps')} "
           f"WHERE class_id = {class_id} ORDER BY step")
    return np.array([r[0] for r in duckdb.sql(sql).fetchall()], dtype=float)


def class_epochs(root: Path, run_id: str, class_id: int, split: str) -> np.ndarray:
    sql = (f"SELECT correct / n FROM {parquet(root, run_id, 'epochs')} "
           f"WHERE class_id = {class_id} AND split = '{split}' ORDER BY epoch")
    return np.array([r[0] for r in duckdb.sql(sql).fetchall()], dtype=float)


def test_per_class_lines_read_the_stores_parquet(chart_store: Path) -> None:
    from imbtui.tui.screens.chart import CLASS_COLOURS

    async def script(app, pilot):  # type: ignore[no-untyped-def]
        await pilot.press("v")
        await settle(pilot)
        screen = app.screen
        await pilot.press("c")
        await settle(pilot)
        lines = screen.drawn_lines()
        assert screen.data.by_class and [ln.class_id for ln in lines] == [0, 1, 2, 3]
        assert [ln.grp for ln in lines] == GRP and [ln.label for ln in lines] == ["c0", "c1",
                                                                                   "c2", "c3"]
        colours = {ln.class_id: screen._style(ln) for ln in lines}
        assert colours == {c: (CLASS_COLOURS[c], GRP[c] == "minority") for c in range(N_CLASSES)}
        for ln in lines:  # one bucket per step: every point is the class's own step
            assert ln.x == [float(s) for s in range(STEPS)]
            assert np.allclose(ln.y, class_steps(chart_store, "run-s0", ln.class_id))
        await pilot.press("left", "left", "left")
        assert screen.cursor_x == STEPS - 4
        assert shown(screen, "c3") == fmt_value(class_steps(chart_store, "run-s0", 3)[STEPS - 4])
        assert "per class" in str(screen.query_one("#chart-title").render())
        await pilot.press("down")  # test accuracy, per class: carried from epoch to epoch
        await settle(pilot)
        await pilot.press("x")  # ... on the epoch axis: one point per evaluated epoch
        await settle(pilot)
        assert screen.metric == "test_acc" and screen.x_axis == "epoch"
        assert {ln.class_id: screen._style(ln) for ln in screen.drawn_lines()} == colours
        for ln in screen.drawn_lines():
            assert ln.x == [float(e) for e in range(EPOCHS + 1)]
            assert np.allclose(ln.y, class_epochs(chart_store, "run-s0", ln.class_id, "test"))
        await pilot.press("g")  # the majority's classes alone
        assert [ln.class_id for ln in screen.drawn_lines()] == [0, 1]
        await pilot.press("c")
        await settle(pilot)
        assert not screen.data.by_class and {ln.grp for ln in screen.data.lines} == set(GRP)

    drive(make_app(chart_store, open_run="run-s0"), script, size=(120, 36))


def test_per_class_samples_axis_and_where_there_are_no_class_lines(chart_store: Path) -> None:
    session = StoreSession(chart_store)
    session.refresh()
    cur = session.cursor()
    data = load_chart(cur, ["run-s1"], "loss", "samples", 180, by_class=True)
    assert data.by_class and len(data.lines) == N_CLASSES
    seen = [samples_before(chart_store, "run-s1", s) for s in range(STEPS)]
    for ln in data.lines:
        assert ln.x == seen
        assert np.allclose(ln.y, class_steps(chart_store, "run-s1", ln.class_id,
                                             "loss_sum / n"))
    # margin has no per-class curve, and several runs draw their groups: group lines then
    assert not load_chart(cur, ["run-s1"], "margin", "step", 180, by_class=True).by_class
    many = load_chart(cur, ["run-s1", OTHER], "train_acc", "step", 180, by_class=True)
    assert not many.by_class and all(ln.class_id is None for ln in many.lines)


def test_many_runs_in_one_statement_are_the_run_screens_group_buckets(chart_store: Path) -> None:
    """group_buckets_runs over a list is, run by run, group_buckets of each run (the run screen's
    call), and the chart's multi-run lines are those rows."""
    session = StoreSession(chart_store)
    session.refresh()
    cur = session.cursor()
    ids = [*SEEDS, OTHER]
    many = cur.sql("SELECT * FROM group_buckets_runs($ids, 20, $span) ORDER BY ALL",
                   params={"ids": ids, "span": STEPS}).fetchall()
    one = [(r, *row) for r in sorted(ids) for row in cur.sql(
        "SELECT * FROM group_buckets($run, 20, $span) ORDER BY ALL",
        params={"run": r, "span": STEPS}).fetchall()]
    assert len(many) == len(one) == len(ids) * 2 * 20
    for a, b in zip(many, one):
        assert a[:5] == b[:5] and a[5:] == pytest.approx(b[5:])
    data = load_chart(cur, ids, "loss", "step", 20, pool=False)
    line = next(ln for ln in data.lines if ln.run_ids == (OTHER,) and ln.grp == "minority")
    assert line.x == [b * STEPS / 20 for b in range(20)]
    assert line.y == pytest.approx([r[6] for r in many if r[0] == OTHER and r[1] ==
                                    "minority"])
