"""Image datasets through torchvision's own classes, from files in torchvision's own on-disk formats
(CIFAR pickled batches, MNIST idx files) written here; no download. Plus the CIFAR-LT recipe and the
one-line errors for missing or damaged data."""

from __future__ import annotations

import json
import math
import os
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import imbtui
from trainer.data import DataError, load_dataset
from trainer.loop import TrainConfig, get_lr, resolve_config
from trainer.vision import SYSTEM_DIRS, write_cifar, write_mnist

FASHION = SYSTEM_DIRS["fashion-mnist"]
needs_fashion = pytest.mark.skipif(
    not (FASHION / "train-images-idx3-ubyte.gz").is_file(),
    reason=f"Fashion-MNIST is not installed at {FASHION} (apt-get install dataset-fashion-mnist)")
OFFLINE = {"IMBTUI_OFFLINE": "1"}


def synthetic(n_per_class: int, n_classes: int, shape: tuple[int, ...], seed: int = 0):
    rng = np.random.default_rng(seed)
    y = np.tile(np.arange(n_classes), n_per_class)  # interleaved, as the real files are
    return rng.integers(0, 256, (len(y), *shape), dtype=np.uint8), y


# ==== torchvision formats round trip ==============================================================

@pytest.mark.parametrize("name, n_classes", [("cifar10", 10), ("cifar100", 100)])
def test_cifar_files_load_through_torchvision(tmp_path: Path, name: str, n_classes: int) -> None:
    x, y = synthetic(3, n_classes, (32, 32, 3))
    xt, yt = synthetic(1, n_classes, (32, 32, 3), seed=1)
    names = [f"name{i}" for i in range(n_classes)]
    write_cifar(tmp_path, name, x, y, xt, yt, names)
    ds = load_dataset(name, str(tmp_path))
    # pixels come back in (N, H, W, C) order, labels and names as written
    assert ds.x_train.dtype == np.uint8 and ds.x_train.shape == (3 * n_classes, 32, 32, 3)
    assert np.array_equal(ds.x_train, x) and np.array_equal(ds.y_train, y)
    assert np.array_equal(ds.x_test, xt) and np.array_equal(ds.y_test, yt)
    assert ds.class_names == names
    assert ds.test_sizes() == [1] * n_classes


@pytest.mark.parametrize("name", ["mnist", "fashion-mnist"])
def test_mnist_idx_files_load_through_torchvision(tmp_path: Path, name: str) -> None:
    x, y = synthetic(4, 10, (28, 28))
    xt, yt = synthetic(2, 10, (28, 28), seed=1)
    write_mnist(tmp_path, name, x, y, xt, yt)
    ds = load_dataset(name, str(tmp_path))
    assert ds.x_train.shape == (40, 28, 28, 1)  # a channel axis is added
    assert np.array_equal(ds.x_train[..., 0], x) and np.array_equal(ds.y_train, y)
    assert np.array_equal(ds.x_test[..., 0], xt) and np.array_equal(ds.y_test, yt)
    assert len(ds.class_names) == 10


def test_mnist_uses_its_smallest_class_as_n_max(tmp_path: Path) -> None:
    """MNIST's classes differ in size; the profile starts from the smallest so every class can give
    its count (balanced at ratio 1)."""
    sizes = [30, 34, 26, 31, 28, 25, 29, 32, 27, 33]
    y = np.concatenate([np.full(n, c) for c, n in enumerate(sizes)])
    x = np.zeros((len(y), 28, 28), np.uint8)
    write_mnist(tmp_path, "mnist", x, y, x[:10], np.arange(10))
    info = json.loads(imbtui("data", "--dataset", "mnist", "--data-dir", str(tmp_path), "--ratio",
                             "1", "--json").stdout)
    assert info["counts"] == [25] * 10 and info["full_counts"] == sizes


# ==== the published long-tailed counts ============================================================

