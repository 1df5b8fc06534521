"""The gradient-conflict lens (trainer/conflict.py, `--conflict-every`): the per-class gradients and
their cosines against separate autograd passes on each class's masked loss (float64), the
whole-set group gradients against an explicit gradient of the whole set's objective, the recorder's
rows against a recomputation, a short real run through a RunWriter into a store (the matrix
symmetric, 1 on the diagonal, in [-1, 1], NULL exactly for the classes absent from the batch; the
training itself unchanged by the option; the view and the named query), and the refusals.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from imbtui.queries import get_query
from imbtui.store import RunWriter, Store
from tests.tolerance import cos_tol
from trainer import loop
from trainer.conflict import (
    FULL_MATRIX_MAX,
    class_gradients,
    cosine_matrix,
    group_pair_means,
    row_cosines,
    whole_set_gradients,
    whole_set_of,
)
from trainer.data import DataError
from trainer.losses import build_loss
from trainer.models import build_model, cnn1d
from trainer.recording import FullRecorder, Subject
from trainer.sink import MemorySink

CPU = torch.device("cpu")
C = 10
COUNTS = [500, 300, 200, 120, 80, 50, 30, 20, 12, 8]
MINORITY = np.arange(C) >= 5
# float32 rows of float64 gradients: each entry rounded once, so a cosine is off by a few eps32
COS_TOL = cos_tol(8)
# the objective takes its terms in float32 (trainer.losses), so a float64 model's gradients of them
# agree to float32 round-off of the logits' derivatives, summed over a few chunks
WHOLE_TOL = 1e-6


def flat(grads) -> torch.Tensor:
    return torch.cat([g.reshape(-1) for g in grads])


def np_cos(a: np.ndarray, b: np.ndarray) -> float:
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    return float(a @ b / (na * nb)) if na > 0 and nb > 0 else float("nan")


def batch(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """64 samples of 40 values; classes 3 and 7 absent, class 9 twice."""
    g = torch.Generator().manual_seed(seed)
    pool = torch.tensor([c for c in range(C) if c not in (3, 7)])
    y = torch.cat([pool[torch.randint(0, len(pool), (62,), generator=g)], torch.tensor([9, 9])])
    return torch.randn(64, 40, generator=g, dtype=torch.float64), y


# ==== (a) per-class gradients and their cosines ===================================================

@pytest.mark.parametrize("loss_name", ["ce", "weighted-ce"])
def test_class_gradients_are_the_gradients_of_each_class_s_masked_loss(loss_name: str) -> None:
    torch.manual_seed(0)
    model = cnn1d(40, C).double().train()  # train mode: BatchNorm couples the batch's samples
    params = list(model.parameters())
    x, y = batch()
    objective = build_loss(loss_name, COUNTS, CPU)

    # what the loop does: one forward, a backward that keeps the graph, then the lens
    logits = model(x)
    logits.retain_grad()
    objective(logits, y, 1).backward(retain_graph=True)
    step_grad = flat(p.grad for p in params).clone()
    g, counts = class_gradients(logits, y, C, params)
    assert torch.equal(flat(p.grad for p in params), step_grad)  # .grad untouched
    assert counts.tolist() == np.bincount(y.numpy(), minlength=C).tolist()
    got = cosine_matrix(g).numpy()

    # the reference: each class's masked loss, its own forward and torch.autograd.grad, float64
    ref = []
    for c in range(C):
        terms = objective.terms(model(x), y, 1)
        ref.append(flat(torch.autograd.grad((terms * (y == c)).sum(), params,
                                            allow_unused=True, materialize_grads=True)).numpy())
    ref = np.stack(ref)
    np.testing.assert_allclose(g.double().numpy(), ref, rtol=0,
                               atol=1e-6 * np.abs(ref).max())
    assert np.abs(ref.sum(0) - step_grad.numpy()).max() < 1e-12  # the classes add up to the batch
    for a in range(C):
        for b in range(C):
            want = np_cos(ref[a], ref[b])
            if a in (3, 7) or b in (3, 7):  # absent: no gradient, no cosine
                assert np.isnan(got[a, b]) and not (ref[a].any() and ref[b].any())
            else:
                assert got[a, b] == pytest.approx(want, abs=COS_TOL), (a, b)
    present = [c for c in range(C) if c not in (3, 7)]
    assert (np.diag(got)[present] == 1.0).all()
    np.testing.assert_array_equal(np.isnan(got), np.isnan(got.T))
    assert np.nanmax(np.abs(got - got.T)) <= 0.0  # symmetric (one Gram matrix)


def test_cosines_are_clamped_float64_and_nan_for_zero_rows() -> None:
    g = torch.tensor([[1.0, 0.0, 0.0], [1.0, 1e-8, 0.0], [0.0, 0.0, 0.0], [-2.0, 0.0, 0.0]])
    cos = cosine_matrix(g)
    assert cos.dtype == torch.float64
    assert cos[0, 1] <= 1.0 and cos[0, 3] == -1.0 and (cos.diagonal()[[0, 1, 3]] == 1).all()
    assert torch.isnan(cos[2]).all() and torch.isnan(cos[:, 2]).all()
    r = row_cosines(torch.tensor([[1.0, 2.0], [0.0, 0.0]]), torch.tensor([[2.0, 4.0], [1.0, 1.0]]))
    assert r[0] == pytest.approx(1.0, abs=1e-15) and torch.isnan(r[1])


def test_group_pair_means_average_each_distinct_class_pair_once() -> None:
    rng = np.random.default_rng(0)
    n = 6
    minority = np.array([False, False, False, True, True, True])
    a = rng.uniform(-1, 1, (n, n))
    cos = (a + a.T) / 2
    np.fill_diagonal(cos, 1.0)
    cos[4, :] = cos[:, 4] = np.nan  # class 4 absent
    got = {(ga, gb): (m, k) for ga, gb, m, k in group_pair_means(cos, minority)}
    maj, mnr = [0, 1, 2], [3, 5]
    want = {("majority", "majority"): [cos[0, 1], cos[0, 2], cos[1, 2]],
            ("majority", "minority"): [cos[i, j] for i in maj for j in mnr],
            ("minority", "minority"): [cos[3, 5]]}
    for key, vals in want.items():
        assert got[key][0] == pytest.approx(np.mean(vals), abs=1e-15) and got[key][1] == len(vals)


# ==== (b) the whole training set's group gradients ================================================

def explicit_whole(model, x, y, objective, minority) -> np.ndarray:
    """The group gradients of the objective over the whole set as ONE batch, float64."""
    params = [p for p in model.parameters() if p.requires_grad]
    terms = objective.terms(model(x), y, 1)
    minor = torch.as_tensor(minority)[y]
    return np.stack([flat(torch.autograd.grad((terms * m).sum(), params, retain_graph=True,
                                              allow_unused=True, materialize_grads=True)).numpy()
                     for m in (~minor, minor)])


@pytest.mark.parametrize("loss_name", ["ce", "weighted-ce", "focal"])
@pytest.mark.parametrize("arch", ["mlp", "cnn1d-eval"])
def test_whole_set_gradients_equal_the_whole_set_objective_s(loss_name: str, arch: str) -> None:
    """Without batch coupling (no BatchNorm, or BatchNorm in eval mode), the chunked pass is
    exactly the gradient of the objective over the whole set taken as one batch, whatever the
    chunks' sizes (103 rows in chunks of at most 32: 4 strided chunks of 25 or 26)."""
    torch.manual_seed(1)
    model = (build_model("mlp", (40,), C) if arch == "mlp" else cnn1d(40, C).eval()).double()
    g = torch.Generator().manual_seed(3)
    x = torch.randn(103, 40, generator=g, dtype=torch.float64)
    y = torch.randint(0, C, (103,), generator=g)
    objective = build_loss(loss_name, COUNTS, CPU)
    params = list(model.parameters())
    got = whole_set_gradients(model, params, x, y, torch.as_tensor(MINORITY), objective, 1, 32)
    want = explicit_whole(model, x, y, objective, MINORITY)
    np.testing.assert_allclose(got.numpy(), want, rtol=0, atol=WHOLE_TOL * np.abs(want).max())


