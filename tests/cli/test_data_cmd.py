"""`imbtui data`: class counts, groups and test counts without training, as a table or JSON."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import imbtui
from trainer.vision import SYSTEM_DIRS

N_MAX = 4000  # MNIST-1D as imbtui ships it


def exp_counts(n_max: int, ratio: float, c: int = 10) -> list[int]:
    # DESIGN.md's exponential profile, written out independently of trainer.data
    return [int(n_max * ratio ** (-i / (c - 1)) + 1e-9) for i in range(c)]


def data_json(*args: str) -> dict:
    return json.loads(imbtui("data", *args, "--json").stdout)


def test_json_for_the_default_dataset() -> None:
    info = data_json("--ratio", "100")
    assert info["counts"] == exp_counts(N_MAX, 100)
    assert info["counts"][-1] == 40 and info["n_train"] == sum(exp_counts(N_MAX, 100))
    assert info["test_counts"] == [500] * 10 and info["n_test"] == 5000
    # the larger half by training count is the majority
    assert info["groups"] == ["majority"] * 5 + ["minority"] * 5
    # shots: many > 100, medium 20..100, few < 20
    assert info["shots"] == ["many"] * 8 + ["medium"] * 2


def test_step_profile_and_minority_fraction() -> None:
    info = data_json("--ratio", "10", "--profile", "step", "--minority-fraction", "0.3")
    assert info["counts"] == [4000] * 7 + [400] * 3
    assert info["groups"] == ["majority"] * 7 + ["minority"] * 3


def test_table_output() -> None:
    out = imbtui("data", "--ratio", "10").stdout
    counts = exp_counts(N_MAX, 10)
    assert "mnist1d, exp profile, ratio 10" in out
    for n in counts:
        assert f" {n} " in out
    assert f"majority: 5 classes, {sum(counts[:5]):,} training samples" in out
    assert f"{sum(counts):,} training samples (of 40,000); 5,000 test samples" in out


@pytest.mark.parametrize("args, needle", [
    (["--dataset", "imagenet"], "unknown dataset 'imagenet'"),
    (["--ratio", "5000"], "leaves class 9 with 0 training samples"),
    (["--ratio", "0.5"], "--ratio"),
    (["--profile", "step", "--minority-fraction", "1.5"], "--minority-fraction"),
])
def test_bad_input_is_one_line_with_exit_2(args: list[str], needle: str) -> None:
    proc = imbtui("data", *args, check=False)
    assert proc.returncode == 2
    assert needle in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_missing_image_data_names_the_folder(tmp_path: Path) -> None:
    proc = imbtui("data", "--dataset", "cifar100", "--data-dir", str(tmp_path), check=False,
                  env={"IMBTUI_OFFLINE": "1"})
    assert proc.returncode == 2
    assert str(tmp_path / "cifar-100-python") in proc.stderr and "cifar-100-python.tar.gz" in \
        proc.stderr


@pytest.mark.skipif(not (SYSTEM_DIRS["fashion-mnist"] / "train-labels-idx1-ubyte.gz").is_file(),
                    reason="Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist)")
def test_fashion_mnist_counts(tmp_path: Path) -> None:
    info = data_json("--dataset", "fashion-mnist", "--data-dir", str(tmp_path), "--ratio", "100")
    assert info["counts"] == exp_counts(6000, 100) and info["test_counts"] == [1000] * 10
    assert info["class_names"][0] == "T-shirt/top"
