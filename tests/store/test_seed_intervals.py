"""Comparisons over seeds: the t975 / ci95 / ci95_diff macros, method_comparison's and ratio_sweep's
means with 95 % t half-widths, and `imbtui report` showing "mean ± half-width (n=k)".

The store is built here from hand-set rows with known final accuracies; every expected number is
worked out by hand (statistics.stdev and the published t table below), never by the code under
test.
"""

from __future__ import annotations

import itertools
import json
import math
import statistics
from pathlib import Path
from typing import Any

import pytest

from imbtui import report
from imbtui.api import open_store
from imbtui.cli import main
from imbtui.store import RunWriter, Store
from tests.conftest import imbtui
from tests.store.test_queries import (
    TEST_N,
    TRAIN_A,
    _classes,
    _config,
    _epoch,
    build_store,
    run,
)
from tests.tolerance import approx64

# ==== the published table =========================================================================
# Student's t, upper 0.025 critical values (= the 0.975 quantile), as printed in the NIST/SEMATECH
# e-Handbook of Statistical Methods, section 1.3.6.7.2 "Critical Values of the Student's t
# Distribution", column 0.975 (the same values as any statistics textbook's t table).
PUBLISHED_T975 = {
    1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262,
    10: 2.228, 15: 2.131, 20: 2.086, 25: 2.060, 29: 2.045, 30: 2.042,
    40: 2.021, 60: 2.000, 100: 1.984, 120: 1.980,
}
T_INFINITY = 1.960  # the table's last row: the normal quantile


# ==== the hand-built store ========================================================================
# One setting (toy, exp, mlp, 2 epochs, ratio 10; classes 0, 1 majority, 2, 3 minority, 10 test
# samples each). Final test correct per class, and so the group accuracies:
#
#   run      method     seed  test correct    majority  minority  balanced
#   ce0      ce         0     9  9  5  5      0.90      0.50      0.700
#   ce1      ce         1     9  8  6  5      0.85      0.55      0.700
#   ce2      ce         2     10 9  6  6      0.95      0.60      0.775
#   ld0      ldam-drw   0     9  8  8  8      0.85      0.80      0.825
#   ld1      ldam-drw   1     9  9  9  8      0.90      0.85      0.875
#   ld2      ldam-drw   2     8  8  9  9      0.80      0.90      0.850
#   fo0      focal      0     9  9  7  7      0.90      0.70      0.800
#
# Every run fits its training set at epoch 2 (train acc 1), so its final gaps are 1 - test acc;
# epoch 1 is the same for every run (train correct 80 30 10 2, test 5 3 1 0).

FINAL_TEST = {
    "ce0": ("ce", 0, [9, 9, 5, 5]), "ce1": ("ce", 1, [9, 8, 6, 5]),
    "ce2": ("ce", 2, [10, 9, 6, 6]),
    "ld0": ("ldam", 0, [9, 8, 8, 8]), "ld1": ("ldam", 1, [9, 9, 9, 8]),
    "ld2": ("ldam", 2, [8, 8, 9, 9]),
    "fo0": ("focal", 0, [9, 9, 7, 7]),
}
MAJ = {"ce": [0.90, 0.85, 0.95], "ldam-drw": [0.85, 0.90, 0.80]}
MIN = {"ce": [0.50, 0.55, 0.60], "ldam-drw": [0.80, 0.85, 0.90]}
BAL = {"ce": [0.700, 0.700, 0.775], "ldam-drw": [0.825, 0.875, 0.850]}


def build(root: Path) -> Path:
    for run_id, (loss, seed, test) in FINAL_TEST.items():
        w = RunWriter(root, run_id)
        config = {**_config(10.0, loss, seed), **({"drw": 1} if loss == "ldam" else {})}
        w.start({"name": f"toy-{run_id}", "config": config})
        _classes(w, TRAIN_A)
        _epoch(w, 1, "train", TRAIN_A, [80, 30, 10, 2])
        _epoch(w, 1, "test", TEST_N, [5, 3, 1, 0])
        _epoch(w, 2, "train", TRAIN_A, TRAIN_A)
        _epoch(w, 2, "test", TEST_N, test)
        w.finish("finished")
    return root


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Store:
    return Store(build(tmp_path_factory.mktemp("seeds")))


def half_width(values: list[float]) -> float:
    """By hand: t(0.975, n - 1) from the published table times stdev / sqrt(n)."""
    n = len(values)
    return PUBLISHED_T975[n - 1] * statistics.stdev(values) / math.sqrt(n)


