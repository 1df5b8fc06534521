"""A dataset of the user's own: `--dataset folder:PATH` or `--dataset npz:PATH` (docs/datasets.md).

folder:PATH  images, one subfolder per class: PATH/<class>/*.png|jpg|jpeg, or PATH/train/<class>/
             and PATH/test/<class>/. Without train/ and test/ the images are split per class,
             TEST_FRACTION of each class (at least one image) to the test set, by a shuffle seeded
             with SPLIT_SEED: the same split for every run.
npz:PATH     numpy arrays: x_train, y_train, x_test, y_test (or x and y, split as a folder is), and
             optionally class_names. x is (N, L) 1-D signals, or images (N, H, W), (N, C, H, W)
             with C in 1..4, uint8 on 0..255 or any finite float.

Either becomes the same `ArrayDataset` as the built-in sets, so the same long-tail construction
(trainer.data.dataset_counts, long_tailed_indices) and the same model choice by shape follow.
Images are kept as the built-ins keep them, (N, H, W, C), uint8 or float32, and normalised on the
device per batch with each channel's mean and std over the training images; 1-D signals go to the
model as they are (float32), as MNIST-1D does. Every problem is a `DataError`: one line, exit
code 2, before anything is written to the store.
"""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path

import numpy as np

from trainer.data import ArrayDataset, DataError

KINDS = ("folder", "npz")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
TEST_FRACTION = 0.2   # of each class's images, when the folder has no train/ and test/
SPLIT_SEED = 0        # the split's shuffle: fixed, so every run tests on the same images
GRAY_MODES = ("1", "L", "LA", "I", "I;16", "F")
_CHUNK = 4096         # images per slice when computing the channel statistics


# ==== names =======================================================================================

def parse(name: str) -> tuple[str, Path] | None:
    """('npz', path) for 'npz:PATH', ('folder', path) for 'folder:PATH'; None for a built-in."""
    kind, sep, rest = name.partition(":")
    if not sep or kind not in KINDS:
        return None
    if not rest.strip():
        raise DataError(f"--dataset {kind}: needs a path after the colon, e.g. {kind}:./my-data")
    return kind, Path(rest).expanduser()


def normalise(name: str) -> str:
    """A user dataset's name with its path made absolute (runs and Slurm tasks started from
    another folder find the same data); a built-in name as it is."""
    user = parse(name)
    return f"{user[0]}:{user[1].resolve()}" if user else name


def label(name: str) -> str:
    """Short form for run names: 'npz:signals' for 'npz:/data/signals.npz'."""
    user = parse(name)
    return f"{user[0]}:{user[1].stem or user[1].name}" if user else name


# ==== loading =====================================================================================

_CACHE: dict[str, tuple[tuple, ArrayDataset]] = {}  # the last dataset read, by name


def load(name: str) -> ArrayDataset:
    """The dataset, read and checked; read once per process while its files stay as they were
    (the model choice, the run's content hash and the loop all ask for it)."""
    kind, path = parse(name)  # type: ignore[misc]  (callers pass user datasets only)
    key, sig = normalise(name), _signature(path)
    hit = _CACHE.get(key)
    if hit is not None and hit[0] == sig:
        return hit[1]
    ds = _read(kind, path, name)
    _CACHE.clear()
    _CACHE[key] = (sig, ds)
    return ds


def _signature(path: Path) -> tuple:
    """Size and modification time of the file, or of the folder and the folders below it (two
    levels: class folders, or train/test and their class folders): adding, removing or replacing
    an image changes one of them."""
    try:
        if path.is_file():
            st = path.stat()
            return (st.st_size, st.st_mtime_ns)
        dirs = [path, *(p for p in path.iterdir() if p.is_dir())]
        dirs += [q for p in dirs[1:] for q in p.iterdir() if q.is_dir()]
        return tuple((str(d), d.stat().st_mtime_ns) for d in dirs)
    except OSError:
        return ()


