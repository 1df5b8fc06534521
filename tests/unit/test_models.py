"""Models: ResNet-32 as the long-tailed CIFAR literature builds it, the small image CNN, the cosine
classifier of LDAM, and the shape checks of build_model."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from tests.tolerance import forward_rel, rel
from trainer.data import DataError
from trainer.models import BasicBlock, NormedLinear, build_model, n_params


def resnet32_params_by_hand(n_classes: int) -> int:
    """Count ResNet-32's parameters from its description: a 3x3 stem conv to 16 channels, 3 stages of
    5 basic blocks at 16/32/64 channels (two bias-free 3x3 convs + two BatchNorms each, parameter-free
    option-A shortcuts), a 64 -> C linear layer."""
    def conv(c_in: int, c_out: int) -> int:
        return 9 * c_in * c_out

    def bn(c: int) -> int:
        return 2 * c

    total = conv(3, 16) + bn(16)
    c_in = 16
    for c_out in (16, 32, 64):
        for _ in range(5):
            total += conv(c_in, c_out) + bn(c_out) + conv(c_out, c_out) + bn(c_out)
            c_in = c_out
    return total + 64 * n_classes + n_classes


@pytest.mark.parametrize("n_classes", [10, 100])
def test_resnet32_has_the_published_size(n_classes: int) -> None:
    model = build_model("resnet32", (32, 32, 3), n_classes)
    assert n_params(model) == resnet32_params_by_hand(n_classes)
    if n_classes == 10:
        assert abs(n_params(model) - 0.46e6) < 0.01e6  # "~0.46 M parameters" (Cao et al. 2019)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) + 1 == 32  # 31 conv layers + the classifier: 32 weighted layers
    blocks = [m for m in model.modules() if isinstance(m, BasicBlock)]
    assert [b.conv2.out_channels for b in blocks] == [16] * 5 + [32] * 5 + [64] * 5


def test_resnet32_shapes_and_channels_last() -> None:
    model = build_model("resnet32", (32, 32, 3), 10).eval()
    x = torch.randn(4, 3, 32, 32)
    h, logits = model.forward_features(x)
    assert h.shape == (4, 64) and logits.shape == (4, 10)
    cl = model.to(memory_format=torch.channels_last)
    with torch.no_grad():
        same = cl(x.contiguous(memory_format=torch.channels_last))
    # the same float32 forward through other (channels-last) kernels
    assert torch.allclose(same, logits, rtol=0,
                          atol=forward_rel(model) * float(logits.detach().abs().max()))


def test_option_a_shortcut_subsamples_and_zero_pads() -> None:
    block = BasicBlock(16, 32, stride=2)
    x = torch.randn(2, 16, 8, 8)
    s = block.shortcut(x)
    assert s.shape == (2, 32, 4, 4)
    assert torch.equal(s[:, 8:24], x[:, :, ::2, ::2])  # the input channels sit in the middle
    assert torch.count_nonzero(s[:, :8]) == 0 and torch.count_nonzero(s[:, 24:]) == 0


def test_small_cnn_for_28x28_images() -> None:
    model = build_model("cnn", (28, 28, 1), 10)
    h, logits = model.forward_features(torch.randn(3, 1, 28, 28))
    assert h.shape == (3, 128) and logits.shape == (3, 10)
    assert n_params(model) < 150_000


def test_normed_linear_is_scaled_cosine() -> None:
    torch.manual_seed(0)
    fc = NormedLinear(2, 2, scale=30.0)
    with torch.no_grad():
        fc.weight.copy_(torch.tensor([[3.0, 0.0], [1.0, 1.0]]))
    x = torch.tensor([[2.0, 0.0], [0.0, 5.0]])
    # cos(x, w): x0 = e1 -> (1, 1/sqrt2); x1 = e2 -> (0, 1/sqrt2)
    want = 30.0 * torch.tensor([[1.0, 1 / math.sqrt(2)], [0.0, 1 / math.sqrt(2)]])
    assert torch.allclose(fc(x), want, rtol=0, atol=30.0 * rel(2))  # 30 x a float32 2-term cosine
    assert fc.bias is None


def test_ldam_models_get_the_cosine_classifier() -> None:
    assert isinstance(build_model("resnet32", (32, 32, 3), 10, normed=True).fc, NormedLinear)
    assert isinstance(build_model("cnn1d", (40,), 10, normed=True).fc, NormedLinear)
    assert type(build_model("cnn", (28, 28, 1), 10).fc) is nn.Linear


@pytest.mark.parametrize("name, shape, needle", [
    ("resnet32", (40,), "needs image inputs"),
    ("cnn", (40,), "needs image inputs"),
    ("cnn1d", (32, 32, 3), "needs 1D inputs"),
    ("vgg", (32, 32, 3), "unknown model 'vgg'"),
])
def test_model_that_cannot_take_the_data_is_refused(name: str, shape: tuple, needle: str) -> None:
    with pytest.raises(DataError, match=needle):
        build_model(name, shape, 10)
