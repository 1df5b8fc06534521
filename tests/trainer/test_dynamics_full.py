"""`--dynamics full`: epoch rows against a plain re-evaluation of the trained model, the per-class
split of the classifier gradient against autograd on each class's own (and the others') loss, the
recording levels through the CLI, and (slow) the same records from two torchrun ranks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tests.conftest import REPO, imbtui, torchrun_train
from tests.tolerance import forward_rel, rel
from trainer.data import dataset_counts, load_dataset, long_tailed_indices
from trainer.dynamics import StepRecorder, classifier_grad_split
from trainer.losses import build_loss
from trainer.loop import DYNAMICS, TrainConfig, train
from trainer.models import cnn1d
from trainer.sink import MemorySink

C = 10


@pytest.fixture(scope="module")
def full_run() -> tuple[MemorySink, object]:
    sink = MemorySink()
    result = train(TrainConfig(ratio=100, epochs=1, max_steps=24, probe_every=8, device="cpu"),
                   sink)
    assert result.status == "finished"
    return sink, result


def plain_class_sums(logits: np.ndarray, h: np.ndarray, y: np.ndarray) -> dict[str, np.ndarray]:
    """Per-class n, correct, CE sum, p_true sum and mean ||h||, in float64 numpy."""
    z = logits.astype(np.float64)
    z = z - z.max(1, keepdims=True)
    p = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    p_true = p[np.arange(len(y)), y]
    out = {k: np.zeros(C) for k in ("n", "correct", "loss_sum", "p_true_sum", "feature_norm")}
    norms = np.linalg.norm(h.astype(np.float64), axis=1)
    for c in range(C):
        m = y == c
        out["n"][c] = m.sum()
        out["correct"][c] = (logits[m].argmax(1) == c).sum()
        out["loss_sum"][c] = -np.log(p_true[m]).sum()
        out["p_true_sum"][c] = p_true[m].sum()
        out["feature_norm"][c] = norms[m].mean()
    return out


def test_epoch_rows_match_a_plain_reevaluation_of_the_model(full_run) -> None:
    sink, result = full_run
    ds = load_dataset("mnist1d")
    idx = long_tailed_indices(ds.y_train, dataset_counts(ds, 100), 0)
    epochs = sink.table("epochs")
    model = result.model.eval()
    for split, x, y in (("train", ds.x_train[idx], ds.y_train[idx]),
                        ("test", ds.x_test, ds.y_test)):
        with torch.no_grad():
            h, logits = model.forward_features(torch.from_numpy(x))
        want = plain_class_sums(logits.numpy(), h.numpy(), y)
        rows = (epochs["epoch"] == 1) & (epochs["split"] == split)
        assert epochs["class_id"][rows].tolist() == list(range(C))
        # the trainer's eval pass runs the same float32 forward in other batch sizes (other
        # kernels): each logit and feature is good to the forward's round-off
        for key, values in want.items():
            tol = 0 if key in ("n", "correct") else forward_rel(model)
            np.testing.assert_allclose(epochs[key][rows], values, rtol=tol, err_msg=key)
        w = model.fc.weight.detach().double().numpy()  # a float32 norm of D entries
        np.testing.assert_allclose(epochs["weight_norm"][rows], np.sqrt((w * w).sum(1)),
                                   rtol=rel(w.shape[1]))
        # copied from the float32 parameter, not computed
        np.testing.assert_array_equal(epochs["bias"][rows], model.fc.bias.detach().numpy())


# ==== the classifier gradient split ===============================================================

def autograd_row_grads(model, x, y, per_sample_share) -> tuple[np.ndarray, np.ndarray]:
    """For every class c: d(own_c)/dW_c and d(others_c)/dW_c, where own_c is the objective's terms
    of class c's samples and others_c those of every other sample, each its own backward pass."""
    pos, neg = [], []
    for c in range(C):
        for member, out in ((y == c, pos), (y != c, neg)):
            model.zero_grad()
            share = per_sample_share(model(x), y)
            (share * member).sum().backward()
            out.append(model.fc.weight.grad[c].clone())
    return torch.stack(pos).numpy(), torch.stack(neg).numpy()