def test_whole_set_in_train_mode_uses_chunk_statistics_and_leaves_the_model_alone() -> None:
    """Train mode: each strided chunk normalised with its own batch statistics (the explicit sum
    below), BatchNorm's running statistics and .grad untouched, and the retained graph of a step
    still usable afterwards."""
    torch.manual_seed(2)
    model = cnn1d(40, C).double().train()
    params = list(model.parameters())
    g = torch.Generator().manual_seed(4)
    x = torch.randn(70, 40, generator=g, dtype=torch.float64)
    y = torch.randint(0, C, (70,), generator=g)
    objective = build_loss("ce", COUNTS, CPU)
    # a training step's backward kept its graph
    logits = model(x[:16])
    logits.retain_grad()
    objective(logits, y[:16], 1).backward(retain_graph=True)
    buffers = {k: v.clone() for k, v in model.named_buffers()}
    grad = flat(p.grad for p in params).clone()

    got = whole_set_gradients(model, params, x, y, torch.as_tensor(MINORITY), objective, 1, 16)

    for k, v in model.named_buffers():
        assert torch.equal(v, buffers[k]), k
    assert torch.equal(flat(p.grad for p in params), grad)
    class_gradients(logits, y[:16], C, params)  # the kept graph is still valid
    # explicit: chunk j holds rows j, j + 5, ... (5 chunks of 14), each a batch of its own
    with torch.no_grad():
        for m in model.modules():  # the explicit passes must not move them either
            if isinstance(m, torch.nn.BatchNorm1d):
                m.momentum = 0.0
    want = np.zeros((2, len(grad)))
    for j in range(5):
        want += explicit_whole(model, x[j::5], y[j::5], objective, MINORITY) * 14
    np.testing.assert_allclose(got.numpy(), want / 70, rtol=0, atol=WHOLE_TOL * np.abs(want).max())


