"""Datasets and the imbalance construction.

Every dataset arrives as whole arrays (no DataLoader): the loop moves them to the device once and
batches by slicing a device-side permutation. The long-tailed training set is a class-wise prefix of a
shuffle of the balanced one, seeded by the subset seed (TrainConfig.subset_seed, `--subset-seed`,
default 0), not by the training seed; the test set is kept balanced.
"""

from __future__ import annotations

import hashlib
import io
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from imbtui.errors import UserError

from trainer.options import DATASETS, DEFAULT_MODEL, PROFILES  # noqa: E402  (the one list of names)
SHOT_MANY, SHOT_FEW = 100, 20  # many > 100, medium 20..100, few < 20 (training samples)


class DataError(UserError, ValueError):
    """A dataset or imbalance request that cannot be met: shown as one line, exit code 2."""


# ==== imbalance profiles ==========================================================================

def profile_counts(n_max: int, n_classes: int, ratio: float, profile: str = "exp",
                   minority_fraction: float = 0.5) -> list[int]:
    """Training count per class id (class 0 largest) for a long-tailed profile.

    exp:  n_i = floor(n_max * R^(-i/(C-1)))  -- Cao et al. 2019 (LDAM-DRW), the standard CIFAR-LT.
    step: the last round(mu*C) classes get floor(n_max/R), the rest n_max  -- Buda et al. 2018.
    """
    if ratio < 1 or not math.isfinite(ratio):
        raise DataError(f"--ratio must be a number >= 1 (largest / smallest class), got {ratio}")
    if n_classes < 2:
        raise DataError(f"need at least 2 classes, got {n_classes}")
    if profile == "exp":
        # Same expression as the reference implementation (img_max * (1/R)^(i/(C-1))); the epsilon
        # only absorbs float round-off on mathematically whole numbers (5000 * 0.01 = 50).
        counts = [math.floor(n_max * (1.0 / ratio) ** (i / (n_classes - 1.0)) + 1e-9)
                  for i in range(n_classes)]
    elif profile == "step":
        if not 0.0 < minority_fraction < 1.0:
            raise DataError(f"--minority-fraction must lie strictly between 0 and 1, "
                            f"got {minority_fraction}")
        n_min_classes = n_minority_step(n_classes, minority_fraction)
        small = math.floor(n_max / ratio + 1e-9)
        counts = [n_max] * (n_classes - n_min_classes) + [small] * n_min_classes
    else:
        raise DataError(f"unknown profile {profile!r}: choose one of {', '.join(PROFILES)}")
    empty = [i for i, c in enumerate(counts) if c < 1]
    if empty:
        raise DataError(f"ratio {ratio:g} leaves class {empty[0]} with {counts[empty[0]]} training "
                        f"samples (largest class has {n_max}); use a smaller ratio")
    return counts


def n_minority_step(n_classes: int, minority_fraction: float) -> int:
    return max(1, min(n_classes - 1, round(minority_fraction * n_classes)))


# ==== groups ======================================================================================

@dataclass(frozen=True)
class ClassInfo:
    class_id: int
    class_name: str
    train_count: int
    test_count: int
    rank: int
    grp: str
    shot: str


def class_table(counts: list[int], test_counts: list[int], names: list[str], profile: str,
                minority_fraction: float = 0.5) -> list[ClassInfo]:
    """Rank (0 = largest, ties by class id), group and shot of every class, as DESIGN.md defines."""
    order = sorted(range(len(counts)), key=lambda c: (-counts[c], c))
    rank = {c: r for r, c in enumerate(order)}
    n = len(counts)
    if profile == "step":
        minority = set(range(n - n_minority_step(n, minority_fraction), n))
    else:
        n_major = math.ceil(n / 2)
        minority = set(order[n_major:])
    return [ClassInfo(c, names[c], counts[c], test_counts[c], rank[c],
                      "minority" if c in minority else "majority", shot_of(counts[c]))
            for c in range(n)]


def shot_of(count: int) -> str:
    return "many" if count > SHOT_MANY else ("few" if count < SHOT_FEW else "medium")


# ==== datasets ====================================================================================

@dataclass
class ArrayDataset:
    """A whole dataset in memory. x: float32 (N, ...) or uint8 images (N, H, W, C); y: int64 (N,)."""

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    class_names: list[str]
    meta: dict[str, object] = field(default_factory=dict)

    @property
    def n_classes(self) -> int:
        return len(self.class_names)

    def class_sizes(self) -> list[int]:
        return np.bincount(self.y_train, minlength=self.n_classes).tolist()

    def test_sizes(self) -> list[int]:
        return np.bincount(self.y_test, minlength=self.n_classes).tolist()


def long_tailed_indices(y: np.ndarray, counts: list[int], subset_seed: int) -> np.ndarray:
    """Indices of the long-tailed subset: the first counts[c] samples of class c in a shuffle seeded
    by `subset_seed`.

    Prefixes of one shuffle nest: the ratio-100 subset is contained in the ratio-10 one for one
    subset seed, so runs across a ratio sweep differ only in what was removed. The loop passes
    TrainConfig.subset_seed (default 0), never the training seed: runs that differ only in `--seed`
    train on the same samples (as the LDAM-DRW code keeps its subset at rand_number=0), so their
    spread is the training's alone.
    """
    rng = np.random.default_rng(subset_seed)
    perm = rng.permutation(len(y))
    picked = []
    for c, want in enumerate(counts):
        idx = perm[y[perm] == c]
        if len(idx) < want:
            raise DataError(f"class {c} has {len(idx)} training samples, the profile asks for {want}")
        picked.append(idx[:want])
    return np.sort(np.concatenate(picked))