def ce_share(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits, y, reduction="none") / len(y)


@pytest.mark.parametrize("loss", ["ce", "weighted-ce", "ldam"])
def test_classifier_split_is_the_gradient_of_each_class_own_and_other_loss(loss: str) -> None:
    torch.manual_seed(0)
    counts = [400, 200, 120, 80, 50, 30, 20, 12, 8, 5]
    model = cnn1d(40, C, normed=loss == "ldam").eval()  # eval: BatchNorm per sample, exact shares
    x = torch.randn(48, 40)
    y = torch.cat([torch.randint(0, C - 1, (46,)), torch.tensor([0, 1])])  # class 9 absent
    objective = build_loss(loss, counts, torch.device("cpu"))
    h, logits = model.forward_features(x)
    logits.retain_grad()
    objective(logits, y, 1).backward()
    pos, neg = classifier_grad_split(model.fc, h, logits.grad, y)

    if loss == "ce":
        share = ce_share
    elif loss == "weighted-ce":  # sum_i w_yi l_i / sum_i w_yi, split by sample
        weight = objective.weight

        def share(z, t):
            return weight[t] * F.cross_entropy(z, t, reduction="none") / weight[t].sum()
    else:  # LDAM: the true logit lowered by s * m_y, then a mean CE
        def share(z, t):
            true = F.one_hot(t, C).bool()
            z = z - true * (objective.scale * objective.margin[t])[:, None]
            return F.cross_entropy(z, t, reduction="none") / len(t)

    want_pos, want_neg = autograd_row_grads(model, x, y, share)
    # each entry is a float32 sum over the 48 samples, by another graph in the reference; its
    # error is relative to the gradient's scale, not to the (possibly cancelling) entry
    d = model.fc.in_features
    for got, want in ((pos, want_pos), (neg, want_neg)):
        np.testing.assert_allclose(got.numpy(), want, rtol=0,
                                   atol=rel(48 + d) * np.abs(want).max())
    assert float(pos[9].abs().sum()) == 0.0  # no own samples, no own part

    # the recorder's split (settled at the flush, from the .grad) against the same references
    rec = StepRecorder(C, 1, torch.device("cpu"), model.fc)
    rec.record(0, 1, 0.1, logits, y, model.fc.weight.grad, h, logits.grad)
    cols = rec.drain()
    for key, want in (("grad_pos", want_pos), ("grad_neg", want_neg)):
        np.testing.assert_allclose(cols[key], np.linalg.norm(want.astype(np.float64), axis=1),
                                   rtol=0, atol=rel(48 + 2 * d) * np.abs(want).max() * d ** 0.5)


def test_real_run_split_adds_up_to_the_row_gradient(full_run) -> None:
    steps = full_run[0].table("steps")
    pos, neg, whole = steps["grad_pos"], steps["grad_neg"], steps["grad_norm"]
    # ||pos + neg|| = ||dW_c||: the triangle inequality both ways, up to the float32 round-off of
    # three norms of D entries and the batch's sums behind them
    tol = rel(128 + 3 * full_run[1].model.fc.in_features) * (pos + neg)
    assert np.all(whole <= pos + neg + tol)
    assert np.all(np.abs(pos - neg) <= whole + tol)
    assert np.all(pos[steps["n"] == 0] == 0.0)


# ==== recording levels ============================================================================

def test_full_is_the_default_level() -> None:
    assert TrainConfig().dynamics == "full" and DYNAMICS[0] == "full"


def sql(store: Path, query: str) -> list[dict]:
    return json.loads(imbtui("sql", query, "--format", "json", "--store", str(store)).stdout)


COUNTS = ("SELECT (SELECT count(*) FROM steps) AS steps, (SELECT count(*) FROM epochs) AS epochs, "
          "(SELECT count(*) FROM samples) AS samples, (SELECT count(*) FROM probes) AS probes, "
          "(SELECT count(*) FROM geometry) AS geometry, "
          "(SELECT count(*) FROM geometry_summary) AS summary, "
          "(SELECT count(*) FROM steps WHERE grad_pos IS NULL) AS no_split")


