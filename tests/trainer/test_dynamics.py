"""Per-class step and epoch sums against a plain per-sample Python computation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tests.tolerance import approx_sum, rel
from trainer.dynamics import StepRecorder, evaluate
from tests.trainer.step_inputs import classifier, features
from trainer.models import cnn1d


def naive_step_rows(logits: torch.Tensor, y: torch.Tensor, n_classes: int
                    ) -> list[dict[str, list[float] | int]]:
    """One dict per class, built sample by sample with math, not tensors: counts, and the list of
    each sum's terms (so a test can bound the float32 sum's error by the terms' magnitudes)."""
    rows = [dict(n=0, loss_sum=[], correct=0, p_true_sum=[], margin_sum=[], pred_count=0)
            for _ in range(n_classes)]
    for z, t in zip(logits.tolist(), y.tolist()):
        m = max(z)
        exps = [math.exp(v - m) for v in z]
        p_true = exps[t] / sum(exps)
        pred = max(range(n_classes), key=lambda k: z[k])
        r = rows[t]
        r["n"] += 1
        r["loss_sum"].append(-math.log(p_true))
        r["correct"] += int(pred == t)
        r["p_true_sum"].append(p_true)
        r["margin_sum"].append(z[t] - max(v for k, v in enumerate(z) if k != t))
        rows[pred]["pred_count"] += 1
    return rows


def test_step_recorder_matches_per_sample_sums() -> None:
    g = torch.Generator().manual_seed(1)
    n_classes = 5
    rec = StepRecorder(n_classes, capacity=4, device=torch.device("cpu"),
                       fc=classifier(n_classes))
    batches = []
    for step in range(3):
        logits = torch.randn(17, n_classes, generator=g) * 3
        y = torch.randint(0, n_classes - 1, (17,), generator=g)  # class 4 never present
        grad = torch.randn(n_classes, 6, generator=g)
        rec.record(step, 1, 0.1 * (step + 1), logits, y, grad, **features(17, n_classes, g))
        batches.append((logits, y, grad))
    cols = rec.drain()
    assert len(cols["step"]) == 3 * n_classes
    for s, (logits, y, grad) in enumerate(batches):
        expected = naive_step_rows(logits, y, n_classes)
        for c in range(n_classes):
            i = s * n_classes + c
            assert cols["step"][i] == s and cols["class_id"][i] == c
            for key, want in expected[c].items():  # counts exact; float32 sums of the terms
                assert cols[key][i] == (approx_sum(want) if isinstance(want, list) else want), \
                    (s, c, key)
            # a float32 norm of 6 entries; the lr is copied, not computed
            assert cols["grad_norm"][i] == pytest.approx(float(grad[c].double().norm()),
                                                         rel=rel(6))
            assert cols["lr"][i] == 0.1 * (s + 1)
    # the absent class still has its row, with n = 0
    assert all(cols["n"][c::n_classes].tolist() == [0, 0, 0] for c in [4])
    assert len(rec) == 0 and float(rec.buf.abs().sum()) == 0.0


def test_grad_norm_is_the_classifier_row_gradient() -> None:
    torch.manual_seed(0)
    model = cnn1d(40, 4)
    x, y = torch.randn(32, 40), torch.randint(0, 4, (32,))
    h, logits = model.forward_features(x)
    logits.retain_grad()
    F.cross_entropy(logits, y).backward()
    rec = StepRecorder(4, 1, torch.device("cpu"), model.fc)
    rec.record(0, 1, 0.1, logits, y, model.fc.weight.grad, h, logits.grad)
    got = rec.drain()["grad_norm"]
    # independent: autograd of the same loss w.r.t. the weight, row by row
    w = model.fc.weight
    (gw,) = torch.autograd.grad(F.cross_entropy(model(x), y), w)
    # the same float32 gradient through two autograd calls: equal up to the norm's round-off and
    # the backward's sum over 32 samples
    assert got == pytest.approx([float(gw[c].double().norm()) for c in range(4)],
                                rel=rel(32 + model.fc.in_features))


def test_evaluate_matches_plain_loop() -> None:
    torch.manual_seed(0)
    model = cnn1d(40, 3).eval()
    x, y = torch.randn(50, 40), torch.tensor([0] * 30 + [1] * 20)  # class 2 absent
    rows = evaluate(model, x, y, 3, batch_size=16)
    with torch.no_grad():
        h, logits = model.forward_features(x)
    expected = naive_step_rows(logits, y, 3)
    for c in range(3):
        assert rows["n"][c] == expected[c]["n"]
        assert rows["correct"][c] == expected[c]["correct"]
        # float32 per-sample values, summed in float64: each term's round-off, not the sum's
        assert rows["loss_sum"][c] == approx_sum(expected[c]["loss_sum"])
        assert rows["p_true_sum"][c] == approx_sum(expected[c]["p_true_sum"])
    norms = h.double().norm(dim=1).numpy()  # float32 norms of D entries, averaged in float64
    d = h.shape[1]
    assert rows["feature_norm"][0] == pytest.approx(norms[:30].mean(), rel=rel(d))
    assert rows["feature_norm"][1] == pytest.approx(norms[30:].mean(), rel=rel(d))
    assert np.isnan(rows["feature_norm"][2])


def test_eval_batch_size_fits_the_device() -> None:
    from trainer.loop import eval_batch_size

    cpu = torch.device("cpu")
    # 3072 * 128 = 393,216 input values per batch, rounded down to a power of two in [64, 1024]
    assert eval_batch_size(cpu, 40) == 1024       # MNIST-1D: 9,830 would fit, capped
    assert eval_batch_size(cpu, 28 * 28) == 256   # 393,216 / 784 = 501.5
    assert eval_batch_size(cpu, 32 * 32 * 3) == 128
    assert eval_batch_size(cpu, 224 * 224 * 3) == 64  # 2.6 would fit: the floor
    assert eval_batch_size(torch.device("cuda"), 32 * 32 * 3) == 4096
