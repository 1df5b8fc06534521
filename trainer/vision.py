"""Image datasets through torchvision: CIFAR-10, CIFAR-100, MNIST and Fashion-MNIST.

Each is read by torchvision's own dataset class from torchvision's own on-disk layout under the data
folder (downloaded there by torchvision on first use) and handed to the loop as whole uint8 arrays
(N, H, W, C): the loop keeps them on the device as uint8 and normalises each batch there.

Fashion-MNIST is also found where Debian's `dataset-fashion-mnist` package installs the original idx
files (/usr/share/datasets/fashion-mnist): they are unpacked once into the torchvision layout, with
no download.
"""

from __future__ import annotations

import contextlib
import gzip
import os
import pickle
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from trainer.data import ArrayDataset, DataError, cache_dir

OFFLINE_ENV = "IMBTUI_OFFLINE"  # set to 1: never try to download, fail with where to put the files
DATA_ENV = "IMBTUI_DATA"
SYSTEM_DIRS = {"fashion-mnist": Path("/usr/share/datasets/fashion-mnist")}


@dataclass(frozen=True)
class ImageSpec:
    cls_name: str                # torchvision.datasets class
    folder: str                  # where that class looks, relative to the data folder
    files: tuple[str, ...]       # what must be there
    url: str                     # where torchvision downloads it from (for the error message)
    mean: tuple[float, ...]      # per-channel normalisation, on the 0..1 scale
    std: tuple[float, ...]


_CIFAR_MEAN, _CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)  # as Cao et al. 2019
_IDX = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
        "t10k-labels-idx1-ubyte")

IMAGE_DATASETS: dict[str, ImageSpec] = {
    "cifar10": ImageSpec("CIFAR10", "cifar-10-batches-py",
                         ("batches.meta", *(f"data_batch_{i}" for i in range(1, 6)), "test_batch"),
                         "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
                         _CIFAR_MEAN, _CIFAR_STD),
    "cifar100": ImageSpec("CIFAR100", "cifar-100-python", ("meta", "train", "test"),
                          "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
                          _CIFAR_MEAN, _CIFAR_STD),
    "mnist": ImageSpec("MNIST", "MNIST/raw", _IDX, "https://ossci-datasets.s3.amazonaws.com/mnist/",
                       (0.1307,), (0.3081,)),
    "fashion-mnist": ImageSpec("FashionMNIST", "FashionMNIST/raw", _IDX,
                               "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
                               (0.2860,), (0.3530,)),
}


def data_root(data_dir: str | os.PathLike[str] | None = None) -> Path:
    """--data-dir, else $IMBTUI_DATA, else the `data` folder of the cache."""
    if data_dir:
        return Path(data_dir).expanduser()
    if env := os.environ.get(DATA_ENV):
        return Path(env).expanduser()
    return cache_dir() / "data"


def load_image_dataset(name: str, data_dir: str | os.PathLike[str] | None = None) -> ArrayDataset:
    spec = IMAGE_DATASETS[name]
    root = data_root(data_dir)
    if not _present(spec, root) and name in SYSTEM_DIRS:
        _unpack_system_copy(SYSTEM_DIRS[name], root / spec.folder)
    if not _present(spec, root):
        _download(name, spec, root)
    train, test = (_open(name, spec, root, train=t) for t in (True, False))
    x_train, y_train = _arrays(train)
    x_test, y_test = _arrays(test)
    return ArrayDataset(name, x_train, y_train, x_test, y_test, [str(c) for c in train.classes],
                        {"root": str(root), "mean": spec.mean, "std": spec.std})


def _present(spec: ImageSpec, root: Path) -> bool:
    return all((root / spec.folder / f).is_file() for f in spec.files)


def _missing_message(name: str, spec: ImageSpec, root: Path, why: str) -> str:
    if spec.cls_name.startswith("CIFAR"):
        get = f"download {spec.url} and unpack it into {root}"
    else:
        get = f"download the four idx .gz files from {spec.url} and gunzip them into that folder"
    if name in SYSTEM_DIRS:
        get += f", or `apt-get install dataset-{name}`"
    return (f"{name} is not in {root / spec.folder} and {why}: {get}; or pass --data-dir FOLDER "
            f"that holds {spec.folder}/")


