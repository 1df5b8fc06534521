"""Gradient probes against separate backward passes on masked losses.

A group's loss is its samples' terms of the objective (for a mean: the group's sum over the batch
size), so the majority's and the minority's add up to the batch loss. The reference here builds each
masked loss from scratch, runs its own forward and backward, and compares norms and cosines.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tests.tolerance import cos_tol, rel
from trainer.dynamics import GradientProbe
from trainer.losses import build_loss
from trainer.loop import TrainConfig, train
from trainer.models import cnn1d
from trainer.sink import MemorySink

C = 10
MINORITY = torch.arange(C) >= 5  # classes 5..9


def flat_grad(model: torch.nn.Module, loss: torch.Tensor) -> np.ndarray:
    model.zero_grad()
    loss.backward()
    return torch.cat([p.grad.reshape(-1) for p in model.parameters()]).double().numpy()


def cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


@pytest.mark.parametrize("loss_name", ["ce", "weighted-ce"])
def test_probe_matches_backward_passes_on_masked_losses(loss_name: str) -> None:
    torch.manual_seed(0)
    model = cnn1d(40, C).train()  # train mode: BatchNorm couples the samples of the batch
    x = torch.randn(64, 40)
    y = torch.cat([torch.randint(0, C, (60,)), torch.tensor([9, 9, 0, 0])])
    counts = [500, 300, 200, 120, 80, 50, 30, 20, 12, 8]
    objective = build_loss(loss_name, counts, torch.device("cpu"))

    # what the loop does: one forward, backward keeping the graph, then the probe
    logits = model(x)
    logits.retain_grad()
    objective(logits, y, 1).backward(retain_graph=True)
    step_grad = torch.cat([p.grad.reshape(-1) for p in model.parameters()]).clone()
    probe = GradientProbe(MINORITY, 4, torch.device("cpu"))
    probe.record(7, 1, logits, y, list(model.parameters()))
    after = torch.cat([p.grad.reshape(-1) for p in model.parameters()])
    assert torch.equal(after, step_grad)  # the probe never touches .grad (the optimiser's input)
    cols = probe.drain()

    # the reference: each group's masked loss, a fresh forward and backward of its own
    def share(member: torch.Tensor) -> torch.Tensor:
        z = model(x)
        per = F.cross_entropy(z, y, reduction="none")
        if loss_name == "ce":
            return (per * member).sum() / len(y)
        w = objective.weight[y]
        return (w * per * member).sum() / w.sum()

    minor = MINORITY[y]
    g_maj, g_min = flat_grad(model, share(~minor)), flat_grad(model, share(minor))
    # Tolerances: every gradient entry is a float32 sum over the 64 samples (and, before the
    # classifier, over the layer's fan-in), reached by different backward graphs here and in the
    # probe; the norms and cosines then sum P squares / products.
    p_count = sum(p.numel() for p in model.parameters())
    fan = 64 + max(p.shape[-1] for p in model.parameters() if p.dim() > 1)
    with torch.no_grad():  # the two shares add up to the batch loss (sums over 64 samples)
        assert float(share(~minor) + share(minor)) == pytest.approx(
            float(objective(model(x), y, 1)), rel=rel(64))
    g_all = flat_grad(model, objective(model(x), y, 1))
    scale = np.abs(g_all).max()  # an entry's error is relative to the gradient's size, not its own
    np.testing.assert_allclose(g_maj + g_min, g_all, rtol=0, atol=rel(fan) * scale)

    assert cols["step"].tolist() == [7, 7] and cols["grp"] == ["majority", "minority"]
    assert cols["n"].tolist() == [int((~minor).sum()), int(minor.sum())]
    assert cols["grad_norm"] == pytest.approx([np.linalg.norm(g_maj), np.linalg.norm(g_min)],
                                              rel=rel(fan + p_count))
    tol = cos_tol(fan + p_count)
    assert cols["cos_to_batch"] == pytest.approx([cos(g_maj, g_all), cos(g_min, g_all)], abs=tol)
    assert cols["cos_other"] == pytest.approx([cos(g_maj, g_min)] * 2, abs=tol)


def test_a_group_absent_from_the_batch_gives_null_cosines() -> None:
    torch.manual_seed(1)
    model = cnn1d(40, C)
    x, y = torch.randn(16, 40), torch.randint(0, 5, (16,))  # majority classes only
    logits = model(x)
    logits.retain_grad()
    F.cross_entropy(logits, y).backward(retain_graph=True)
    probe = GradientProbe(MINORITY, 1, torch.device("cpu"))
    probe.record(0, 1, logits, y, list(model.parameters()))
    cols = probe.drain()
    assert cols["n"].tolist() == [16, 0]
    assert cols["grad_norm"][1] == 0.0  # exactly zero: the group's gradient is masked out
    # the majority's gradient is the whole batch's: a cosine of 1 up to the float32 round-off of
    # two backward passes, and never above 1 (computed in float64 and clamped)
    p_count = sum(p.numel() for p in model.parameters())
    assert 1.0 - cos_tol(p_count) <= cols["cos_to_batch"][0] <= 1.0
    assert cols["cos_to_batch"][1] is None
    assert cols["cos_other"] == [None, None]


def test_real_run_probes_every_k_steps() -> None:
    sink = MemorySink()
    train(TrainConfig(ratio=100, epochs=1, max_steps=25, probe_every=6, device="cpu"), sink)
    probes, steps = sink.table("probes"), sink.table("steps")
    assert probes["step"].tolist() == [0, 0, 6, 6, 12, 12, 18, 18, 24, 24]
    assert list(probes["grp"]) == ["majority", "minority"] * 5
    # each probe's two groups count the batch, as the step rows of the same step do
    minority = np.asarray(sink.table("classes")["grp"]) == "minority"
    for s in (0, 6, 12, 18, 24):
        at = steps["step"] == s
        n_min = int(steps["n"][at][minority].sum())
        assert probes["n"][probes["step"] == s].tolist() == [128 - n_min, n_min]
    assert np.all(np.asarray(probes["grad_norm"], dtype=float) > 0)