def _read(kind: str, path: Path, name: str) -> ArrayDataset:
    ds = _load_npz(path) if kind == "npz" else _load_folder(path)
    ds.name = normalise(name)
    check(ds)
    if ds.x_train.ndim == 4:
        ds.meta["mean"], ds.meta["std"] = channel_stats(ds.x_train)
    return ds


def check(ds: ArrayDataset) -> None:
    """The checks every user dataset passes: shapes consistent, labels 0..C-1 with every class in
    both splits, numbers finite."""
    for split, x, y in (("train", ds.x_train, ds.y_train), ("test", ds.x_test, ds.y_test)):
        if y.ndim != 1:
            raise DataError(f"{ds.name}: y_{split} must be 1-D (one label per sample), got shape "
                            f"{y.shape}")
        if len(x) != len(y):
            raise DataError(f"{ds.name}: x_{split} has {len(x)} samples but y_{split} has "
                            f"{len(y)} labels")
        if len(y) == 0:
            raise DataError(f"{ds.name}: the {split} split is empty")
        if y.min() < 0 or y.max() >= ds.n_classes:
            bad = y[(y < 0) | (y >= ds.n_classes)][0]
            raise DataError(f"{ds.name}: y_{split} holds label {bad}; labels must be 0..C-1 "
                            f"(C = {ds.n_classes} classes)")
        if np.issubdtype(x.dtype, np.floating) and not np.isfinite(x).all():
            raise DataError(f"{ds.name}: x_{split} holds NaN or infinite values (first at sample "
                            f"{int(np.flatnonzero(~np.isfinite(x.reshape(len(x), -1)).all(1))[0])})")
    if ds.x_train.shape[1:] != ds.x_test.shape[1:]:
        raise DataError(f"{ds.name}: train samples have shape {ds.x_train.shape[1:]} but test "
                        f"samples {ds.x_test.shape[1:]}")
    if ds.n_classes < 2:
        raise DataError(f"{ds.name}: needs at least 2 classes, found {ds.n_classes}")
    for split, sizes in (("train", ds.class_sizes()), ("test", ds.test_sizes())):
        if 0 in sizes:
            c = sizes.index(0)
            raise DataError(f"{ds.name}: class {c} ({ds.class_names[c]}) has no {split} samples; "
                            f"labels must be 0..C-1 with every class in both splits")


