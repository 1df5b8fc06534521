"""Device-side augmentation against torchvision's own transforms, and the GPU fast path.

The reference for crop + flip + normalise is torchvision's PIL pipeline (pad 4 with zeros, crop 32,
horizontal flip, ToTensor, Normalize), applied image by image with the same offsets and coins.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision.transforms.functional as TF
from PIL import Image

from tests.tolerance import rel
from trainer.augment import Augment, crop_flip, normalizer
from trainer.loop import TrainConfig, sync_guard, train
from trainer.sink import MemorySink
from trainer.vision import write_cifar

MEAN, STD = (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)


def torchvision_reference(img: np.ndarray, dy: int, dx: int, flip: bool, pad: int) -> torch.Tensor:
    pil = Image.fromarray(img)
    out = TF.crop(TF.pad(pil, [pad], fill=0), dy, dx, img.shape[0], img.shape[1])
    if flip:
        out = TF.hflip(out)
    return TF.normalize(TF.to_tensor(out), MEAN, STD)


def test_crop_flip_normalize_equals_torchvision() -> None:
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (16, 32, 32, 3), dtype=np.uint8)
    dy, dx = rng.integers(0, 9, 16), rng.integers(0, 9, 16)
    flip = rng.integers(0, 2, 16).astype(bool)
    ours = normalizer(MEAN, STD, torch.device("cpu"))(
        crop_flip(torch.from_numpy(x), torch.from_numpy(dy), torch.from_numpy(dx),
                  torch.from_numpy(flip), 4))
    want = torch.stack([torchvision_reference(x[i], dy[i], dx[i], flip[i], 4) for i in range(16)])
    assert ours.shape == (16, 3, 32, 32)
    # the same float32 (x / 255 - mean) / std, in another order of operations: a few ulps of
    # the largest normalised value
    assert torch.allclose(ours, want, rtol=0, atol=rel(4) * float(want.abs().max()))


def test_single_channel_images() -> None:
    x = torch.arange(2 * 4 * 4, dtype=torch.uint8).view(2, 4, 4, 1)
    out = crop_flip(x, torch.tensor([0, 2]), torch.tensor([1, 2]), torch.tensor([True, False]), 1)
    # image 0: padded by 1, window rows 0..3 / cols 1..4 (row 0 is padding), then mirrored
    assert out[0, ..., 0].tolist() == [[0, 0, 0, 0], [3, 2, 1, 0], [7, 6, 5, 4], [11, 10, 9, 8]]
    # image 1 (16..31): window rows 2..5 / cols 2..5 -> pixels (1..3, 1..3), zero padding after
    assert out[1, ..., 0].tolist() == [[21, 22, 23, 0], [25, 26, 27, 0], [29, 30, 31, 0],
                                       [0, 0, 0, 0]]


def test_normalized_batch_is_channels_last() -> None:
    x = torch.zeros(2, 32, 32, 3, dtype=torch.uint8)
    assert normalizer(MEAN, STD, torch.device("cpu"))(x).is_contiguous(
        memory_format=torch.channels_last)
    assert normalizer(MEAN, STD, torch.device("cpu"), channels_last=False)(x).is_contiguous()


def test_random_offsets_and_coins_are_uniform() -> None:
    """Each image's crop offsets are uniform on 0..8 and its flip a fair coin (RandomCrop(32, 4) and
    RandomHorizontalFlip), read back from images whose pixels encode their column (channel 0) and
    row (channel 1) as index + 1."""
    j = torch.arange(1, 33, dtype=torch.uint8)
    img = torch.stack([j.view(1, 32).expand(32, 32), j.view(32, 1).expand(32, 32)], -1)
    out = Augment("crop-flip")(img.expand(20_000, 32, 32, 2).contiguous(),
                               torch.Generator().manual_seed(0)).long()
    # unflipped, output column k shows input column dx + k - 4 (value dx + k - 3): column 16 holds
    # dx + 13 and column 15 one less; flipped, the two swap
    c15, c16 = out[:, 16, 15, 0], out[:, 16, 16, 0]
    flipped = c16 < c15
    dx = torch.where(flipped, c15, c16) - 13
    dy = out[:, 16, 16, 1] - 13
    for offsets in (dx, dy):
        assert offsets.min() >= 0 and offsets.max() <= 8
        freq = np.bincount(offsets.numpy(), minlength=9) / len(offsets)
        assert freq == pytest.approx([1 / 9] * 9, abs=0.012)  # sd of each share ~0.002
    assert flipped.float().mean().item() == pytest.approx(0.5, abs=0.015)
    assert torch.equal(Augment("none")(img[None], torch.Generator()), img[None])


def write_small_cifar(root: Path, per_class: int = 60) -> Path:
    rng = np.random.default_rng(1)
    y = np.repeat(np.arange(10), per_class)
    x = rng.integers(0, 256, (len(y), 32, 32, 3), dtype=np.uint8)
    yt = np.repeat(np.arange(10), 5)
    xt = rng.integers(0, 256, (len(yt), 32, 32, 3), dtype=np.uint8)
    write_cifar(root, "cifar10", x, y, xt, yt, [f"class{i}" for i in range(10)])
    return root


def test_augmented_runs_repeat_exactly_with_the_same_seed(tmp_path: Path) -> None:
    root = write_small_cifar(tmp_path)
    cols = ("n", "loss_sum", "correct", "margin_sum", "grad_norm")
    runs = []
    for _ in range(2):
        sink = MemorySink()
        train(TrainConfig(dataset="cifar10", data_dir=str(root), ratio=10, batch_size=32,
                          max_steps=6, seed=4, device="cpu"), sink)
        runs.append(sink.table("steps"))
    for c in cols:
        assert np.array_equal(runs[0][c], runs[1][c]), c
    assert runs[0]["n"].reshape(-1, 10).sum(1).tolist() == [32] * 6


def test_sync_guard_catches_a_sync_on_cuda() -> None:
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    with pytest.raises(RuntimeError):
        with sync_guard(True):
            torch.ones(1, device="cuda").item()


@pytest.mark.gpu
@pytest.mark.parametrize("bf16", [False, True])
def test_no_host_sync_inside_the_step_on_cuda(tmp_path: Path, bf16: bool) -> None:
    """CUDA's sync debug mode in "error" around every step after the first: any .item(), .cpu(),
    bincount or host-side check inside a step raises. Augmentation, the loss weights (LDAM-DRW),
    the sampler and the dynamics recorder are all on."""
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    root = write_small_cifar(tmp_path, per_class=200)
    sink = MemorySink()
    result = train(TrainConfig(dataset="cifar10", data_dir=str(root), ratio=10, epochs=3, drw=1,
                               loss="ldam", sampler="square-root", batch_size=64, bf16=bf16,
                               device="cuda", check_sync=True, flush_steps=7), sink)
    assert result.status == "finished" and result.steps == 3 * (sum(
        int(200 * 10 ** (-i / 9) + 1e-9) for i in range(10)) // 64)
    assert (sink.table("steps")["n"].reshape(-1, 10).sum(1) == 64).all()


@pytest.mark.gpu
def test_compiled_model_trains_on_cuda(tmp_path: Path) -> None:
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    root = write_small_cifar(tmp_path)
    result = train(TrainConfig(dataset="cifar10", data_dir=str(root), ratio=10, max_steps=4,
                               batch_size=32, compile=True, device="cuda"), MemorySink())
    assert result.status == "finished" and result.steps == 4


@pytest.mark.slow
def test_bf16_and_compile_run_on_the_cpu(tmp_path: Path) -> None:
    root = write_small_cifar(tmp_path, per_class=20)
    for kw in ({"bf16": True}, {"compile": True}):
        sink = MemorySink()
        result = train(TrainConfig(dataset="cifar10", data_dir=str(root), ratio=2, max_steps=2,
                                   batch_size=16, device="cpu", **kw), sink)
        assert result.status == "finished", kw
        assert np.isfinite(sink.table("steps")["loss_sum"]).all()


def test_gpu_out_of_memory_is_one_line_and_marks_the_run_failed() -> None:
    """An out-of-memory error inside the run (raised here from a hook: no GPU needed) ends the run
    as failed in its sink and reaches the CLI as a one-line DataError."""
    from trainer.data import DataError
    from trainer.loop import Hooks

    class Boom(Hooks):
        def on_epoch(self, epoch: int, summary: dict[str, float]) -> None:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    sink = MemorySink()
    with pytest.raises(DataError, match="ran out of memory.*--batch-size"):
        train(TrainConfig(ratio=10, max_steps=1), sink, Boom())
    assert sink.status == "failed" and "out of memory" in sink.message
