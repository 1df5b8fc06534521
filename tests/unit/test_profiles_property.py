"""Property-based tests (hypothesis) of the imbalance construction, for any class count, ratio and
profile: counts never increase with class rank, the ratio is honoured within integer rounding, and
no class is ever empty -- a request that would empty one is refused with a clear error instead.

The expected values come from a second, independent formulation (logarithms instead of powers, and
the profile definitions of DESIGN.md), never from the code under test.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

from trainer.data import DataError, class_table, long_tailed_indices, profile_counts

n_maxes = st.integers(min_value=1, max_value=1_000_000)
class_counts = st.integers(min_value=2, max_value=1000)
ratios = st.floats(min_value=1.0, max_value=1e6, allow_nan=False, allow_infinity=False)
fractions = st.floats(min_value=0.001, max_value=0.999)
SETTINGS = settings(max_examples=300, deadline=None)


def exact_exp(n_max: int, n_classes: int, ratio: float, i: int) -> float:
    """n_max * R^(-i/(C-1)), computed through logarithms (a second formulation)."""
    return n_max * math.exp(-math.log(ratio) * i / (n_classes - 1))


def assert_shape(counts: list[int], n_max: int, n_classes: int, ratio: float) -> None:
    assert len(counts) == n_classes
    assert all(isinstance(c, int) for c in counts)
    assert counts[0] == n_max
    assert all(a >= b for a, b in zip(counts, counts[1:])), "counts increase with rank"
    assert min(counts) >= 1, "an empty class was not refused"
    # the ratio is honoured within rounding: the smallest class is floor(n_max / R), give or take
    # the float round-off of n_max / R itself
    assert_floor(counts[-1], n_max / ratio)
    if ratio.is_integer() and n_max % int(ratio) == 0:
        assert counts[-1] == n_max // int(ratio)  # whole numbers are hit exactly (5000 / 100 = 50)


def assert_floor(count: int, value: float) -> None:
    """count == floor(value), except that a value within float round-off of a whole number may
    round either way."""
    nearest = round(value)
    if abs(value - nearest) <= 1e-9 * max(1.0, value):
        assert count in (nearest - 1, nearest), (count, value)
    else:
        assert count == math.floor(value), (count, value)


@SETTINGS
@given(n_max=n_maxes, n_classes=class_counts, ratio=ratios)
@example(n_max=5000, n_classes=10, ratio=100.0)   # CIFAR-10-LT
@example(n_max=500, n_classes=100, ratio=100.0)   # CIFAR-100-LT
@example(n_max=7, n_classes=1000, ratio=7.0)      # many classes, tiny largest class
@example(n_max=3, n_classes=2, ratio=3.0000000000000004)
def test_exp_profile_properties(n_max: int, n_classes: int, ratio: float) -> None:
    try:
        counts = profile_counts(n_max, n_classes, ratio, "exp")
    except DataError as exc:
        # refused only when the smallest class would be empty, and saying so in one line
        assert n_max / ratio < 1 + 1e-9
        assert "ratio" in str(exc) and "\n" not in str(exc)
        return
    assert n_max / ratio > 1 - 1e-9, "a request that empties a class was accepted"
    assert_shape(counts, n_max, n_classes, ratio)
    for i, c in enumerate(counts):
        assert_floor(c, exact_exp(n_max, n_classes, ratio, i))


@SETTINGS
@given(n_max=n_maxes, n_classes=class_counts, ratio=ratios, mu=fractions)
@example(n_max=5000, n_classes=10, ratio=100.0, mu=0.5)
@example(n_max=10, n_classes=2, ratio=10.0, mu=0.999)
def test_step_profile_properties(n_max: int, n_classes: int, ratio: float, mu: float) -> None:
    try:
        counts = profile_counts(n_max, n_classes, ratio, "step", minority_fraction=mu)
    except DataError as exc:
        assert n_max / ratio < 1 + 1e-9
        assert "ratio" in str(exc) and "\n" not in str(exc)
        return
    assert n_max / ratio > 1 - 1e-9
    assert_shape(counts, n_max, n_classes, ratio)
    small = counts[-1]
    n_small = sum(1 for c in counts if c == small) if small < n_max else None
    assert set(counts) <= {n_max, small}, "a step profile has exactly two plateaus"
    if n_small is not None:
        # Buda et al.: a fraction mu of the classes is small -- at least one, never all
        assert 1 <= n_small <= n_classes - 1
        assert abs(n_small - mu * n_classes) <= 0.5 + 1e-9 or n_small in (1, n_classes - 1)
        assert counts[n_classes - n_small:] == [small] * n_small  # the last classes are small


@settings(max_examples=100, deadline=None)
@given(n_classes=class_counts, bad=st.sampled_from([0.0, 0.999, -5.0, math.nan, math.inf,
                                                    -math.inf]))
def test_bad_ratios_are_refused(n_classes: int, bad: float) -> None:
    for profile in ("exp", "step"):
        with pytest.raises(DataError, match="ratio"):
            profile_counts(1000, n_classes, bad, profile)


@settings(max_examples=50, deadline=None)
@given(n_classes=st.integers(min_value=-3, max_value=1), ratio=ratios)
def test_fewer_than_two_classes_are_refused(n_classes: int, ratio: float) -> None:
    with pytest.raises(DataError, match="at least 2 classes"):
        profile_counts(1000, n_classes, ratio, "exp")


@settings(max_examples=50, deadline=None)
@given(mu=st.one_of(st.floats(max_value=0.0), st.floats(min_value=1.0)))
def test_step_fraction_outside_the_open_interval_is_refused(mu: float) -> None:
    with pytest.raises(DataError, match="minority-fraction"):
        profile_counts(1000, 10, 10.0, "step", minority_fraction=mu)


@SETTINGS
@given(n_max=st.integers(1, 10_000), n_classes=st.integers(2, 200), ratio=ratios)
def test_groups_split_by_size(n_max: int, n_classes: int, ratio: float) -> None:
    """exp profile: the larger ceil(C/2) classes are majority, every minority class is no larger
    than any majority class, and rank 0 is the largest class."""
    assume(n_max / ratio >= 1 + 1e-9)
    counts = profile_counts(n_max, n_classes, ratio, "exp")
    table = class_table(counts, [1] * n_classes, [str(i) for i in range(n_classes)], "exp")
    major = [c.train_count for c in table if c.grp == "majority"]
    minor = [c.train_count for c in table if c.grp == "minority"]
    assert len(major) == math.ceil(n_classes / 2) and len(minor) == n_classes // 2
    assert max(minor) <= min(major)
    assert sorted(c.rank for c in table) == list(range(n_classes))
    assert all(table[i].rank == i for i in range(n_classes))  # counts never increase with id


@settings(max_examples=100, deadline=None)
@given(per_class=st.lists(st.integers(20, 80), min_size=2, max_size=8), seed=st.integers(0, 2**31),
       r1=st.floats(1.0, 15.0), r2=st.floats(1.0, 15.0))
def test_subsets_have_the_counts_and_nest_across_ratios(per_class: list[int], seed: int,
                                                        r1: float, r2: float) -> None:
    """The long-tailed subset holds exactly counts[c] distinct samples of class c, and for one seed
    the subset at the larger ratio lies inside the one at the smaller ratio."""
    y = np.repeat(np.arange(len(per_class)), per_class)
    np.random.default_rng(seed).shuffle(y)
    n_max = min(per_class)  # every class can supply the largest count
    lo, hi = sorted((r1, r2))  # n_max >= 20 > 15 >= hi: no class is ever empty
    subsets = []
    for r in (lo, hi):
        counts = profile_counts(n_max, len(per_class), r, "exp")
        idx = long_tailed_indices(y, counts, seed)
        assert len(set(idx.tolist())) == len(idx)
        assert np.bincount(y[idx], minlength=len(per_class)).tolist() == counts
        subsets.append(set(idx.tolist()))
    assert subsets[1] <= subsets[0]