# ==== the recorder ================================================================================

def recorder_steps(n_classes: int, every: int, whole: bool = True
                   ) -> tuple[MemorySink, list[dict], np.ndarray]:
    """A FullRecorder with the lens on a tiny MLP, 5 steps of hand-made batches (class 1 absent
    from every batch, the other classes in most); returns the sink, each recorded step's reference values and the minority."""
    torch.manual_seed(5)
    model = build_model("mlp", (8,), n_classes)
    minority = np.arange(n_classes) >= n_classes // 2
    g = torch.Generator().manual_seed(6)
    xs, ys = torch.randn(40, 8, generator=g), torch.arange(40) % n_classes
    ys[ys == 1] = 0
    objective = build_loss("ce", [40] * n_classes, CPU)
    params = list(model.parameters())

    def whole_set(epoch, mask):
        return whole_set_gradients(model, params, xs, ys, mask, objective, epoch, 12)

    sink = MemorySink()
    rec = FullRecorder(sink, loop.Hooks(), Subject(
        model, minority, torch.arange(40), 5, CPU, flush_steps=1000, probe_every=1000,
        conflict_every=every, whole_set=whole_set if whole else None))
    refs = []
    size = 12 if n_classes <= 12 else 30  # a batch holds most classes
    for step in range(5):
        rows = (torch.arange(size) + 7 * step) % 40
        x, y = xs[rows], ys[rows]
        h, logits = model.forward_features(x)
        rec.watch(logits)
        assert rec.keeps_graph(step) == (step % every == 0)
        objective(logits, y, 1).backward(retain_graph=rec.keeps_graph(step))
        if step % every == 0:  # the reference, before the recorder: separate masked losses
            grads = np.stack([flat(torch.autograd.grad(
                (F.cross_entropy(model(x), y, reduction="none") * (y == c)).sum() / len(y),
                params)).double().numpy() for c in range(n_classes)])
            full = whole_set(1, torch.as_tensor(minority)).numpy()
            refs.append({"step": step, "grads": grads, "full": full, "y": y.numpy()})
        rec.record(step, 1, 0.1, h, logits, y, rows)
        with torch.no_grad():  # a plain SGD step, so the steps differ
            for p in params:
                p -= 0.1 * p.grad
        model.zero_grad(set_to_none=True)
    rec.flush(epoch_end=True)
    return sink, refs, minority


def test_the_recorder_writes_the_whole_matrix_and_the_direction_rows() -> None:
    sink, refs, minority = recorder_steps(4, every=2)
    conflict, direction = sink.table("conflict"), sink.table("direction")
    assert len(sink.parts["conflict"]) == len(sink.parts["direction"]) == 1  # once per epoch
    assert sorted(set(conflict["step"].tolist())) == [0, 2, 4] == [r["step"] for r in refs]
    assert len(conflict["step"]) == 3 * 4 * 4
    for r in refs:
        at = conflict["step"] == r["step"]
        for a, b, grp_a, grp_b, pairs, cos in zip(*(conflict[k][at] for k in (
                "class_a", "class_b", "grp_a", "grp_b", "pairs", "cos"))):
            assert (grp_a, grp_b) == tuple("minority" if minority[c] else "majority"
                                           for c in (a, b))
            want = np_cos(r["grads"][a], r["grads"][b])
            if 1 in (a, b):  # absent from every batch
                assert cos is None and pairs == 0
            else:
                assert cos == pytest.approx(want, abs=COS_TOL) and pairs == 1
        at = direction["step"] == r["step"]
        assert direction["grp"][at].tolist() == ["majority", "minority"]
        assert direction["n"][at].tolist() == [int((~minority[r["y"]]).sum()),
                                               int(minority[r["y"]].sum())]
        for i, cos in enumerate(direction["cos_to_full"][at]):
            member = minority if i else ~minority
            batch_grad = r["grads"][member].sum(0)
            assert cos == pytest.approx(np_cos(batch_grad, r["full"][i]), abs=COS_TOL)