def welch(a: list[float], b: list[float]) -> tuple[float, float]:
    """By hand: the Welch-Satterthwaite degrees of freedom and the 95 % half-width of mean(a) -
    mean(b), with t for the degrees of freedom rounded down, from the published table."""
    va, vb = statistics.variance(a) / len(a), statistics.variance(b) / len(b)
    df = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
    return df, PUBLISHED_T975[math.floor(df)] * math.sqrt(va + vb)


# ==== the macros ==================================================================================

def scalar(store: Store, expr: str) -> Any:
    return store.sql(f"SELECT {expr} AS v", con=_connection(store))["v"][0]


_CONNECTIONS: dict[Path, Any] = {}


def _connection(store: Store) -> Any:
    """One connection per store for the many one-value queries (a connection lists the store)."""
    if store.root not in _CONNECTIONS:
        _CONNECTIONS[store.root] = store.connect()
    return _CONNECTIONS[store.root]


@pytest.mark.parametrize("df", sorted(PUBLISHED_T975))
def test_t975_is_the_published_table(store: Store, df: int) -> None:
    got = scalar(store, f"t975({df})")
    if df <= 30:  # the table itself
        assert got == approx64(PUBLISHED_T975[df])
    else:  # an approximation, which must round to the table's 3 decimals
        assert abs(got - PUBLISHED_T975[df]) <= 0.0005


def test_t975_at_large_df_tends_to_the_normal_quantile(store: Store) -> None:
    assert abs(scalar(store, "t975(100000)") - T_INFINITY) <= 0.0005
    # and it falls from df to df, through the table's end (2.042 at 30) into the expansion
    values = store.sql("SELECT t975(df) AS t FROM range(1, 200) r(df) ORDER BY df")["t"]
    assert values.null_count() == 0
    values = values.to_list()
    assert all(a > b for a, b in itertools.pairwise(values))


def _t_cdf(t: float, df: float, steps: int = 20000) -> float:
    """P(T <= t) for Student's t, by Simpson's rule over the density on [0, t] (independent of
    any table)."""
    c = math.exp(math.lgamma((df + 1) / 2) - math.lgamma(df / 2)) / math.sqrt(df * math.pi)

    def f(x: float) -> float:
        return c * (1 + x * x / df) ** (-(df + 1) / 2)

    h = t / steps
    s = f(0) + f(t) + sum((4 if i % 2 else 2) * f(i * h) for i in range(1, steps))
    return 0.5 + s * h / 3


@pytest.mark.parametrize("df", [1, 2, 3, 5, 8, 13, 21, 30, 31, 45, 80, 500])
def test_t975_leaves_2_5_percent_in_the_upper_tail(store: Store, df: int) -> None:
    t = scalar(store, f"t975({df})")
    density = math.exp(math.lgamma((df + 1) / 2) - math.lgamma(df / 2)) / math.sqrt(
        df * math.pi) * (1 + t * t / df) ** (-(df + 1) / 2)
    # the table rounds to 3 decimals (t within 0.0005); beyond it the expansion is within 1e-7;
    # 5 % more for the density's change over that distance
    slack = (0.0005 if df <= 30 else 1e-7) * density * 1.05 + 1e-9
    assert abs(_t_cdf(t, df) - 0.975) <= slack


def test_t975_rounds_a_fractional_df_down_and_has_no_value_below_one(store: Store) -> None:
    assert scalar(store, "t975(2.9)") == approx64(PUBLISHED_T975[2])
    assert scalar(store, "t975(45.5)") == scalar(store, "t975(45)")
    assert [scalar(store, f"t975({x})") for x in ("0", "0.5", "-3", "NULL")] == [None] * 4


def test_ci95_and_ci95_diff(store: Store) -> None:
    assert scalar(store, "ci95(0.05, 3)") == approx64(PUBLISHED_T975[2] * 0.05 / math.sqrt(3))
    assert scalar(store, "ci95(0.05, 1)") is None
    assert scalar(store, "ci95(NULL, 4)") is None
    # equal spreads and sizes: Welch's df is 2 (n - 1) = 4, half-width t(4) * sd * sqrt(2 / n)
    assert scalar(store, "ci95_diff(0.05, 3, 0.05, 3)") == approx64(
        PUBLISHED_T975[4] * 0.05 * math.sqrt(2 / 3))
    assert scalar(store, "ci95_diff(0.05, 1, 0.05, 3)") is None
    assert scalar(store, "ci95_diff(0.0, 3, 0.0, 5)") == 0.0


# ==== method_comparison ===========================================================================