def test_cli_default_records_everything(trained_store: Path) -> None:
    # trained_store: `imbtui train --ratio 100 --epochs 2` (the default level); 77 steps per epoch
    (got,) = sql(trained_store, COUNTS)
    assert got == {"steps": 154 * C, "epochs": 3 * 2 * C, "samples": 154 * 128,
                   "probes": 2 * 2, "geometry": 3 * 2 * C, "summary": 3 * 2, "no_split": 0}


def test_cli_minimal_keeps_only_step_and_epoch_rows(tmp_path: Path) -> None:
    imbtui("train", "--ratio", "100", "--epochs", "1", "--max-steps", "10", "--dynamics",
           "minimal", "--store", str(tmp_path), "-q")
    (got,) = sql(tmp_path, COUNTS)
    assert got == {"steps": 10 * C, "epochs": 2 * 2 * C, "samples": 0, "probes": 0,
                   "geometry": 0, "summary": 0, "no_split": 0}


def test_cli_refuses_an_unknown_level(tmp_path: Path) -> None:
    proc = imbtui("train", "--dynamics", "most", "--store", str(tmp_path), check=False)
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1 and "most" in proc.stderr
    assert "Traceback" not in proc.stderr


# ==== two torchrun ranks record what one process records ==========================================

RUN = ["--ratio", "100", "--model", "mlp", "--epochs", "1", "--max-steps", "30",
       "--batch-size", "128", "--device", "cpu", "-q"]