def test_above_20_classes_the_recorder_writes_group_pair_means() -> None:
    n = FULL_MATRIX_MAX + 4
    sink, refs, minority = recorder_steps(n, every=3, whole=False)
    conflict = sink.table("conflict")
    assert "direction" not in sink.parts  # no whole-set callable: no direction rows
    assert len(conflict["step"]) == 2 * 3 and all(v is None for v in conflict["class_a"])
    for r in refs:
        ref = np.array([[np_cos(r["grads"][a], r["grads"][b]) for b in range(n)]
                        for a in range(n)])
        at = conflict["step"] == r["step"]
        got = list(zip(conflict["grp_a"][at], conflict["grp_b"][at], conflict["cos"][at],
                       conflict["pairs"][at]))
        for (ga, gb, cos, pairs), (wa, wb, want, wpairs) in zip(got,
                                                                 group_pair_means(ref, minority)):
            assert (ga, gb, pairs) == (wa, wb, wpairs) and pairs > 0
            assert cos == pytest.approx(want, abs=COS_TOL)


# ==== a real run into a store =====================================================================

EVERY = 10


def run_into(root: Path, conflict_every: int | None, monkeypatch: pytest.MonkeyPatch,
             seen: list[Subject]) -> str:
    """MNIST-1D at ratio 100, 20 steps, one thread, through a RunWriter. `seen` gets the Subject
    the loop built. Until trainer/loop.py hands the recorder the option, this wires it as the
    loop's one line will (test_the_loop_hands_the_recorder_the_option says whether it does)."""
    runs: list[loop.Training] = []

    class Captured(loop.Training):
        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            runs.append(self)

    make = loop.make_recorder

    def make_recorder(dynamics, sink, hooks, subject):
        seen.append(subject)
        if conflict_every and subject.conflict_every is None:
            subject = dataclasses.replace(
                subject, conflict_every=conflict_every,
                whole_set=lambda epoch, mask: whole_set_of(runs[-1], epoch, mask))
        return make(dynamics, sink, hooks, subject)

    monkeypatch.setattr(loop, "Training", Captured)
    monkeypatch.setattr(loop, "make_recorder", make_recorder)
    cfg = loop.TrainConfig(dataset="mnist1d", ratio=100, epochs=1, max_steps=20, device="cpu",
                           conflict_every=conflict_every)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        result = loop.train(cfg, RunWriter(root))
    finally:
        torch.set_num_threads(threads)
    assert result.status == "finished", result.message
    return result.run_id


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory) -> dict:
    monkeypatch = pytest.MonkeyPatch()
    seen: list[Subject] = []
    try:
        root = tmp_path_factory.mktemp("conflict")
        run_into(root, EVERY, monkeypatch, seen)
        monkeypatch.undo()
        plain = tmp_path_factory.mktemp("plain")
        run_into(plain, None, monkeypatch, [])
    finally:
        monkeypatch.undo()
    return {"store": Store(root), "plain": Store(plain), "seen": seen}


def test_the_loop_hands_the_recorder_the_option(stores) -> None:
    """trainer/loop.py's Subject(...) carries conflict_every and a whole-set callable."""
    (subject,) = stores["seen"]
    assert subject.conflict_every == EVERY and callable(subject.whole_set)


def test_the_stored_matrix_is_symmetric_with_a_unit_diagonal_and_null_for_absent_classes(
        stores) -> None:
    store = stores["store"]
    rows = store.sql("SELECT step, epoch, class_a, class_b, grp_a, grp_b, pairs, cos "
                     "FROM conflict ORDER BY step, class_a, class_b").to_dicts()
    assert sorted({r["step"] for r in rows}) == [0, EVERY]
    assert len(rows) == 2 * C * C
    n = {(r["step"], r["class_id"]): r["n"] for r in store.sql(
        f"SELECT step, class_id, n FROM steps WHERE step % {EVERY} = 0").to_dicts()}
    grp = dict(store.sql("SELECT class_id, grp FROM classes").rows())
    cos = {(r["step"], r["class_a"], r["class_b"]): r["cos"] for r in rows}
    absent = 0
    for r in rows:
        s, a, b = r["step"], r["class_a"], r["class_b"]
        assert (r["grp_a"], r["grp_b"]) == (grp[a], grp[b])
        if n[(s, a)] == 0 or n[(s, b)] == 0:  # NULL exactly where a class is not in the batch
            assert r["cos"] is None and r["pairs"] == 0
            absent += 1
            continue
        assert -1.0 <= r["cos"] <= 1.0 and r["pairs"] == 1
        assert r["cos"] == cos[(s, b, a)]
        if a == b:
            assert r["cos"] == 1.0
    assert absent > 0  # ratio 100: some minority class misses a batch of 128