def test_method_comparison_means_and_half_widths(store: Store) -> None:
    rows = {r["method"]: r for r in run(store, "method_comparison")}
    assert list(rows) == ["ce", "focal", "ldam-drw"]  # the baseline first, then by label
    assert [rows[m]["seeds"] for m in rows] == [3, 1, 3]
    for method in ("ce", "ldam-drw"):
        r = rows[method]
        for grp, values in (("majority", MAJ), ("minority", MIN), ("balanced", BAL)):
            assert r[f"test_{grp}"] == approx64(statistics.mean(values[method]))
            assert r[f"test_{grp}_ci"] == approx64(half_width(values[method]))
    # by hand for one: ce's minority 0.50 0.55 0.60, sd 0.05, t(2) = 4.303
    assert rows["ce"]["test_minority_ci"] == approx64(4.303 * 0.05 / math.sqrt(3))
    focal = rows["focal"]
    assert (focal["test_balanced"], focal["test_minority"]) == approx64((0.8, 0.7))
    assert [focal[k] for k in ("test_balanced_ci", "test_majority_ci", "test_minority_ci",
                               "d_balanced_ci", "d_minority_ci", "d_minority_within")] == [None] * 6
    assert focal["d_minority"] == approx64(0.7 - 0.55)  # the difference itself is still given


def test_method_comparison_within_spread(store: Store) -> None:
    ldam = {r["method"]: r for r in run(store, "method_comparison")}["ldam-drw"]
    # majority: 0.85 - 0.90 = -0.05; both sd 0.05 over 3 seeds, Welch df 4, half-width
    # 2.776 * sqrt(2 * 0.05^2 / 3) = 0.113 >= 0.05: within the spread
    df, hw = welch(MAJ["ldam-drw"], MAJ["ce"])
    assert df == pytest.approx(4.0) and hw == pytest.approx(0.1133, abs=5e-5)
    assert (ldam["d_majority"], ldam["d_majority_ci"]) == approx64((-0.05, hw))
    assert ldam["d_majority_within"] is True
    # minority: 0.85 - 0.55 = +0.30 against the same half-width 0.113: outside
    df, hw = welch(MIN["ldam-drw"], MIN["ce"])
    assert (ldam["d_minority"], ldam["d_minority_ci"]) == approx64((0.30, hw))
    assert ldam["d_minority_within"] is False
    # balanced: 0.85 - 0.725 = 0.125; sd 0.025 and 0.0433, Welch df 3.2 -> t(3) = 3.182,
    # half-width 3.182 * sqrt(0.000625 / 3 + 0.001875 / 3) = 0.092: outside
    df, hw = welch(BAL["ldam-drw"], BAL["ce"])
    assert math.floor(df) == 3 and hw == pytest.approx(0.0919, abs=5e-5)
    assert (ldam["d_balanced"], ldam["d_balanced_ci"]) == approx64((0.125, hw))
    assert ldam["d_balanced_within"] is False
    # the baseline against itself: difference 0, within
    ce = {r["method"]: r for r in run(store, "method_comparison")}["ce"]
    assert (ce["d_balanced"], ce["d_balanced_within"]) == (0.0, True)


def test_method_comparison_against_a_baseline_with_one_seed(store: Store) -> None:
    rows = {r["method"]: r for r in run(store, "method_comparison", baseline="focal")}
    assert list(rows) == ["focal", "ce", "ldam-drw"]
    assert rows["ldam-drw"]["d_minority"] == approx64(0.85 - 0.7)
    assert (rows["ldam-drw"]["d_minority_ci"], rows["ldam-drw"]["d_minority_within"]) == (
        None, None)


# ==== ratio_sweep =================================================================================

def test_ratio_sweep_means_and_half_widths(store: Store) -> None:
    rows = {r["method"]: r for r in run(store, "ratio_sweep")}
    assert [(m, r["seeds"], r["seed_list"]) for m, r in rows.items()] == [
        ("ce", 3, "0,1,2"), ("focal", 1, "0"), ("ldam-drw", 3, "0,1,2")]
    for method in ("ce", "ldam-drw"):
        r = rows[method]
        assert r["test_minority"] == approx64(statistics.mean(MIN[method]))
        assert r["test_minority_ci"] == approx64(half_width(MIN[method]))
        assert r["test_balanced_ci"] == approx64(half_width(BAL[method]))
        gaps = [1 - m for m in MIN[method]]  # train acc 1 at the end
        assert r["minority_gap"] == approx64(statistics.mean(gaps))
        assert r["minority_gap_ci"] == approx64(half_width(gaps))
        assert r["train_minority_ci"] == 0.0  # every seed fits: no spread
    assert rows["focal"]["test_balanced_ci"] is None


# ==== imbtui report ===============================================================================

