"""`imbtui report`: the study's three findings.

On the hand-built store every number is worked out by hand; on a small real store (ratio 1 and ratio
100, three epochs each, made by the real trainer) the findings must hold for the imbalanced run and
not for the balanced one, and one number is recomputed from the raw rows.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import pytest

from imbtui import report
from imbtui.api import open_store
from tests.conftest import imbtui
from tests.store.test_queries import build_store
from tests.tolerance import approx64


# ==== on hand-set rows ===========================================================================

@pytest.fixture(scope="module")
def hand(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_store(tmp_path_factory.mktemp("hand-report"))


def test_findings_on_hand_set_rows(hand: Path) -> None:
    (a,) = report.findings(open_store(hand), ["a"], threshold=0.5, early=2).to_dicts()
    # train acc epoch 1: .8 .4 .2 0, epoch 2: 1 .9 .8 1 -> onsets 1 2 2 2
    assert (a["onset_spread"], a["unlearned"], a["epochs"]) == (1.0, 0, 2)
    assert (a["onset_majority"], a["onset_minority"], a["onset_lag"]) == approx64(
        (1.5, 2.0, 0.5))
    # train acc, mean over the group's classes: majority epoch 1 (.8 + .4) / 2, epoch 2
    # (1 + .9) / 2; minority (.2 + 0) / 2, (.8 + 1) / 2
    assert a["early_majority"] == approx64((0.6 + 0.95) / 2)
    assert a["early_minority"] == approx64((0.1 + 0.9) / 2)
    # final gaps: majority (1 - .9 + .9 - .8) / 2, minority (.8 - .5 + 1 - .2) / 2
    assert (a["gap_majority"], a["gap_minority"]) == approx64((0.1, 0.55))
    assert a["excess_gap"] == approx64(0.45)
    assert (a["method"], a["ratio"]) == ("ce", 10.0)


def test_a_class_never_learned_counts_as_one_past_the_last_epoch(hand: Path) -> None:
    (a,) = report.findings(open_store(hand), ["a"], threshold=0.85, early=1).to_dicts()
    # onsets at 0.85: 2 2 - 2 -> class 2 counts as epoch 3
    assert (a["onset_spread"], a["unlearned"]) == (1.0, 1)
    assert (a["onset_majority"], a["onset_minority"]) == approx64((2.0, 2.5))
    assert (a["early_majority"], a["early_minority"]) == approx64((0.6, 0.1))


def test_changes_follow_ratio_and_method(hand: Path) -> None:
    store = open_store(hand)
    frame = report.findings(store, ["a", "c", "d"])
    lines = report.changes(report.settings(store, frame))  # one seed each: plain numbers
    by_ratio = [x for x in lines if x.startswith("excess") and "by ratio" in x]
    by_method = [x for x in lines if x.startswith("excess") and "by method" in x]
    # excess gap: c (ratio 1) minority (.1 + .3) / 2 vs majority .1 -> +0.1; a as above -> +0.45
    assert by_ratio == ["excess train - test gap of the minority, by ratio (toy, exp, mlp, "
                        "2 epochs, ce): "
                        "+0.100 at ratio 1 -> +0.450 at ratio 10"]
    # d (focal, ratio 10): test .9 .7 | .6 .6 -> minority .4, majority (.1 + .3) / 2 -> +0.2
    assert by_method == ["excess train - test gap of the minority, by method (toy, exp, mlp, "
                         "2 epochs, "
                         "ratio 10): "
                         "+0.450 with ce, +0.200 with focal"]


# ==== on a real store ============================================================================

@pytest.fixture(scope="session")
def real_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Balanced for 3 epochs; ratio 100 for 5, long enough to start memorising the minority.

    (Ratio 100 has a quarter of the balanced set's samples, so its 5 epochs cost less than the
    balanced run's 3.)
    """
    root = tmp_path_factory.mktemp("report-store")
    for ratio, epochs in (("1", "3"), ("100", "5")):
        imbtui("train", "--ratio", ratio, "--epochs", epochs, "--store", str(root), "-q",
               "--name", f"r{ratio}")
    return root


REPO = Path(__file__).resolve().parents[2]
SAMPLE_RUNS = REPO / "sample_runs"