def _download(name: str, spec: ImageSpec, root: Path) -> None:
    """torchvision's own download (it verifies the archive's md5); any failure becomes one line."""
    if os.environ.get(OFFLINE_ENV, "") not in ("", "0"):
        raise DataError(_missing_message(name, spec, root, f"{OFFLINE_ENV} forbids downloading"))
    cls = _torchvision_class(spec)
    try:
        root.mkdir(parents=True, exist_ok=True)
        with contextlib.redirect_stdout(sys.stderr):  # torchvision prints progress to stdout
            for train in (True, False):
                cls(str(root), train=train, download=True)
    except Exception as exc:  # URLError, OSError, RuntimeError (md5 mismatch): say what and where
        # torchvision's MNIST stacks one "Tried <mirror>, got: <error>" per mirror: keep the last
        lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
        reason = lines[-1] if lines else type(exc).__name__
        raise DataError(_missing_message(name, spec, root,
                                         f"downloading it failed ({reason})")) from None


def _unpack_system_copy(src: Path, dest: Path) -> None:
    """Unpack the .gz idx files of a system package into torchvision's raw folder, atomically."""
    names = [f"{f}.gz" for f in _IDX]
    if not all((src / n).is_file() for n in names):
        return
    dest.mkdir(parents=True, exist_ok=True)
    for n in names:
        target = dest / n[:-3]
        if target.is_file():
            continue
        tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
        with gzip.open(src / n, "rb") as fin, open(tmp, "wb") as fout:
            shutil.copyfileobj(fin, fout)
        os.replace(tmp, target)


def _torchvision_class(spec: ImageSpec) -> type:
    from torchvision import datasets

    base = getattr(datasets, spec.cls_name)
    if not spec.cls_name.startswith("CIFAR"):
        return base
    # torchvision md5-checks every CIFAR batch on each load (MNIST: presence only). Check presence
    # the same way MNIST does; the download itself still verifies the archive's md5.
    return type(spec.cls_name, (base,), {
        "train_list": [[f, None] for f, _ in base.train_list],
        "test_list": [[f, None] for f, _ in base.test_list],
        "meta": {**base.meta, "md5": None},
    })


def _open(name: str, spec: ImageSpec, root: Path, train: bool):
    cls = _torchvision_class(spec)
    try:
        return cls(str(root), train=train, download=False)
    except Exception as exc:  # a truncated or foreign file: name it rather than show a traceback
        raise DataError(f"{name} files in {root / spec.folder} could not be read "
                        f"({type(exc).__name__}: {str(exc)[:120]}); delete them to download "
                        f"again") from None


def _arrays(ds) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(ds.data, dtype=np.uint8)
    if x.ndim == 3:  # MNIST-style (N, H, W): add the channel axis
        x = x[..., None]
    y = np.asarray(ds.targets, dtype=np.int64)
    return np.ascontiguousarray(x), y


# ==== writing torchvision's formats (synthetic data for tests and benchmarks) =====================

def write_cifar(root: Path, name: str, x_train: np.ndarray, y_train: np.ndarray,
                x_test: np.ndarray, y_test: np.ndarray, classes: list[str]) -> Path:
    """Write uint8 (N, 32, 32, 3) images as the pickled batches torchvision's CIFAR classes read."""
    spec = IMAGE_DATASETS[name]
    folder = Path(root) / spec.folder
    folder.mkdir(parents=True, exist_ok=True)
    label_key = "labels" if name == "cifar10" else "fine_labels"

    def dump(fname: str, obj: dict) -> None:
        with open(folder / fname, "wb") as f:
            pickle.dump(obj, f, protocol=2)

    def batch(x: np.ndarray, y: np.ndarray) -> dict:
        flat = np.ascontiguousarray(x.transpose(0, 3, 1, 2)).reshape(len(x), -1)  # CHW rows
        return {"data": flat.astype(np.uint8), label_key: [int(v) for v in y]}

    if name == "cifar10":
        parts = np.array_split(np.arange(len(y_train)), 5)
        for i, p in enumerate(parts, 1):
            dump(f"data_batch_{i}", batch(x_train[p], y_train[p]))
        dump("test_batch", batch(x_test, y_test))
        dump("batches.meta", {"label_names": classes})
    else:
        dump("train", batch(x_train, y_train))
        dump("test", batch(x_test, y_test))
        dump("meta", {"fine_label_names": classes})
    return folder


def write_idx(path: Path, array: np.ndarray) -> None:
    """An uint8 array as an idx file (the MNIST format: magic 0x08 = ubyte, then big-endian dims)."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(
        int(d).to_bytes(4, "big") for d in array.shape)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_bytes(header + array.tobytes())


def write_mnist(root: Path, name: str, x_train: np.ndarray, y_train: np.ndarray,
                x_test: np.ndarray, y_test: np.ndarray) -> Path:
    """Write uint8 (N, 28, 28) images and labels as the raw idx files torchvision's MNIST reads."""
    folder = Path(root) / IMAGE_DATASETS[name].folder
    for prefix, x, y in (("train", x_train, y_train), ("t10k", x_test, y_test)):
        write_idx(folder / f"{prefix}-images-idx3-ubyte", x)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte", y)
    return folder