def _train(cmd: list[str], store: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([*cmd, "-m", "imbtui", "train", *RUN, "--store", str(store)], cwd=REPO,
                            env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


@pytest.mark.slow
def test_two_ranks_record_the_single_process_full_dynamics(tmp_path: Path) -> None:
    """The MLP has no BatchNorm, so two ranks at the same global batch train exactly like one."""
    one, two = tmp_path / "one", tmp_path / "two"
    p1 = _train([sys.executable], one)
    rc, err = torchrun_train(RUN, two)
    assert rc == 0, err
    _, err = p1.communicate(timeout=300)
    assert p1.returncode == 0, err
    queries = {
        "steps": "SELECT step, class_id, grad_pos, grad_neg FROM steps ORDER BY step, class_id",
        "probes": "SELECT step, grp, n, grad_norm, cos_to_batch, cos_other FROM probes "
                  "ORDER BY step, grp",
        "samples": "SELECT step, pos, sample_id, class_id, correct, p_true, loss FROM samples "
                   "ORDER BY step, pos",
        "geometry": "SELECT * EXCLUDE (run_id) FROM geometry ORDER BY epoch, split, class_id",
        "summary": "SELECT * EXCLUDE (run_id) FROM geometry_summary ORDER BY epoch, split",
    }
    for name, q in queries.items():
        a, b = sql(one, q), sql(two, q)
        assert len(a) == len(b) > 0, name
        for ra, rb in zip(a, b):
            assert ra.keys() == rb.keys()
            # 30 steps of float32 sums over the 128-sample batch, added up in another order by
            # the all-reduce: differences reach the values through every step
            tol = rel(30 * 128)
            for k in ra:
                if isinstance(ra[k], float):
                    assert rb[k] == pytest.approx(ra[k], rel=tol, abs=tol), (name, k, ra)
                else:
                    assert rb[k] == ra[k], (name, k, ra)


@pytest.mark.parametrize("normed", [False, True])
def test_split_from_the_classifier_gradient_equals_the_split_from_scratch(normed: bool) -> None:
    # the loop passes the classifier's .grad as `total` and takes neg = total - pos
    torch.manual_seed(2)
    model = cnn1d(40, C, normed=normed).eval()
    x, y = torch.randn(32, 40), torch.randint(0, C, (32,))
    h, logits = model.forward_features(x)
    logits.retain_grad()
    F.cross_entropy(logits, y).backward()
    pos, neg = classifier_grad_split(model.fc, h, logits.grad, y)
    pos2, neg2 = classifier_grad_split(model.fc, h, logits.grad, y, model.fc.weight.grad)
    np.testing.assert_array_equal(pos2.numpy(), pos.numpy())  # the same code path
    # total - pos against d^T phi - pos: two float32 sums over the 32 samples
    np.testing.assert_allclose(neg2.numpy(), neg.numpy(), rtol=0,
                               atol=rel(32 + model.fc.in_features) * np.abs(neg.numpy()).max())


@pytest.mark.parametrize("normed", [False, True], ids=["linear", "cosine"])
@pytest.mark.parametrize("with_grad", [True, False], ids=["grad", "frozen-rows"])
def test_deferred_split_equals_the_split_of_each_step(normed: bool, with_grad: bool) -> None:
    """The loop buffers each step's features, dLoss/dlogits and .grad, and the flush splits all
    the steps at once: the norms equal those of classifier_grad_split step by step (each step's
    own weights; batches of different sizes; two settles in one flush window; a gradient buffer
    that holds fewer steps than the window, so the recorder asks for a flush when it is full)."""
    torch.manual_seed(3)
    model = cnn1d(40, C, normed=normed)
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    rec = StepRecorder(C, 8, torch.device("cpu"), model.fc)
    rec.GRAD_BYTES = 5 * 4 * model.fc.weight.numel() * (2 if normed else 1)  # room for 5 steps
    want = []
    for step, n in enumerate((16, 16, 9, 16, 5)):
        x, y = torch.randn(n, 40), torch.randint(0, C, (n,))
        h, logits = model.forward_features(x)
        logits.retain_grad()
        opt.zero_grad()
        F.cross_entropy(logits, y).backward()
        grad = model.fc.weight.grad if with_grad else None
        pos, neg = classifier_grad_split(model.fc, h, logits.grad, y, grad)
        total = grad if with_grad else pos + neg
        want.append([total.norm(dim=1), pos.norm(dim=1), neg.norm(dim=1)])
        assert not rec.full
        rec.record(step, 1, 0.1, logits, y, grad, h, logits.grad)
        if step == 2:
            rec.settle()  # a settle within the window: the later steps are split on their own
        opt.step()  # the next step's weights (and a cosine classifier's rows) differ
    assert rec.full  # the gradient buffer holds 5 steps
    cols = rec.drain()
    for k, (total, pos, neg) in enumerate(want):
        rows = slice(k * C, (k + 1) * C)
        for name, ref in (("grad_norm", total), ("grad_pos", pos), ("grad_neg", neg)):
            got = cols[name][rows]
            tol = rel(16 + model.fc.in_features) * float(ref.abs().max())
            np.testing.assert_allclose(got, ref.numpy(), rtol=0, atol=tol, err_msg=(k, name))
    assert np.isfinite(cols["grad_neg"]).all() and len(rec) == 0 and rec.settled == 0


@pytest.mark.parametrize("changed", ["dlogits", "grad"])
def test_recorder_keeps_no_graph_and_refuses_a_step_changed_in_place(changed: str) -> None:
    """A step's logits, features, dLoss/dlogits and classifier gradient are kept by reference
    until the flush: the recorder must not keep the autograd graph alive through them, and a kept
    tensor that someone changes in place before the flush (a second backward pass accumulating
    into .grad, an optimiser that scales the gradient in place) fails the settle instead of giving
    a wrong statistic."""
    torch.manual_seed(4)
    model = cnn1d(40, C)
    x, y = torch.randn(16, 40), torch.randint(0, C, (16,))
    h, logits = model.forward_features(x)
    logits.retain_grad()
    F.cross_entropy(logits, y).backward()
    rec = StepRecorder(C, 4, torch.device("cpu"), model.fc)
    rec.record(0, 1, 0.1, logits, y, model.fc.weight.grad, h, logits.grad)
    assert all(t.grad_fn is None and not t.requires_grad for t in rec.kept[0])
    with torch.no_grad():
        (logits.grad if changed == "dlogits" else model.fc.weight.grad).mul_(2)
    with pytest.raises(RuntimeError, match="changed in place"):
        rec.settle()
