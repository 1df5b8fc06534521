"""The lens rows of the run screen (sharpness, lowest curvature, class gradient cosine, batch/whole
cosine) and its line of one-number lenses, on a store built here from hand-set rows.

Expected values are worked out in this file from the same hand-set numbers; none comes from the
code under test.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import pytest

from imbtui.store import RunWriter
from imbtui.tui.app import ImbtuiApp
from imbtui.tui.data import StoreSession
from imbtui.tui.data.curves import group_curves, lens_finals
from imbtui.tui.screens.run import RunScreen, lens_parts
from tests.tui.conftest import cursor, drive

C = 4
GRP = ["majority", "majority", "minority", "minority"]
COUNTS = [100, 50, 10, 5]
EPOCHS, SPE = 4, 10          # 4 epochs of 10 steps: steps 0..39
STEPS = EPOCHS * SPE
RUN = "lensrows"

# sharpness at epochs 0, 2, 4: (lambda_max, lambda_min) per group
SHARP = {0: {"majority": (5.0, -1.0), "minority": (9.0, -4.0)},
         2: {"majority": (3.0, -0.5), "minority": (12.0, -6.0)},
         4: {"majority": (2.0, -0.25), "minority": (15.0, -7.5)}}
# the C x C cosines at steps 0, 20: cos(a, b) for a < b
COS = {0: {(0, 1): 0.5, (0, 2): -0.2, (0, 3): -0.4, (1, 2): 0.1, (1, 3): -0.3, (2, 3): -0.6},
       20: {(0, 1): 0.7, (0, 2): -0.1, (0, 3): 0.0, (1, 2): 0.2, (1, 3): -0.2, (2, 3): 0.4}}
DIRECTION = {0: {"majority": 0.9, "minority": 0.3}, 20: {"majority": 0.95, "minority": 0.5}}


def _write(root: Path) -> None:
    w = RunWriter(root, RUN)
    w.start({"name": RUN, "config": {
        "dataset": "toy", "profile": "exp", "ratio": 20.0, "loss": "ce", "sampler": "none",
        "seed": 0, "model": "mlp", "epochs": EPOCHS, "n_classes": C, "batch_size": 8, "lr": 0.1,
        "total_steps": STEPS}})
    w.write("classes", {"class_id": list(range(C)), "class_name": [f"c{i}" for i in range(C)],
                        "train_count": COUNTS, "test_count": [10] * C, "rank": list(range(C)),
                        "grp": GRP, "shot": ["medium"] * C})
    for epoch in range(EPOCHS + 1):
        for split in ("train", "test"):
            w.write("epochs", {"epoch": [epoch] * C, "step": [epoch * SPE] * C,
                               "split": [split] * C, "class_id": list(range(C)),
                               "n": [10] * C, "correct": [5] * C, "loss_sum": [10.0] * C,
                               "p_true_sum": [5.0] * C, "feature_norm": [1.0] * C,
                               "weight_norm": [1.0] * C, "bias": [0.0] * C})
    steps: dict[str, list[Any]] = {k: [] for k in (
        "step", "epoch", "class_id", "n", "correct", "pred_count", "grad_norm", "loss_sum",
        "p_true_sum", "margin_sum", "lr")}
    for s, c in itertools.product(range(STEPS), range(C)):
        for k, v in {"step": s, "epoch": s // SPE + 1, "class_id": c, "n": 2, "correct": 1,
                     "pred_count": 2, "grad_norm": 1.0, "loss_sum": 2.0, "p_true_sum": 1.0,
                     "margin_sum": 0.0, "lr": 0.1}.items():
            steps[k].append(v)
    w.write("steps", steps)
    for epoch, groups in SHARP.items():
        w.write("sharpness", {"epoch": [epoch] * 2, "step": [epoch * SPE] * 2,
                              "grp": list(groups), "n": [32, 32],
                              "lambda_max": [v[0] for v in groups.values()],
                              "lambda_min": [v[1] for v in groups.values()],
                              "iters": [20, 20], "iters_lanczos": [20, 20]})
    for step, cos in COS.items():
        pairs = [(a, b) for a in range(C) for b in range(C) if a != b]  # the full matrix
        w.write("conflict", {"step": [step] * len(pairs), "epoch": [step // SPE + 1] * len(pairs),
                             "class_a": [a for a, _ in pairs], "class_b": [b for _, b in pairs],
                             "grp_a": [GRP[a] for a, _ in pairs],
                             "grp_b": [GRP[b] for _, b in pairs], "pairs": [1] * len(pairs),
                             "cos": [cos[min(a, b), max(a, b)] for a, b in pairs]})
        w.write("direction", {"step": [step] * 2, "epoch": [step // SPE + 1] * 2,
                              "grp": list(DIRECTION[step]), "n": [16, 4],
                              "cos_to_full": list(DIRECTION[step].values())})
    w.finish("finished")


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("lens-rows")
    _write(root)
    return root


def test_sharpness_rows_per_epoch(root: Path) -> None:
    curves = group_curves(cursor(root), RUN, EPOCHS + 1, "epoch")
    for key, i in (("sharpness", 0), ("curvature_min", 1)):
        for grp in ("majority", "minority"):
            want = [SHARP[e][grp][i] if e in SHARP else None for e in range(EPOCHS + 1)]
            assert curves[key][grp] == pytest.approx(want), (key, grp)


def test_sharpness_carried_across_the_step_axis(root: Path) -> None:
    curves = group_curves(cursor(root), RUN, STEPS, "step")
    # each recorded epoch's point sits at the step it ended at (the last epoch's, at the end of
    # the axis, in its last bucket) and is carried to the next one
    at = {min(e * SPE, STEPS - 1): e for e in SHARP}
    want = [SHARP[at[max(k for k in at if k <= s)]]["minority"][0] for s in range(STEPS)]
    assert curves["sharpness"]["minority"] == pytest.approx(want)


def test_conflict_rows_are_the_within_group_means(root: Path) -> None:
    curves = group_curves(cursor(root), RUN, STEPS, "step")
    within = {"majority": [(0, 1)], "minority": [(2, 3)]}
    for grp, pairs in within.items():
        want = [sum(COS[s][p] for p in pairs) / len(pairs) if s in COS else None
                for s in range(STEPS)]
        assert curves["conflict"][grp] == pytest.approx(want), grp
        want = [DIRECTION[s][grp] if s in DIRECTION else None for s in range(STEPS)]
        assert curves["direction"][grp] == pytest.approx(want), grp


def test_lens_line_names_each_lens(root: Path) -> None:
    lenses = lens_finals(cursor(root), RUN)
    # initial drop over the first 50 steps needs step 50: this 40-step run has no end loss
    assert all(r["change"] is None for r in lenses["initial_drop"])
    parts = lens_parts(lenses)
    # train accuracy is 5/10 at every epoch: every class's area is 0.5
    assert parts == ["learning speed (train acc AUC): majority 0.50, minority 0.50"]


def test_lens_parts_in_words() -> None:
    lenses = {
        "initial_drop": [{"grp": "majority", "change": -0.5, "rose": False},
                         {"grp": "minority", "change": 0.25, "rose": True}],
        "learning_speed": [{"grp": "all", "auc": 0.6, "spearman_count": 0.9},
                           {"grp": "majority", "auc": 0.8, "spearman_count": 1.0},
                           {"grp": "minority", "auc": 0.4, "spearman_count": 0.5}],
        "guessing_bias": [{"top_class": 3, "top_share": 0.6, "majority_share": 0.3,
                           "majority_class_share": 0.5}]}
    assert lens_parts(lenses) == [
        "first steps' loss change: majority -0.50, minority +0.25 [b]minority rose[/]",
        "learning speed (train acc AUC): majority 0.80, minority 0.40, ρ with class size +0.90",
        "untrained: 60% of predictions to class 3, 30% to the majority (50% of the classes)"]


def test_run_screen_shows_the_lens_rows(root: Path) -> None:
    async def script(app: ImbtuiApp, pilot: Any) -> dict[str, bool]:
        app.push_screen(RunScreen(RUN))
        await pilot.pause(0.5)
        for _ in range(40):
            screen = app.screen
            if isinstance(screen, RunScreen) and screen.curves is not None:
                break
            await pilot.pause(0.1)
        rows = {row.key: bool(row.display) for row in app.screen.query("MetricRow")}
        return rows

    rows = drive(ImbtuiApp(StoreSession(root)), script)
    assert all(rows[k] for k in ("sharpness", "curvature_min", "conflict", "direction")), rows


def test_a_focused_row_opens_as_a_chart(root: Path) -> None:
    from imbtui.tui.screens.chart import ChartScreen

    async def script(app: ImbtuiApp, pilot: Any) -> tuple[str, str | None]:
        app.push_screen(RunScreen(RUN))
        for _ in range(50):
            if isinstance(app.screen, RunScreen) and app.screen.curves is not None:
                break
            await pilot.pause(0.1)
        app.screen.query_one("#metric-sharpness").focus()
        await pilot.pause(0.2)
        await pilot.press("v")
        for _ in range(50):
            if isinstance(app.screen, ChartScreen):
                break
            await pilot.pause(0.1)
        return type(app.screen).__name__, getattr(app.screen, "metric", None)

    assert drive(ImbtuiApp(StoreSession(root)), script) == ("ChartScreen", "sharpness")