def test_the_direction_rows_count_the_batch_s_groups(stores) -> None:
    store = stores["store"]
    rows = store.sql("SELECT d.step, d.grp, d.n, d.cos_to_full, sum(s.n) AS batch_n FROM "
                     "direction d JOIN classes c USING (run_id, grp) JOIN steps s "
                     "ON s.run_id = d.run_id AND s.step = d.step AND s.class_id = c.class_id "
                     "GROUP BY ALL ORDER BY d.step, d.grp").to_dicts()
    assert [(r["step"], r["grp"]) for r in rows] == [(0, "majority"), (0, "minority"),
                                                     (EVERY, "majority"), (EVERY, "minority")]
    for r in rows:
        assert r["n"] == r["batch_n"] > 0
        assert -1.0 <= r["cos_to_full"] <= 1.0
    # the majority's 100+ samples track the whole set more closely than the minority's handful
    maj = [r["cos_to_full"] for r in rows if r["grp"] == "majority"]
    assert min(maj) > 0.5


def test_the_option_leaves_the_training_unchanged(stores) -> None:
    """The extra backward passes read, never write: .grad, BatchNorm's running statistics and the
    random streams are as without the option, so every step and evaluation is the same."""
    a, plain = stores["store"], stores["plain"]
    for table, order in (("steps", "step, class_id"), ("epochs", "epoch, split, class_id")):
        q = f"SELECT * EXCLUDE (run_id) FROM {table} ORDER BY {order}"
        assert a.sql(q).equals(plain.sql(q)), table
    assert plain.sql("SELECT count(*) AS n FROM conflict").item() == 0


def test_group_conflict_is_the_mean_over_distinct_class_pairs(stores) -> None:
    store = stores["store"]
    minority = np.array([g == "minority" for (g,) in store.sql(
        "SELECT grp FROM classes ORDER BY class_id").rows()])
    view = {(r["step"], r["grp_a"], r["grp_b"]): r for r in store.sql(
        "SELECT * FROM group_conflict").to_dicts()}
    assert len(view) == 2 * 3
    for step in (0, EVERY):
        mat = np.full((C, C), np.nan)
        for a, b, cos in store.sql(f"SELECT class_a, class_b, cos FROM conflict "
                                   f"WHERE step = {step}").rows():
            mat[a, b] = np.nan if cos is None else cos
        for ga, gb, mean, pairs in group_pair_means(mat, minority):
            row = view[(step, ga, gb)]
            assert row["pairs"] == pairs and row["cos"] == pytest.approx(mean, abs=1e-12)


def test_the_named_query_reads_the_lens(stores) -> None:
    store = stores["store"]
    q = get_query("gradient_conflict")
    rows = store.sql(q.sql, params=q.bind({})).to_dicts()
    assert [(r["lens"], r["grp"]) for r in rows] == [
        ("conflict", "majority/majority"), ("conflict", "majority/minority"),
        ("conflict", "minority/minority"), ("direction", "majority"), ("direction", "minority")]
    for r in rows:
        assert r["steps"] == 2 and (r["first_step"], r["last_step"]) == (0, EVERY)
        assert r["mean_cos"] == pytest.approx((r["early_cos"] + r["late_cos"]) / 2)


# ==== refusals ====================================================================================

@pytest.mark.parametrize("changes, message", [
    ({"conflict_every": 0}, "--conflict-every must be >= 1"),
    ({"conflict_every": 5, "dynamics": "minimal"}, "needs --dynamics full"),
    ({"conflict_every": 5, "dynamics": "off"}, "needs --dynamics full"),
])
def test_refusals(changes: dict, message: str) -> None:
    sink = MemorySink()
    with pytest.raises(DataError, match=message):
        loop.train(loop.TrainConfig(dataset="mnist1d", epochs=1, max_steps=2, device="cpu",
                                    **changes), sink)
    assert sink.status is None  # refused before the run started
