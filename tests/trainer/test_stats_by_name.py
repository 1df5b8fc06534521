"""Statistics are addressed by name, never by column position (DESIGN.md, "The trainer").

Each recording buffer is built again with its statistics in another order -- a recorder given a
permuted `stats`, or the module's tuple of names monkeypatched -- and what it drains must be the
same values under the same names, bit for bit, as with the usual order. Code that goes back to a
position (`row[:, 6]`, `flat[:, :5]`, `a[:, 4]`) writes or reads the wrong statistic under a
permuted order, and these tests fail.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from trainer import dynamics
from trainer.dynamics import (PROBE_STATS, STEP_STATS, GradientProbe, SampleRecorder, Stats,
                              StepRecorder, classifier_grad_split, evaluate_features)
from tests.tolerance import rel
from tests.trainer.step_inputs import DIM, classifier, features
from trainer.models import cnn1d

C = 5
FC = classifier(C)
# orders chosen so that every group of names the code handles together is split up, reversed or
# moved: the by-true-class sums, pred_count, and the three gradient norms
STEP_ORDERS = [
    tuple(reversed(STEP_STATS)),
    ("grad_neg", "n", "pred_count", "margin_sum", "grad_norm", "correct", "p_true_sum",
     "grad_pos", "loss_sum"),
]


def same(a: dict, b: dict) -> None:
    """Same names, same values (NaN equal to NaN), same dtypes."""
    assert set(a) == set(b)
    for k, v in a.items():
        x, y = np.asarray(v), np.asarray(b[k])
        assert x.dtype == y.dtype, k
        if x.dtype == object:
            assert x.tolist() == y.tolist(), k
        else:
            np.testing.assert_array_equal(x, y, err_msg=k)


def step_batches(n: int = 4):
    g = torch.Generator().manual_seed(3)
    out = []
    for step in range(n):
        logits = torch.randn(23, C, generator=g) * 3
        y = torch.randint(0, C - 1, (23,), generator=g)  # the last class never present
        fc_grad = torch.randn(C, DIM, generator=g)
        # both cases the loop can hand over: the classifier's gradient, or None (rows that do not
        # train; the recorder computes the gradient they would get)
        out.append((step, logits, y, fc_grad if step % 2 == 0 else None, features(23, C, g)))
    return out


def drain_steps(rec: StepRecorder, batches) -> dict:
    for step, logits, y, fc_grad, inputs in batches:
        rec.record(step, 1, 0.1, logits, y, fc_grad, **inputs)
    return rec.drain()


# ==== the helper ==================================================================================

def test_stats_give_a_view_for_names_side_by_side_and_positions_otherwise() -> None:
    cols = Stats(("a", "b", "c", "d"))
    assert cols["c"] == 2 and len(cols) == 4
    assert cols.at("b", "c") == slice(1, 3)
    assert cols.at("c", "b") == [2, 1] and cols.at("a", "c") == [0, 2]
    buf = torch.zeros(3, 4)
    cols.index_add_(buf, ("d", "a"), torch.tensor([0, 2, 0]), torch.tensor([[1., 2.], [3., 4.],
                                                                            [5., 6.]]))
    assert cols.of(buf, "d").tolist() == [6.0, 0.0, 3.0]
    assert cols.of(buf, "a").tolist() == [8.0, 0.0, 4.0]
    assert float(cols.of(buf, "b").abs().sum() + cols.of(buf, "c").abs().sum()) == 0.0
    buf[:, cols.at("c", "a")] = torch.tensor([7.0, 9.0])  # assignment through positions writes
    assert cols.of(buf, "c").tolist() == [7.0] * 3 and cols.of(buf, "a").tolist() == [9.0] * 3
    with pytest.raises(ValueError):
        Stats(("a", "a"))


# ==== per step ====================================================================================

@pytest.mark.parametrize("order", STEP_ORDERS)
def test_step_recorder_in_another_order_drains_the_same_columns(order: tuple[str, ...]) -> None:
    batches = step_batches()
    want = drain_steps(StepRecorder(C, 8, torch.device("cpu"), FC), batches)
    rec = StepRecorder(C, 8, torch.device("cpu"), FC, stats=order)
    assert rec.stats.names == order and rec.buf.shape[-1] == len(order)
    got = drain_steps(rec, batches)
    same(got, want)
    assert list(got)[3:3 + len(STEP_STATS)] == list(STEP_STATS)  # the table's order, whatever
    # and the values are what the names say, not merely the same as another order's
    for step, logits, y, fc_grad, inputs in batches:
        rows = slice(step * C, (step + 1) * C)
        assert got["n"][rows].tolist() == torch.bincount(y, minlength=C).tolist()
        assert got["pred_count"][rows].tolist() == torch.bincount(logits.argmax(1),
                                                                  minlength=C).tolist()
        assert got["correct"][rows].tolist() == torch.bincount(
            y[logits.argmax(1) == y], minlength=C).tolist()
        pos, neg = classifier_grad_split(FC, inputs["h"], inputs["dlogits"], y, fc_grad)
        total = fc_grad if fc_grad is not None else pos + neg
        for name, ref in (("grad_norm", total), ("grad_pos", pos), ("grad_neg", neg)):
            tol = rel(23 + DIM) * float(ref.abs().max()) * DIM ** 0.5
            np.testing.assert_allclose(got[name][rows], ref.norm(dim=1).numpy(), rtol=0, atol=tol,
                                       err_msg=name)


def test_step_recorder_follows_a_monkeypatched_step_stats(monkeypatch: pytest.MonkeyPatch) -> None:
    batches = step_batches()
    want = drain_steps(StepRecorder(C, 8, torch.device("cpu"), FC), batches)
    monkeypatch.setattr(dynamics, "STEP_STATS", STEP_ORDERS[1])
    rec = StepRecorder(C, 8, torch.device("cpu"), FC)
    assert rec.stats.names == STEP_ORDERS[1]
    same(drain_steps(rec, batches), want)


def test_step_recorder_reduces_its_buffer_by_its_own_names(monkeypatch: pytest.MonkeyPatch
                                                             ) -> None:
    """Under torchrun the gradient norms are kept, not added: the reduction must be told where
    they sit in this buffer, whatever its order."""
    seen = []
    monkeypatch.setattr(dynamics, "reduce_stats_",
                        lambda buf, names, same=(): seen.append((buf.shape, names, same)))
    rec = StepRecorder(C, 8, torch.device("cpu"), FC, stats=STEP_ORDERS[1])
    for step, logits, y, fc_grad, inputs in step_batches(3):
        rec.record(step, 1, 0.1, logits, y, fc_grad, **inputs)
    rec.reduce_()
    assert seen == [((3, C, len(STEP_STATS)), STEP_ORDERS[1], dynamics.SHARED_STATS)]


def test_step_recorder_refuses_stats_that_are_not_an_order_of_step_stats() -> None:
    with pytest.raises(ValueError):
        StepRecorder(C, 2, torch.device("cpu"), FC, stats=STEP_STATS[:-1])
    with pytest.raises(ValueError):
        StepRecorder(C, 2, torch.device("cpu"), FC, stats=(*STEP_STATS[:-1], "n"))


def test_grad_split_lands_under_its_names_in_any_order() -> None:
    torch.manual_seed(0)
    model = cnn1d(40, 4)
    x, y = torch.randn(32, 40), torch.randint(0, 4, (32,))
    h, logits = model.forward_features(x)
    logits.retain_grad()
    F.cross_entropy(logits, y).backward()
    pos, neg = classifier_grad_split(model.fc, h, logits.grad, y, model.fc.weight.grad)
    drained = []
    for order in (STEP_STATS, *STEP_ORDERS):
        rec = StepRecorder(4, 1, torch.device("cpu"), model.fc, stats=order)
        rec.record(0, 1, 0.1, logits, y, model.fc.weight.grad, h, logits.grad)
        drained.append(rec.drain())
    for got in drained[1:]:
        same(got, drained[0])
    # the same split (classifier_grad_split is the one-step case of the recorder's), its norms
    # taken over D entries each
    d = model.fc.in_features
    np.testing.assert_allclose(drained[0]["grad_pos"], pos.norm(dim=1).numpy(), rtol=rel(d))
    np.testing.assert_allclose(drained[0]["grad_neg"], neg.norm(dim=1).numpy(), rtol=rel(d))


# ==== per sample ==================================================================================

def test_sample_recorder_in_another_order(monkeypatch: pytest.MonkeyPatch) -> None:
    batches = step_batches(3)

    def run() -> dict:
        samples = SampleRecorder(torch.device("cpu"))
        rec = StepRecorder(C, 4, torch.device("cpu"), FC, samples=samples)
        for step, logits, y, fc_grad, inputs in batches:
            samples.record(step, 1, torch.arange(len(y)) + 100 * step)
            rec.record(step, 1, 0.1, logits, y, fc_grad, **inputs)
        rec.settle()
        return samples.drain()

    want = run()
    monkeypatch.setattr(dynamics, "SAMPLE_KEYS", Stats(("class_id", "sample_id")))
    monkeypatch.setattr(dynamics, "SAMPLE_VALS", Stats(("loss", "correct", "p_true")))
    got = run()
    same(got, want)
    y = torch.cat([b[2] for b in batches])
    assert got["class_id"].tolist() == y.tolist()
    assert got["sample_id"].tolist()[:3] == [0, 1, 2]
    assert (np.asarray(got["loss"]) >= 0).all() and got["correct"].dtype == bool


# ==== gradient probes =============================================================================

PROBE_ORDERS = [tuple(reversed(PROBE_STATS)), ("cos_to_batch", "n", "cos_other", "grad_norm")]


@pytest.mark.parametrize("order", PROBE_ORDERS)
def test_gradient_probe_in_another_order(order: tuple[str, ...]) -> None:
    minority = torch.arange(C) >= 3

    def run(stats) -> dict:
        torch.manual_seed(0)
        model = cnn1d(40, C).train()
        x = torch.randn(48, 40)
        y = torch.randint(0, C, (48,))
        probe = GradientProbe(minority, 2, torch.device("cpu"), stats=stats)
        for step in range(2):
            model.zero_grad()
            logits = model(x)
            logits.retain_grad()
            F.cross_entropy(logits, y).backward(retain_graph=True)
            probe.record(step, 1, logits, y, list(model.parameters()))
        return probe.drain(), y

    (want, y), (got, _) = run(None), run(order)
    same(got, want)
    minor = int(minority[y].sum())
    assert got["grp"] == ["majority", "minority"] * 2
    assert got["n"].tolist() == [len(y) - minor, minor] * 2
    assert all(-1.0 <= v <= 1.0 for v in got["cos_to_batch"] + got["cos_other"])
    assert all(v > 0 for v in got["grad_norm"])


# ==== per epoch ===================================================================================

def test_evaluate_features_in_another_order(monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(0)
    model = cnn1d(40, C).eval()
    x = torch.randn(70, 40)
    y = torch.randint(0, C - 1, (70,))  # one class absent: its feature_norm is NaN

    def run() -> tuple[dict, dynamics.FeatureSums]:
        return evaluate_features(model, x, y, C, batch_size=32)

    want_rows, want_feats = run()
    names = dynamics.EVAL_SUMS.names
    monkeypatch.setattr(dynamics, "EVAL_SUMS", Stats(names[::-1]))
    got_rows, got_feats = run()
    same(got_rows, want_rows)
    for field in ("n", "h", "sq", "basis", "within"):
        np.testing.assert_array_equal(getattr(got_feats, field), getattr(want_feats, field))
    assert got_rows["n"].tolist() == torch.bincount(y, minlength=C).tolist()
    with torch.no_grad():  # batch by batch, as evaluated: a CPU's kernels may round a
        # batch of 70 differently from batches of 32
        h = torch.cat([model.forward_features(x[i:i + 32])[0] for i in range(0, 70, 32)])
        h = h.double()
    np.testing.assert_allclose(got_feats.sq, torch.zeros(C, dtype=torch.float64)
                               .index_add_(0, y, (h * h).sum(1)).numpy(), rtol=1e-12)


# ==== the whole loop ==============================================================================

def test_training_records_the_same_tables_with_the_statistics_reordered(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The loop end to end (full dynamics: steps with the gradient split, samples, probes,
    evaluation and geometry) with every buffer's names in another order records the same rows."""
    from trainer.loop import TrainConfig, train
    from trainer.sink import MemorySink

    def run() -> MemorySink:
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            sink = MemorySink()
            result = train(TrainConfig(ratio=100, max_steps=12, device="cpu", probe_every=5,
                                       flush_steps=5, dynamics="full"), sink)
        finally:
            torch.set_num_threads(threads)
        assert result.status == "finished", result.message
        return sink

    want = run()
    monkeypatch.setattr(dynamics, "STEP_STATS", STEP_ORDERS[1])
    monkeypatch.setattr(dynamics, "PROBE_STATS", PROBE_ORDERS[1])
    monkeypatch.setattr(dynamics, "EVAL_SUMS", Stats(dynamics.EVAL_SUMS.names[::-1]))
    monkeypatch.setattr(dynamics, "SAMPLE_VALS", Stats(("p_true", "loss", "correct")))
    got = run()
    for table in ("steps", "samples", "probes", "epochs", "geometry", "geometry_summary"):
        assert want.parts.get(table), table
        same(got.table(table), want.table(table))