@pytest.mark.slow
@pytest.mark.parametrize("name, n_classes, per_class, want_total, want_head", [
    ("cifar10", 10, 5000, 12_406, [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]),
    ("cifar100", 100, 500, 10_847, [500, 477, 455, 434, 415, 396, 378, 361, 344, 328]),
])
def test_full_size_cifar_gives_the_published_long_tailed_counts(
        tmp_path: Path, name: str, n_classes: int, per_class: int, want_total: int,
        want_head: list[int]) -> None:
    """A full-size CIFAR-10/100 (50,000 training images, zeros) in torchvision's format: ratio 100
    gives Cao et al.'s class counts: 12,406 images for CIFAR-10 and 10,847 for CIFAR-100."""
    y = np.tile(np.arange(n_classes), per_class)
    x = np.zeros((len(y), 32, 32, 3), np.uint8)
    yt = np.tile(np.arange(n_classes), 10_000 // n_classes)
    write_cifar(tmp_path, name, x, y, np.zeros((len(yt), 32, 32, 3), np.uint8), yt,
                [str(i) for i in range(n_classes)])
    info = json.loads(imbtui("data", "--dataset", name, "--data-dir", str(tmp_path), "--ratio",
                             "100", "--json").stdout)
    assert info["n_train"] == sum(info["counts"]) == want_total
    assert info["counts"][:10] == want_head and info["counts"][-1] == per_class // 100
    assert info["test_counts"] == [10_000 // n_classes] * n_classes


# ==== training on CIFAR-format files ==============================================================

def test_train_cifar10_five_steps_from_torchvision_files(tmp_path: Path) -> None:
    data, store = tmp_path / "data", tmp_path / "store"
    x, y = synthetic(100, 10, (32, 32, 3))
    xt, yt = synthetic(10, 10, (32, 32, 3), seed=1)
    write_cifar(data, "cifar10", x, y, xt, yt, [f"c{i}" for i in range(10)])
    imbtui("train", "--dataset", "cifar10", "--data-dir", str(data), "--ratio", "100",
           "--max-steps", "5", "--batch-size", "32", "--store", str(store), "-q")
    (run_dir,) = (store / "runs").iterdir()
    meta = json.loads((run_dir / "run.json").read_text())
    cfg = meta["config"]
    assert meta["status"] == "finished" and meta["step_done"] == 5
    # the standard CIFAR-LT recipe, recorded with the run
    assert (cfg["model"], cfg["epochs"], cfg["lr"], cfg["weight_decay"], cfg["warmup_epochs"],
            cfg["milestones"], cfg["lr_decay"], cfg["augment"]) == (
        "resnet32", 200, 0.1, 2e-4, 5.0, [160, 180], 0.01, "crop-flip")
    want = [math.floor(100 * 0.01 ** (i / 9) + 1e-9) for i in range(10)]
    rows = json.loads(imbtui("sql", "SELECT class_id, train_count FROM classes ORDER BY class_id",
                             "--format", "json", "--store", str(store)).stdout)
    assert [r["train_count"] for r in rows] == want
    steps = json.loads(imbtui("sql", "SELECT step, sum(n) AS n FROM steps GROUP BY step ORDER BY "
                                     "step", "--format", "json", "--store", str(store)).stdout)
    assert steps == [{"step": s, "n": 32} for s in range(5)]


def test_cifar_lt_learning_rate_schedule() -> None:
    """lr 0.1, linear warm-up over 5 epochs, x0.01 after epoch 160, x0.01 again after 180."""
    cfg = resolve_config(TrainConfig(dataset="cifar10"))
    spe = 10  # steps per epoch
    assert get_lr(cfg, 0, spe) == pytest.approx(0.1 / 50)
    assert get_lr(cfg, 24, spe) == pytest.approx(0.1 * 25 / 50)
    assert get_lr(cfg, 49, spe) == pytest.approx(0.1)
    assert get_lr(cfg, 1599, spe) == pytest.approx(0.1)      # last step of epoch 160
    assert get_lr(cfg, 1600, spe) == pytest.approx(1e-3)     # epoch 161
    assert get_lr(cfg, 1799, spe) == pytest.approx(1e-3)
    assert get_lr(cfg, 1800, spe) == pytest.approx(1e-5)     # epoch 181: 0.1 * 0.0001
    # a shortened run keeps the recipe's shape; explicit milestones win
    assert resolve_config(TrainConfig(dataset="cifar10", epochs=20)).milestones == (16, 18)
    assert resolve_config(TrainConfig(dataset="cifar100", epochs=20, milestones=(5,))
                          ).milestones == (5,)
    # MNIST-1D keeps its own recipe
    small = resolve_config(TrainConfig())
    assert (small.model, small.epochs, small.lr, small.schedule, small.augment) == (
        "cnn1d", 30, 0.05, "cosine", "none")


# ==== missing and damaged data ====================================================================

def test_missing_data_offline_is_one_line_and_keeps_the_store(tmp_path: Path,
                                                              trained_store: Path) -> None:
    before = sorted(p.name for p in (trained_store / "runs").iterdir())
    proc = imbtui("train", "--dataset", "cifar10", "--data-dir", str(tmp_path / "none"),
                  "--store", str(trained_store), "-q", check=False, env=OFFLINE)
    assert proc.returncode == 2
    line = proc.stderr.strip()
    assert "\n" not in line and "Traceback" not in line
    assert str(tmp_path / "none" / "cifar-10-batches-py") in line
    assert "cifar-10-python.tar.gz" in line and "--data-dir" in line
    assert sorted(p.name for p in (trained_store / "runs").iterdir()) == before


def test_failed_download_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_network(*args, **kwargs):
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    monkeypatch.delenv("IMBTUI_OFFLINE", raising=False)
    with pytest.raises(DataError) as exc:
        load_dataset("mnist", str(tmp_path))
    msg = str(exc.value)
    assert "downloading it failed" in msg and "Name or service not known" in msg
    assert str(tmp_path / "MNIST" / "raw") in msg


def test_damaged_file_is_one_line(tmp_path: Path) -> None:
    x, y = synthetic(2, 10, (32, 32, 3))
    folder = write_cifar(tmp_path, "cifar10", x, y, x, y, [str(i) for i in range(10)])
    (folder / "data_batch_3").write_bytes(b"not a pickle")
    proc = imbtui("data", "--dataset", "cifar10", "--data-dir", str(tmp_path), check=False,
                  env=OFFLINE)
    assert proc.returncode == 2 and "could not be read" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


# ==== the real Fashion-MNIST of Debian's dataset-fashion-mnist ====================================

@needs_fashion
def test_fashion_mnist_from_the_debian_package(tmp_path: Path) -> None:
    """Found in /usr/share/datasets/fashion-mnist without any download, unpacked into the data
    folder in torchvision's layout and read by torchvision's FashionMNIST class."""
    env = {**os.environ, **OFFLINE}
    os.environ.update(env)
    try:
        ds = load_dataset("fashion-mnist", str(tmp_path))
    finally:
        os.environ.pop("IMBTUI_OFFLINE")
    assert ds.x_train.shape == (60_000, 28, 28, 1) and ds.x_test.shape == (10_000, 28, 28, 1)
    assert ds.class_sizes() == [6000] * 10 and ds.test_sizes() == [1000] * 10
    assert ds.class_names[0] == "T-shirt/top" and ds.class_names[9] == "Ankle boot"
    # the dataset's well-known first labels, and its published normalisation constants
    assert ds.y_train[:5].tolist() == [9, 0, 0, 3, 0] and ds.y_test[:5].tolist() == [9, 2, 1, 1, 6]
    assert ds.x_train.mean() / 255 == pytest.approx(0.2860, abs=1e-4)
    assert ds.x_train.std() / 255 == pytest.approx(0.3530, abs=1e-4)
    assert (tmp_path / "FashionMNIST" / "raw" / "train-images-idx3-ubyte").is_file()