def channel_stats(x: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of (N, H, W, C) images on the 0..1 scale (value / 255), as the
    normaliser takes them; a constant channel gets std 1. Summed in slices (float64), never a
    float copy of the whole set."""
    c = x.shape[-1]
    total, total_sq, n = np.zeros(c), np.zeros(c), 0
    for i in range(0, len(x), _CHUNK):
        part = x[i:i + _CHUNK].reshape(-1, c).astype(np.float64) / 255.0
        total += part.sum(0)
        total_sq += np.square(part).sum(0)
        n += len(part)
    mean = total / n
    std = np.sqrt(np.maximum(total_sq / n - mean ** 2, 0.0))
    std = np.where(std > 1e-12, std, 1.0)
    return tuple(float(m) for m in mean), tuple(float(s) for s in std)


# ==== npz =========================================================================================

def _load_npz(path: Path) -> ArrayDataset:
    if not path.is_file():
        raise DataError(f"npz:{path}: no such file" if not path.exists()
                        else f"npz:{path}: is a folder, not an .npz file (use folder:{path})")
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise DataError(f"npz:{path}: not a readable .npz file ({type(exc).__name__}: "
                        f"{str(exc)[:100]})") from None
    name = f"npz:{path}"
    if {"x_train", "y_train", "x_test", "y_test"} <= arrays.keys():
        xs = [arrays["x_train"], arrays["x_test"]]
        ys = [arrays["y_train"], arrays["y_test"]]
        split = "given"
    elif {"x", "y"} <= arrays.keys():
        tr, te = stratified_split(_labels(arrays["y"], name, "y"))
        xs, ys = [arrays["x"][tr], arrays["x"][te]], [arrays["y"][tr], arrays["y"][te]]
        split = f"stratified, test fraction {TEST_FRACTION:g}, seed {SPLIT_SEED}"
    else:
        raise DataError(f"{name}: needs the arrays x_train, y_train, x_test, y_test (or x and y); "
                        f"it has {', '.join(sorted(arrays)) or 'none'}")
    y_train, y_test = (_labels(y, name, k) for y, k in zip(ys, ("y_train", "y_test")))
    x_train, x_test = (_samples(x, name, k) for x, k in zip(xs, ("x_train", "x_test")))
    n_classes = int(max(y_train.max(initial=-1), y_test.max(initial=-1))) + 1
    names = _class_names(arrays.get("class_names"), n_classes, name)
    return ArrayDataset(name, x_train, y_train, x_test, y_test, names,
                        {"path": str(path), "sha256": file_sha256(path), "split": split})


def _labels(y: np.ndarray, name: str, key: str) -> np.ndarray:
    if y.dtype.kind not in "iu":
        if y.dtype.kind == "f" and np.isfinite(y).all() and (y == np.round(y)).all():
            return y.astype(np.int64)
        raise DataError(f"{name}: {key} must hold whole-number class labels, got dtype {y.dtype}")
    return y.astype(np.int64)


def _samples(x: np.ndarray, name: str, key: str) -> np.ndarray:
    """(N, L) float32 signals, or images as (N, H, W, C): uint8 kept, other numbers float32."""
    if x.dtype.kind not in "iuf" or x.dtype == np.bool_:
        raise DataError(f"{name}: {key} must hold numbers, got dtype {x.dtype}")
    if x.ndim == 2:
        return np.ascontiguousarray(x, dtype=np.float32)
    if x.ndim == 3:
        x = x[..., None]                                  # (N, H, W) -> (N, H, W, 1)
    elif x.ndim == 4:
        if not 1 <= x.shape[1] <= 4:
            raise DataError(f"{name}: {key} has shape {x.shape}; images are (N, C, H, W) with 1 "
                            f"to 4 channels, or (N, H, W)")
        x = x.transpose(0, 2, 3, 1)                       # (N, C, H, W) -> (N, H, W, C)
    else:
        raise DataError(f"{name}: {key} has shape {x.shape}; expected (N, L) signals, (N, H, W) "
                        f"or (N, C, H, W) images")
    return np.ascontiguousarray(x, dtype=np.uint8 if x.dtype == np.uint8 else np.float32)


def _class_names(given: np.ndarray | None, n_classes: int, name: str) -> list[str]:
    if given is None:
        return [str(c) for c in range(n_classes)]
    names = [str(v) for v in np.asarray(given).reshape(-1)]
    if len(names) != n_classes:
        raise DataError(f"{name}: class_names has {len(names)} names but the labels make "
                        f"{n_classes} classes")
    return names


# ==== folder of images ============================================================================

def _load_folder(root: Path) -> ArrayDataset:
    name = f"folder:{root}"
    if not root.is_dir():
        raise DataError(f"{name}: no such folder" if not root.exists()
                        else f"{name}: is a file, not a folder (an .npz? use npz:{root})")
    if (root / "train").is_dir() and (root / "test").is_dir():
        classes = _class_folders(root / "train", name)
        test_classes = _class_folders(root / "test", name)
        if test_classes != classes:
            odd = sorted(set(classes) ^ set(test_classes))[0]
            raise DataError(f"{name}: train/ and test/ must hold the same class folders; "
                            f"{odd!r} is in only one")
        train_files = _files(root / "train", classes, name)
        test_files = _files(root / "test", classes, name)
        split = "given"
    else:
        classes = _class_folders(root, name)
        files = _files(root, classes, name)
        tr, te = stratified_split(np.array([c for c, _ in files]))
        train_files, test_files = [files[i] for i in tr], [files[i] for i in te]
        split = f"stratified, test fraction {TEST_FRACTION:g}, seed {SPLIT_SEED}"
    every = [p for _, p in train_files + test_files]
    mode, size = _common_format(every, name)
    x_train, x_test = (read_images([p for _, p in fs], mode, size) for fs in
                       (train_files, test_files))
    y_train, y_test = (np.array([c for c, _ in fs], dtype=np.int64) for fs in
                       (train_files, test_files))
    return ArrayDataset(name, x_train, y_train, x_test, y_test, classes,
                        {"path": str(root), "sha256": files_sha256(root, every), "split": split})


def _class_folders(where: Path, name: str) -> list[str]:
    classes = sorted(p.name for p in where.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise DataError(f"{name}: {where} holds no class folders; put each class's images in "
                        f"{where}/<class>/")
    return classes


def _files(where: Path, classes: list[str], name: str) -> list[tuple[int, Path]]:
    """(class id, image path) for every image, class by class, each class's files sorted."""
    found = []
    for c, cls in enumerate(classes):
        images = sorted(p for p in (where / cls).iterdir()
                        if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        if not images:
            raise DataError(f"{name}: class folder {where / cls} holds no .png or .jpg images")
        found += [(c, p) for p in images]
    return found


def _common_format(paths: list[Path], name: str) -> tuple[str, tuple[int, int]]:
    """'L' if every image is grayscale, else 'RGB'; and the one size they all share. Reads the
    headers only."""
    from PIL import Image, UnidentifiedImageError

    modes, size = set(), None
    for p in paths:
        try:
            with Image.open(p) as im:
                modes.add(im.mode)
                if size is None:
                    size, first = im.size, p
                elif im.size != size:
                    raise DataError(f"{name}: {p} is {im.size[0]}x{im.size[1]} pixels but {first} "
                                    f"is {size[0]}x{size[1]}; every image must have one size")
        except (UnidentifiedImageError, OSError) as exc:
            raise DataError(f"{name}: {p} is not a readable image ({type(exc).__name__})") from None
    return ("L" if modes <= set(GRAY_MODES) else "RGB"), size  # type: ignore[return-value]


def read_images(paths: list[Path], mode: str, size: tuple[int, int]) -> np.ndarray:
    """The images as one uint8 (N, H, W, C) array, filled in place."""
    from PIL import Image

    w, h = size
    out = np.empty((len(paths), h, w, 1 if mode == "L" else 3), dtype=np.uint8)
    for i, p in enumerate(paths):
        with Image.open(p) as im:
            out[i] = np.asarray(im.convert(mode)).reshape(h, w, -1)
    return out


# ==== split and identity ==========================================================================

def stratified_split(y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Train and test indices: TEST_FRACTION of each class (at least 1, at most all but 1) to the
    test set, chosen by a shuffle seeded with SPLIT_SEED."""
    rng = np.random.default_rng(SPLIT_SEED)
    train, test = [], []
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        if len(idx) < 2:
            raise DataError(f"class {c} has {len(idx)} sample; splitting off a test set needs at "
                            f"least 2 per class")
        idx = rng.permutation(idx)
        k = min(len(idx) - 1, max(1, round(TEST_FRACTION * len(idx))))
        test.append(idx[:k])
        train.append(idx[k:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def files_sha256(root: Path, paths: list[Path]) -> str:
    """One hash of the folder's images: each one's path below the root and its bytes, in order."""
    h = hashlib.sha256()
    for p in sorted(paths):
        rel = p.relative_to(root).as_posix().encode()
        h.update(len(rel).to_bytes(4, "big") + rel)
        data = p.read_bytes()
        h.update(len(data).to_bytes(8, "big") + data)
    return h.hexdigest()