def test_the_bundled_sample_runs_show_the_three_findings() -> None:
    """The store the README tours (sample_runs/README.md: ratios 1, 10, 100 with CE, ratio 100 with
    LDAM-DRW). Thresholds are the real-store test's: the real effect passes, balance does not."""
    got = report_rows(SAMPLE_RUNS)
    bal, mid, imb = (got[f"sample-mnist1d-r{r}-ce-s0"] for r in (1, 10, 100))
    ldam = got["sample-mnist1d-r100-ldam-drw-s0"]
    assert ldam["method"] == "ldam-drw" and imb["method"] == "ce"
    # (1) classes learned alike only with balance
    assert bal["onset_spread"] <= 1 and imb["onset_spread"] >= 2
    # (2) the minority underfit early, lagging behind the majority, more so as the ratio grows
    early = [r["early_majority"] - r["early_minority"] for r in (bal, mid, imb)]
    assert early[0] < 0.15 and early[2] > 0.3 and early[0] < early[1] < early[2]
    assert imb["onset_lag"] >= 1.0 and abs(bal["onset_lag"]) <= 0.5
    # (3) the minority's excess train - test gap: absent with balance, growing with the ratio
    assert bal["excess_gap"] < 0.03 and imb["excess_gap"] > 0.05
    assert bal["excess_gap"] < mid["excess_gap"] < imb["excess_gap"]
    # and the mitigation method narrows it at ratio 100
    assert ldam["excess_gap"] < imb["excess_gap"]


def report_rows(store: Path, *args: str) -> dict[str, dict[str, Any]]:
    rows = json.loads(imbtui("report", "--format", "json", "--store", str(store), *args).stdout)
    return {r["name"]: r for r in rows}


@pytest.mark.slow
def test_the_three_findings_hold_for_imbalance_and_not_for_balance(real_store: Path) -> None:
    got = report_rows(real_store)
    bal, imb = got["r1"], got["r100"]
    # (1) classes are learned alike with balance, at spread-out times with imbalance
    assert bal["onset_spread"] <= 1 and imb["onset_spread"] >= 2
    # (2) the minority is underfit early and reaches the threshold later
    assert imb["early_majority"] - imb["early_minority"] > 0.3
    assert bal["early_majority"] - bal["early_minority"] < 0.15
    assert imb["onset_lag"] >= 1.0 and abs(bal["onset_lag"]) <= 0.5
    # (3) the minority's train - test gap exceeds the majority's only with imbalance
    assert imb["excess_gap"] > 0.05 and bal["excess_gap"] < 0.03


@pytest.mark.slow
def test_report_numbers_match_the_raw_rows(real_store: Path) -> None:
    imb = report_rows(real_store, "r100")["r100"]
    rows = json.loads(imbtui("sql", "SELECT e.epoch, e.split, e.class_id, e.n, e.correct, c.grp "
                             "FROM epochs e JOIN classes c USING (run_id, class_id) "
                             "JOIN runs r USING (run_id) WHERE r.name = 'r100'", "--format", "json",
                             "--store", str(real_store)).stdout)
    last = max(r["epoch"] for r in rows)

    def class_mean(split: str, grp: str, epoch: int) -> float:
        sel = [r for r in rows if (r["split"], r["grp"], r["epoch"]) == (split, grp, epoch)]
        return sum(r["correct"] / r["n"] for r in sel) / len(sel)

    gap_min = class_mean("train", "minority", last) - class_mean("test", "minority", last)
    assert imb["gap_minority"] == approx64(gap_min)
    early_min = (class_mean("train", "minority", 1) + class_mean("train", "minority", 2)) / 2
    assert imb["early_minority"] == approx64(early_min)
    onsets = []
    for c in range(10):
        accs = sorted((r["epoch"], r["correct"] / r["n"]) for r in rows
                      if r["class_id"] == c and r["split"] == "train" and r["epoch"] >= 1)
        onsets.append(next((e for e, acc in accs if acc >= 0.5), last + 1))
    assert imb["onset_spread"] == max(onsets) - min(onsets)


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


@pytest.mark.slow
def test_report_table_and_figure(real_store: Path, tmp_path: Path) -> None:
    fig = tmp_path / "curves.png"
    proc = imbtui("report", "r1", "r100", "--png", str(fig), "--store", str(real_store),
                  env={"COLUMNS": "160"})
    for heading in ("classes learned alike?", "minority underfit early?",
                    "memorised, not generalised?", "ratio 100"):
        assert heading in proc.stdout
    assert "by ratio" not in proc.stdout  # 3 and 5 epochs: not comparable, so not compared
    ids = json.loads(imbtui("runs", "--json", "--store", str(real_store)).stdout)
    assert all(r["run_id"] in proc.stdout for r in ids)  # the legend names every run in full
    width, height = png_size(fig)
    assert width > 1000 and height > 500  # two panels side by side at 300 dpi


@pytest.mark.slow
def test_report_errors_are_one_line(real_store: Path, tmp_path: Path) -> None:
    proc = imbtui("report", "nope", "--store", str(real_store), check=False)
    assert proc.returncode == 2 and proc.stderr.strip() == (
        f"imbtui: error: unknown run 'nope' in store '{real_store}'")
    proc = imbtui("report", "--store", str(tmp_path / "none"), check=False)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1
    empty = tmp_path / "empty"
    (empty / "runs").mkdir(parents=True)
    proc = imbtui("report", "--store", str(empty), check=False)
    assert proc.returncode == 2 and "has an evaluated epoch" in proc.stderr