def cache_dir() -> Path:
    """$IMBTUI_CACHE, else the user's XDG cache folder (~/.cache/imbtui)."""
    if env := os.environ.get("IMBTUI_CACHE"):
        return Path(env)
    import platformdirs

    return Path(platformdirs.user_cache_dir("imbtui", appauthor=False))


# MNIST-1D: 4,000 training samples per class so that ratio 100 still leaves 40 in the smallest class;
# 500 per class in the balanced test split.
MNIST1D_TRAIN_PER_CLASS = 4000
MNIST1D_TEST_PER_CLASS = 500
MNIST1D_SEED = 42


def load_mnist1d(train_per_class: int = MNIST1D_TRAIN_PER_CLASS,
                 test_per_class: int = MNIST1D_TEST_PER_CLASS) -> ArrayDataset:
    """MNIST-1D generated offline by the `mnist1d` package (the paper's default transform settings),
    cached as .npz in the cache folder so later runs load it in milliseconds."""
    per_class = train_per_class + test_per_class
    key = hashlib.sha1(f"mnist1d-v1-{train_per_class}-{test_per_class}-{MNIST1D_SEED}".encode())
    path = cache_dir() / f"mnist1d-{key.hexdigest()[:12]}.npz"
    if not path.exists():
        _generate_mnist1d(path, per_class, train_per_class)
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    names = [str(i) for i in range(10)]
    return ArrayDataset("mnist1d", arrays["x_train"], arrays["y_train"], arrays["x_test"],
                        arrays["y_test"], names, {"cache": str(path)})


def _generate_mnist1d(path: Path, per_class: int, train_per_class: int) -> None:
    from mnist1d.data import get_dataset_args, make_dataset

    from imbtui.store.layout import atomic_write_bytes

    args = get_dataset_args()
    args.num_samples = 10 * per_class
    args.train_split = 1.0
    args.seed = MNIST1D_SEED
    d = make_dataset(args)
    x, y = d["x"].astype(np.float32), d["y"].astype(np.int64)
    # make_dataset shuffles; split each class's samples so the test set is exactly balanced.
    train_idx, test_idx = [], []
    for c in range(10):
        idx = np.flatnonzero(y == c)
        train_idx.append(idx[:train_per_class])
        test_idx.append(idx[train_per_class:per_class])
    tr, te = np.sort(np.concatenate(train_idx)), np.sort(np.concatenate(test_idx))
    buf = io.BytesIO()
    np.savez(buf, x_train=x[tr], y_train=y[tr], x_test=x[te], y_test=y[te])
    atomic_write_bytes(path, buf.getvalue())




# ==== the registry: every dataset a run can name ==================================================

def load_dataset(name: str, data_dir: str | None = None) -> ArrayDataset:
    """mnist1d from the cache (generated offline); the image datasets through torchvision; a
    user's own as `folder:PATH` or `npz:PATH` (trainer/userdata.py, docs/datasets.md)."""
    from trainer import userdata

    if name == "mnist1d":
        return load_mnist1d()
    if name in DATASETS:
        from trainer.vision import load_image_dataset  # torchvision only when an image set is used

        return load_image_dataset(name, data_dir)
    if userdata.parse(name):
        return userdata.load(name)
    raise DataError(f"unknown dataset {name!r}: choose one of {', '.join(DATASETS)}, or your own "
                    f"as folder:PATH or npz:PATH (docs/datasets.md)")


def is_image_dataset(name: str) -> bool:
    """Images, kept uint8 or float (N, H, W, C) and normalised per batch on the device (the loop's
    `prepare`), which crop and flip can augment; else 1-D signals passed to the model as they are."""
    from trainer import userdata

    if userdata.parse(name):
        return load_dataset(name).x_train.ndim == 4
    from trainer.vision import IMAGE_DATASETS

    return name in IMAGE_DATASETS


def default_model(name: str) -> str | None:
    """The model a dataset trains when --model is not given: the built-ins' from DEFAULT_MODEL; a
    user's own by its samples' shape, as the built-ins choose: 1-D signals cnn1d (MNIST-1D),
    one-channel images cnn (MNIST, Fashion-MNIST), colour images resnet32 (CIFAR)."""
    from trainer import userdata

    if not userdata.parse(name):
        return DEFAULT_MODEL.get(name)
    shape = load_dataset(name).x_train.shape[1:]
    if len(shape) == 1:
        return "cnn1d"
    return "cnn" if shape[-1] == 1 else "resnet32"


def dataset_hash(name: str) -> str | None:
    """SHA-256 of a user dataset's content (the .npz file; each image's path and bytes of a
    folder), recorded in the run's config so a run names exactly what it trained on. None for
    a built-in dataset (its name and version say it)."""
    from trainer import userdata

    return load_dataset(name).meta["sha256"] if userdata.parse(name) else None  # type: ignore


def dataset_label(name: str) -> str:
    """The dataset as a run's default name shows it: npz:signals for npz:/data/signals.npz."""
    from trainer import userdata

    return userdata.label(name)


def dataset_counts(ds: ArrayDataset, ratio: float, profile: str = "exp",
                   minority_fraction: float = 0.5) -> list[int]:
    """The profile's training counts for `ds`. n_max is the smallest full class, so every class can
    supply its count: the same as the largest on the balanced sets (CIFAR, Fashion-MNIST, MNIST-1D);
    MNIST's classes hold 5,421 to 6,742 images, so its n_max is 5,421."""
    return profile_counts(min(ds.class_sizes()), ds.n_classes, ratio, profile, minority_fraction)