def test_report_pools_a_settings_seeds(store: Store) -> None:
    api = open_store(store.root)
    frame = report.findings(api)
    assert frame.height == 7  # one row per run, as --format json gives
    columns = {r["method"]: r for r in report.settings(api, frame).to_dicts()}
    assert [(m, c["seeds"], sorted(c["run_ids"])) for m, c in columns.items()] == [
        ("ce", 3, ["ce0", "ce1", "ce2"]), ("focal", 1, ["fo0"]),
        ("ldam-drw", 3, ["ld0", "ld1", "ld2"])]
    # excess gap = minority gap - majority gap = majority test - minority test, per seed
    excess = [a - b for a, b in zip(MAJ["ldam-drw"], MIN["ldam-drw"])]  # 0.05, 0.05, -0.10
    ld = columns["ldam-drw"]
    assert ld["excess_gap"] == approx64(statistics.mean(excess))
    assert ld["excess_gap_ci"] == approx64(half_width(excess))
    assert ld["excess_gap_n"] == 3
    assert columns["focal"]["excess_gap_ci"] is None
    # the table's cells: "mean ± half-width (n=k)" over seeds, the plain number for one seed
    mean, hw = statistics.mean(excess), half_width(excess)
    assert report._cell(ld, "excess_gap", "{:+.3f}") == f"{mean:+.3f} ± {hw:.3f} (n=3)"
    assert report._cell(columns["focal"], "excess_gap", "{:+.3f}") == "+0.200"
    # a count's mean gets a decimal: every run here has onset spread 1
    assert report._cell(ld, "onset_spread", "{:.0f}") == "1.0 ± 0.0 (n=3)"
    # and how the findings move across methods, seeds pooled
    (line,) = [x for x in report.changes(report.settings(api, frame))
               if x.startswith("excess") and "by method" in x]
    ce_excess = [a - b for a, b in zip(MAJ["ce"], MIN["ce"])]
    assert line.endswith(
        f"{statistics.mean(ce_excess):+.3f} ± {half_width(ce_excess):.3f} (n=3) with ce, "
        f"+0.200 with focal, {mean:+.3f} ± {hw:.3f} (n=3) with ldam-drw")


def test_report_curves_over_seeds_carry_error_bars(store: Store) -> None:
    api = open_store(store.root)
    columns = report.settings(api, report.findings(api))
    curves = report.curves_over_seeds(api, columns)
    ce = curves.filter((curves["column"] == 1) & (curves["grp"] == "minority")
                       & (curves["split"] == "test") & (curves["epoch"] == 2)).to_dicts()
    assert [(r["acc"], r["acc_ci"], r["acc_n"]) for r in ce] == [
        (approx64(0.55), approx64(half_width(MIN["ce"])), 3)]
    # drawn: each curve of a column with several seeds gets its error bars, one seed none
    from matplotlib.figure import Figure

    from imbtui import figures

    for column, bars in ((1, 4), (2, 0)):
        ax = Figure().subplots()
        figures._panel(ax, curves.filter(curves["column"] == column), "t")
        assert len(ax.containers) == bars


def test_report_command_shows_mean_and_half_width(store: Store, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    fig = tmp_path / "seeds.png"
    out = imbtui("report", "--store", str(store.root), "--png", str(fig),
                 env={"COLUMNS": "200"}).stdout
    excess = [a - b for a, b in zip(MAJ["ldam-drw"], MIN["ldam-drw"])]
    assert f"{statistics.mean(excess):+.3f} ± {half_width(excess):.3f} (n=3)" in out
    assert "#1 = 3 seeds:" in out and "(n=3)" in out
    assert all(run_id in out for run_id in FINAL_TEST)  # the legend names every run
    assert fig.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # --format json stays one row per run
    assert main(["report", "--store", str(store.root), "--format", "json"]) == 0
    assert len(json.loads(capsys.readouterr().out)) == 7


def test_report_keeps_an_unfinished_run_apart(tmp_path: Path) -> None:
    """test_queries' store: runs a and b (ratio 10, ce, seeds 0 and 1) are finished, e (the same
    setting, seed 2) failed: a and b share a column, e has its own."""
    api = open_store(build_store(tmp_path))
    columns = report.settings(api, report.findings(api))
    ce10 = columns.filter((columns["method"] == "ce") & (columns["ratio"] == 10.0))
    assert ce10["run_ids"].to_list() == [["a", "b"], ["e"]]
    # a and b: excess gap 0.45 and 0.40 (test_queries: a's gaps 0.1 / 0.55, b's 0.1 / 0.5)
    assert ce10["excess_gap"][0] == approx64((0.45 + 0.40) / 2)
    assert ce10["excess_gap_ci"][0] == approx64(half_width([0.45, 0.40]))
