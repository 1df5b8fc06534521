"""A dataset of the user's own (`--dataset folder:PATH`, `--dataset npz:PATH`): read back exactly as
written, made long-tailed by the same formula as the built-ins, refused in one line (exit 2, nothing
written) when it cannot work, and trained end to end through the CLI into a store that names it."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from imbtui.cli import main
from tests.conftest import imbtui
from trainer.data import dataset_counts, default_model, is_image_dataset, load_dataset
from trainer.data import long_tailed_indices
from trainer import userdata

SIZES = {"ant": 30, "bee": 24, "cat": 20, "dog": 16}  # images per class (a folder of PNGs)


def write_folder(root: Path, sizes: dict[str, int], shape: tuple[int, ...], seed: int = 0
                 ) -> dict[Path, np.ndarray]:
    """PNGs root/<class>/<i>.png of random pixels; returns {path: the array written}."""
    rng = np.random.default_rng(seed)
    written = {}
    for cls, n in sizes.items():
        (root / cls).mkdir(parents=True)
        for i in range(n):
            a = rng.integers(0, 256, shape, dtype=np.uint8)
            p = root / cls / f"{i:03d}.png"
            Image.fromarray(a).save(p)
            written[p] = a
    return written


def signals(n_per_class: list[int], length: int = 24, seed: int = 0):
    """(N, L) float32 signals whose mean is their class id, and the labels."""
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(len(n_per_class)), n_per_class)
    x = (rng.normal(size=(len(y), length)) + y[:, None]).astype(np.float32)
    return x, y


def write_npz(path: Path, **arrays: np.ndarray) -> Path:
    np.savez(path, **arrays)
    return path


# ==== reading: what comes back is what was written ================================================

def test_folder_with_train_and_test_reads_back_every_image(tmp_path: Path) -> None:
    train = write_folder(tmp_path / "d" / "train", SIZES, (8, 10, 3))
    test = write_folder(tmp_path / "d" / "test", {c: 2 for c in SIZES}, (8, 10, 3), seed=1)
    ds = load_dataset(f"folder:{tmp_path / 'd'}")
    assert ds.class_names == ["ant", "bee", "cat", "dog"]        # sorted folder names
    assert ds.x_train.shape == (sum(SIZES.values()), 8, 10, 3) and ds.x_train.dtype == np.uint8
    for x, y, written in ((ds.x_train, ds.y_train, train), (ds.x_test, ds.y_test, test)):
        want = sorted(written)                                   # class by class, files sorted
        np.testing.assert_array_equal(x, np.stack([written[p] for p in want]))
        np.testing.assert_array_equal(y, [ds.class_names.index(p.parent.name) for p in want])
    assert is_image_dataset(ds.name) and default_model(ds.name) == "resnet32"  # colour: CIFAR's
    assert ds.meta["split"] == "given"


def test_folder_without_a_split_is_split_per_class(tmp_path: Path) -> None:
    written = write_folder(tmp_path / "d", SIZES, (6, 6))          # grayscale
    ds = load_dataset(f"folder:{tmp_path / 'd'}")
    assert ds.x_train.shape[1:] == (6, 6, 1) and default_model(ds.name) == "cnn"
    # 20 % of each class (rounded) is the test set; together the two are every image once
    assert ds.test_sizes() == [round(0.2 * n) for n in SIZES.values()] == [6, 5, 4, 3]
    assert ds.class_sizes() == [24, 19, 16, 13]
    both = np.concatenate([ds.x_train, ds.x_test])[..., 0]
    labels = np.concatenate([ds.y_train, ds.y_test])
    got = sorted((int(c), a.tobytes()) for c, a in zip(labels, both))
    names = sorted(SIZES)
    assert got == sorted((names.index(p.parent.name), a.tobytes()) for p, a in written.items())
    # the split is seeded: read again (past the process's cache), the same test images
    again = userdata._read("folder", tmp_path / "d", ds.name)
    np.testing.assert_array_equal(again.x_test, ds.x_test)


@pytest.mark.parametrize("shape, stored", [((24,), (24,)), ((5, 7), (5, 7, 1)),
                                           ((3, 5, 7), (5, 7, 3)), ((1, 5, 7), (5, 7, 1))])
def test_npz_shapes(tmp_path: Path, shape: tuple[int, ...], stored: tuple[int, ...]) -> None:
    rng = np.random.default_rng(0)
    dtype = np.float32 if len(shape) == 1 else np.uint8
    x = rng.integers(0, 256, (40, *shape)).astype(dtype)
    xt = rng.integers(0, 256, (8, *shape)).astype(dtype)
    y, yt = np.arange(40) % 4, np.arange(8) % 4
    path = write_npz(tmp_path / "d.npz", x_train=x, y_train=y, x_test=xt, y_test=yt)
    ds = load_dataset(f"npz:{path}")
    assert ds.x_train.shape[1:] == stored and ds.x_train.dtype == dtype
    as_nhwc = x.transpose(0, 2, 3, 1) if len(shape) == 3 else x.reshape(40, *stored)
    np.testing.assert_array_equal(ds.x_train, as_nhwc)
    np.testing.assert_array_equal(ds.y_test, yt)
    assert ds.class_names == ["0", "1", "2", "3"]
    expected = "cnn1d" if len(stored) == 1 else ("cnn" if stored[-1] == 1 else "resnet32")
    assert default_model(ds.name) == expected
    assert is_image_dataset(ds.name) == (len(shape) > 1)
    assert ds.meta["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()


def test_float_images_are_normalised_by_their_own_statistics(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(3.0, 2.0, (64, 2, 4, 4)).astype(np.float32)  # any finite float range
    y = np.arange(64) % 2
    path = write_npz(tmp_path / "f.npz", x_train=x, y_train=y, x_test=x[:8], y_test=y[:8])
    ds = load_dataset(f"npz:{path}")
    mean, std = ds.meta["mean"], ds.meta["std"]
    for c in range(2):  # the normaliser's scale is value / 255
        assert mean[c] == pytest.approx(x[:, c].mean() / 255, rel=1e-5)
        assert std[c] == pytest.approx(x[:, c].std() / 255, rel=1e-4)


def test_npz_of_x_and_y_is_split_like_a_folder(tmp_path: Path) -> None:
    x, y = signals([20, 10, 5])
    names = np.array(["low", "mid", "high"])
    ds = load_dataset(f"npz:{write_npz(tmp_path / 'xy.npz', x=x, y=y, class_names=names)}")
    assert ds.test_sizes() == [4, 2, 1] and ds.class_sizes() == [16, 8, 4]
    assert ds.class_names == ["low", "mid", "high"]


# ==== the long tail: the built-ins' formula, by hand ==============================================

def test_long_tail_counts_match_the_formula_by_hand(tmp_path: Path) -> None:
    x, y = signals([50, 60, 55, 70])
    xt, yt = signals([5, 5, 5, 5], seed=1)
    path = write_npz(tmp_path / "lt.npz", x_train=x, y_train=y, x_test=xt, y_test=yt)
    ds = load_dataset(f"npz:{path}")
    # n_max = the smallest full class = 50; n_i = floor(50 * 10^(-i/3)):
    # 50, floor(23.21) = 23, floor(10.77) = 10, floor(5.0) = 5
    assert dataset_counts(ds, 10.0) == [50, 23, 10, 5]
    assert [math.floor(50 * 10 ** (-i / 3) + 1e-9) for i in range(4)] == [50, 23, 10, 5]
    assert dataset_counts(ds, 4.0, "step") == [50, 50, 12, 12]   # floor(50 / 4) = 12
    idx = long_tailed_indices(ds.y_train, [50, 23, 10, 5], subset_seed=0)
    assert np.bincount(ds.y_train[idx]).tolist() == [50, 23, 10, 5]


# ==== refused: one line, exit 2, nothing written ==================================================

def _bad_npz(tmp_path: Path, case: str) -> str:
    x, y = signals([20, 20, 20])
    xt, yt = signals([4, 4, 4], seed=1)
    arrays = {"x_train": x, "y_train": y, "x_test": xt, "y_test": yt}
    if case == "nan":
        arrays["x_train"] = x.copy()
        arrays["x_train"][7, 3] = np.nan
    elif case == "label-gap":
        arrays["y_train"] = np.where(y == 1, 3, y)   # labels 0, 2, 3: class 1 has none
        arrays["y_test"] = np.where(yt == 1, 3, yt)
    elif case == "negative-label":
        arrays["y_test"] = yt - 1
    elif case == "length":
        arrays["y_train"] = y[:-1]
    elif case == "test-shape":
        arrays["x_test"] = xt[:, :10]
    elif case == "missing-key":
        del arrays["y_test"]
    elif case == "text-labels":
        arrays["y_train"] = y.astype(str)
    elif case == "one-class":
        arrays["y_train"], arrays["y_test"] = 0 * y, 0 * yt
    elif case == "class-names":
        arrays["class_names"] = np.array(["a", "b"])
    elif case == "5d":
        arrays["x_train"], arrays["x_test"] = x.reshape(60, 1, 2, 3, 4), xt.reshape(12, 1, 2, 3, 4)
    elif case == "not-npz":
        (tmp_path / "d.npz").write_text("hello")
        return f"npz:{tmp_path / 'd.npz'}"
    elif case == "missing":
        return f"npz:{tmp_path / 'nope.npz'}"
    return f"npz:{write_npz(tmp_path / 'd.npz', **arrays)}"


def _bad_folder(tmp_path: Path, case: str) -> str:
    root = tmp_path / "d"
    if case == "mixed-sizes":
        write_folder(root, {"a": 3, "b": 3}, (6, 6))
        Image.fromarray(np.zeros((7, 6), np.uint8)).save(root / "b" / "odd.png")
    elif case == "empty-class":
        write_folder(root, {"a": 3, "b": 3}, (6, 6))
        (root / "c").mkdir()
    elif case == "split-classes":
        write_folder(root / "train", {"a": 3, "b": 3}, (6, 6))
        write_folder(root / "test", {"a": 3, "c": 3}, (6, 6))
    elif case == "broken-png":
        write_folder(root, {"a": 3, "b": 3}, (6, 6))
        (root / "a" / "zz.png").write_bytes(b"not an image")
    elif case == "no-classes":
        root.mkdir()
    elif case == "one-image":
        write_folder(root, {"a": 3, "b": 1}, (6, 6))
    return f"folder:{root}"


NPZ_CASES = ["nan", "label-gap", "negative-label", "length", "test-shape", "missing-key",
             "text-labels", "one-class", "class-names", "5d", "not-npz", "missing"]
FOLDER_CASES = ["mixed-sizes", "empty-class", "split-classes", "broken-png", "no-classes",
                "one-image"]


@pytest.mark.parametrize("kind, case", [("npz", c) for c in NPZ_CASES]
                         + [("folder", c) for c in FOLDER_CASES] + [("npz", "ratio")])
def test_bad_dataset_is_one_line_and_writes_nothing(
        tmp_path: Path, kind: str, case: str, capsys: pytest.CaptureFixture[str]) -> None:
    name = _bad_npz(tmp_path, case) if kind == "npz" else _bad_folder(tmp_path, case)
    ratio = "1000" if case == "ratio" else "10"   # 20 / 1000 leaves the last class empty
    store = tmp_path / "store"
    for argv in (["train", "--dataset", name, "--ratio", ratio, "--max-steps", "1", "--store",
                  str(store), "-q"], ["data", "--dataset", name, "--ratio", ratio]):
        code = main(argv)
        err = capsys.readouterr().err
        assert code == 2, err
        lines = err.splitlines()
        assert len(lines) == 1 and lines[0].startswith("imbtui: error:"), err
        assert "Traceback" not in err
        assert not store.exists()


# ==== end to end: train, sweep and data through the CLI, read back from the store =================

def _runs(store: Path) -> list[dict]:
    return json.loads(imbtui("sql", "SELECT r.run_id, r.name, r.dataset, r.model, r.status, "
                             "r.config FROM runs r ORDER BY r.created_at", "--format", "json",
                             "--store", str(store)).stdout)


def test_npz_trains_end_to_end(tmp_path: Path) -> None:
    x, y = signals([60, 60, 60, 60])
    xt, yt = signals([10, 10, 10, 10], seed=1)
    path = write_npz(tmp_path / "sig.npz", x_train=x, y_train=y, x_test=xt, y_test=yt)
    store = tmp_path / "store"
    info = json.loads(imbtui("data", "--dataset", f"npz:{path}", "--ratio", "10", "--json").stdout)
    assert info["counts"] == [60, 27, 12, 6]  # floor(60 * 10^(-i/3)): 60, 27.8, 12.9, 6.0
    imbtui("train", "--dataset", f"npz:{path}", "--ratio", "10", "--epochs", "1",
           "--batch-size", "32", "--store", str(store), "-q")
    (run,) = _runs(store)
    config = json.loads(run["config"]) if isinstance(run["config"], str) else run["config"]
    assert run["status"] == "finished" and run["model"] == "cnn1d"
    assert run["dataset"] == f"npz:{path.resolve()}" and run["name"] == "npz:sig-exp10-ce"
    assert config["data_hash"] == hashlib.sha256(path.read_bytes()).hexdigest()
    counts = json.loads(imbtui("sql", "SELECT train_count, test_count FROM classes ORDER BY "
                               "class_id", "--format", "json", "--store", str(store)).stdout)
    assert [(c["train_count"], c["test_count"]) for c in counts] == [
        (60, 10), (27, 10), (12, 10), (6, 10)]


def test_folder_trains_and_sweeps_end_to_end(tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    write_folder(tmp_path / "imgs", SIZES, (12, 12))
    name, store = f"folder:{tmp_path / 'imgs'}", tmp_path / "store"
    assert main(["train", "--dataset", name, "--ratio", "2", "--epochs", "1", "--batch-size",
                 "16", "--augment", "crop-flip", "--store", str(store), "-q"]) == 0
    assert main(["sweep", "--dataset", name, "--ratio", "1", "2", "--max-steps", "1",
                 "--batch-size", "8", "--store", str(store), "-q"]) == 0
    capsys.readouterr()
    runs = _runs(store)
    assert [r["status"] for r in runs] == ["finished"] * 3
    assert {r["model"] for r in runs} == {"cnn"}            # grayscale images: MNIST's model
    assert {r["dataset"] for r in runs} == {f"folder:{(tmp_path / 'imgs').resolve()}"}
    assert sorted(r["name"] for r in runs) == ["folder:imgs-exp2-ce", "folder:imgs-r1-ce-s0",
                                               "folder:imgs-r2-ce-s0"]
    hashes = {(json.loads(r["config"]) if isinstance(r["config"], str) else r["config"])
              ["data_hash"] for r in runs}
    assert len(hashes) == 1 and None not in hashes


@pytest.mark.parametrize("kind", ["npz", "folder"])
def test_each_format_is_studied_end_to_end(tmp_path: Path, kind: str) -> None:
    """`imbtui study` on a dataset of the user's own: the grid trains, its answer is written, and
    its runs are the user's dataset at each ratio."""
    if kind == "npz":
        x, y = signals([60, 60, 60, 60])
        xt, yt = signals([10, 10, 10, 10], seed=1)
        path = write_npz(tmp_path / "sig.npz", x_train=x, y_train=y, x_test=xt, y_test=yt)
    else:
        write_folder(tmp_path / "imgs", SIZES, (12, 12))
        path = tmp_path / "imgs"
    name, store, out = f"{kind}:{path}", tmp_path / "store", tmp_path / "answer"
    imbtui("study", "--dataset", name, "--ratios", "1", "4", "--seeds", "0", "--epochs", "2",
           "--batch-size", "16", "--store", str(store), "--out", str(out), "-q")
    runs = json.loads(imbtui("sql", "SELECT ratio, dataset, status FROM runs", "--format", "json",
                             "--store", str(store)).stdout)
    assert sorted((r["ratio"], r["status"]) for r in runs) == [(1.0, "finished"),
                                                               (4.0, "finished")]
    assert {r["dataset"] for r in runs} == {f"{kind}:{path.resolve()}"}
    summary = (out / "summary.md").read_text()
    assert "ratios 1, 4" in summary and (out / "curves.png").stat().st_size > 0
    # a second call reuses both runs
    again = imbtui("study", "--dataset", name, "--ratios", "1", "4", "--seeds", "0", "--epochs",
                   "2", "--batch-size", "16", "--store", str(store), "--out", str(out),
                   "--dry-run")
    assert again.stdout.count("reuse") == 2, again.stdout
