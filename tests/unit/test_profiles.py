"""The imbalance construction against published counts and hand-worked examples."""

from __future__ import annotations

import pytest

from trainer.data import DataError, class_table, profile_counts, shot_of

# Cao et al. 2019 (LDAM-DRW), CIFAR-10-LT at imbalance ratio 100: the published per-class counts.
CIFAR10_LT_100 = [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]


def test_exp_profile_reproduces_cifar10_lt_counts() -> None:
    counts = profile_counts(5000, 10, 100, "exp")
    assert counts == CIFAR10_LT_100
    assert sum(counts) == 12406


def test_exp_profile_cifar100_lt_total() -> None:
    # CIFAR-100-LT at ratio 100 has 10,847 training images (Cao et al. 2019, Table 1 setup).
    assert sum(profile_counts(500, 100, 100, "exp")) == 10847


def test_exp_profile_ratio_10_by_hand() -> None:
    # n_i = floor(5000 * 10^(-i/9)): 10^(-1/9) = 0.774264, so 3871; 10^(-2/9) = 0.599484, so 2997 ...
    assert profile_counts(5000, 10, 10, "exp") == [5000, 3871, 2997, 2320, 1796, 1391, 1077, 834,
                                                   645, 500]


def test_ratio_one_is_balanced() -> None:
    assert profile_counts(4000, 10, 1, "exp") == [4000] * 10
    assert profile_counts(4000, 10, 1, "step") == [4000] * 10


def test_step_profile_by_hand() -> None:
    # Buda et al.: the last mu*C classes get floor(n_max / R).
    assert profile_counts(5000, 10, 100, "step") == [5000] * 5 + [50] * 5
    assert profile_counts(1000, 10, 3, "step", minority_fraction=0.2) == [1000] * 8 + [333] * 2


def test_bad_requests_are_refused() -> None:
    with pytest.raises(DataError, match="ratio"):
        profile_counts(5000, 10, 0.5)
    # 50 * 100^(-8/9) = 0.83: class 8 is the first left empty
    with pytest.raises(DataError, match="class 8 with 0"):
        profile_counts(50, 10, 100)
    with pytest.raises(DataError, match="minority-fraction"):
        profile_counts(50, 10, 2, "step", minority_fraction=1.0)
    with pytest.raises(DataError, match="unknown profile"):
        profile_counts(50, 10, 2, "zipf")


def test_groups_exp_larger_half_is_majority() -> None:
    counts = [5, 9, 9, 1]  # ranks by (-count, id): class 1, 2, 0, 3
    table = class_table(counts, [10] * 4, list("abcd"), "exp")
    assert [c.rank for c in table] == [2, 0, 1, 3]
    assert [c.grp for c in table] == ["minority", "majority", "majority", "minority"]


def test_groups_balanced_run_still_has_two_halves() -> None:
    table = class_table([100] * 4, [10] * 4, list("abcd"), "exp")
    assert [c.grp for c in table] == ["majority", "majority", "minority", "minority"]


def test_groups_step_are_the_plateaus() -> None:
    counts = profile_counts(1000, 10, 10, "step", minority_fraction=0.3)
    table = class_table(counts, [10] * 10, [str(i) for i in range(10)], "step", 0.3)
    assert [c.grp for c in table] == ["majority"] * 7 + ["minority"] * 3


def test_shots() -> None:
    assert [shot_of(n) for n in (101, 100, 20, 19)] == ["many", "medium", "medium", "few"]
