"""Two-stage methods and weight balancing (trainer/stages.py), checked against transcriptions of the
reference code, and end to end: the stages in the store, the frozen features, the app's boundary."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from imbtui.store import RunWriter, Store
from tests.tolerance import rel
from trainer.config import TrainConfig, check_config, resolve_config
from trainer.data import DataError
from trainer.loop import check_run, train
from trainer.stages import MaxNorm, SoftmaxBCE, begin_stage2, tau_normalise


def assert_close(got: torch.Tensor, want: torch.Tensor, n: int) -> None:
    """float32 results of at most n accumulated terms (tests/tolerance.py's rel)."""
    torch.testing.assert_close(got.double(), want.double(), rtol=rel(n), atol=rel(n))

# ==== transcriptions of the reference code ========================================================
# ShadeAlsha/LTR-weight-balancing, utils/regularizers.py, MaxNorm_via_PGD (thresh, LpNorm=2, tau=1)
# applied to one weight matrix:
#     neuronNorm_curparam = torch.linalg.norm(curparam_vec, ord=2, dim=1).unsqueeze(-1)
#     curLayerThresh = neuronNorm_curparam.min() + self.thresh*(neuronNorm_curparam.max()
#                                                              - neuronNorm_curparam.min())
#     ... idx = neuronNorm_curparam > curLayerThresh
#     tmp = curLayerThresh / (neuronNorm_curparam[idx].squeeze())**(self.tau)
#     curparam[idx] = scalingVect[idx] * curparam[idx]


def ref_threshold(w: torch.Tensor, thresh: float) -> torch.Tensor:
    norms = torch.linalg.norm(w, ord=2, dim=1).unsqueeze(-1)
    return norms.min() + thresh * (norms.max() - norms.min())


def ref_pgd(w: torch.Tensor, bound: torch.Tensor) -> torch.Tensor:
    w = w.clone()
    norms = torch.linalg.norm(w, ord=2, dim=1).unsqueeze(-1)
    idx = (norms > bound).squeeze()
    tmp = (bound / norms[idx].squeeze()).unsqueeze(-1)
    w[idx] = tmp * w[idx]
    return w


# utils/regularizers.py, Normalizer.apply_on: curparam[idx] = curparam[idx] / norm**tau


def ref_tau_norm(w: torch.Tensor, tau: float) -> torch.Tensor:
    norms = torch.linalg.norm(w, ord=2, dim=1).unsqueeze(-1) ** tau
    return w / norms


# utils/class_balanced_loss.py, CB_loss(labels, logits, samples_per_cls, C, "softmax", beta, ...):
#     weights = (1.0 - beta) / (1.0 - np.power(beta, samples_per_cls)); weights / sum * C
#     weights = (weights * one_hot).sum(1).unsqueeze(1).repeat(1, C)
#     cb_loss = F.binary_cross_entropy(input=logits.softmax(dim=1), target=one_hot, weight=weights)


def ref_cb_softmax(labels: torch.Tensor, logits: torch.Tensor, counts: list[int],
                   beta: float) -> torch.Tensor:
    c = len(counts)
    weights = (1.0 - beta) / (1.0 - np.power(beta, counts))
    weights = weights / np.sum(weights) * c
    one_hot = F.one_hot(labels, c).float()
    w = torch.tensor(weights).float().unsqueeze(0).repeat(len(labels), 1) * one_hot
    w = w.sum(1).unsqueeze(1).repeat(1, c)
    return F.binary_cross_entropy(input=logits.softmax(dim=1), target=one_hot, weight=w)


# ==== units =======================================================================================

@pytest.mark.parametrize("thresh", [0.0, 0.1, 0.5, 1.0])
def test_maxnorm_projects_as_the_reference(thresh: float) -> None:
    g = torch.Generator().manual_seed(1)
    fc = torch.nn.Linear(16, 10)
    with torch.no_grad():
        fc.weight.copy_(torch.randn(10, 16, generator=g) * torch.linspace(0.2, 3, 10)[:, None])
    w0 = fc.weight.detach().clone()
    project = MaxNorm(fc, thresh)
    project()
    bound = ref_threshold(w0, thresh)
    assert_close(project.bound, bound.squeeze(), n=16)
    assert_close(fc.weight.detach(), ref_pgd(w0, bound), n=16)
    # the bound stays the one set at the start, as the reference's perLayerThresh
    with torch.no_grad():
        fc.weight.mul_(3.0)
    w1 = fc.weight.detach().clone()
    project()
    assert_close(fc.weight.detach(), ref_pgd(w1, bound), n=16)
    assert (fc.weight.norm(dim=1) <= bound.squeeze() * (1 + 1e-5)).all()


@pytest.mark.parametrize("tau", [0.0, 0.5, 1.0, 1.9])
def test_tau_norm_as_the_reference(tau: float) -> None:
    fc = torch.nn.Linear(8, 5)
    w0 = fc.weight.detach().clone()
    b0 = fc.bias.detach().clone()
    tau_normalise(fc, tau)
    assert_close(fc.weight.detach(), ref_tau_norm(w0, tau), n=8)
    assert torch.equal(fc.bias.detach(), b0)


def test_cb_finetune_loss_is_the_reference_cb_softmax() -> None:
    g = torch.Generator().manual_seed(3)
    counts = [500, 120, 30, 9, 5]
    logits = torch.randn(64, 5, generator=g) * 3
    y = torch.randint(0, 5, (64,), generator=g)
    ours = SoftmaxBCE(counts, torch.device("cpu"))
    want = ref_cb_softmax(y, logits, counts, 0.9999)
    assert_close(ours(logits, y, 1), want, n=64 * 5)
    assert_close(ours.terms(logits, y, 1).sum(), want, n=64 * 5)


def test_lws_scales_the_logits_and_trains_only_the_scale() -> None:
    from trainer.models import build_model

    model = build_model("mlp", (40,), 4)
    x = torch.randn(6, 40)
    z = model(x).detach()
    stage = begin_stage2("lws", model, [100, 50, 20, 5], torch.device("cpu"))
    assert stage.params == [model.logit_scale] and stage.sampler == "class-balanced"
    assert [p for p in model.parameters() if p.requires_grad] == [model.logit_scale]
    with torch.no_grad():
        model.logit_scale.copy_(torch.tensor([1.0, 2.0, 0.5, 3.0]))
    assert torch.equal(model(x).detach(), z * torch.tensor([1.0, 2.0, 0.5, 3.0]))


def test_crt_reinitialises_and_trains_only_the_classifier() -> None:
    from trainer.models import build_model

    model = build_model("mlp", (40,), 4)
    w0 = model.fc.weight.detach().clone()
    stage = begin_stage2("crt", model, [100, 50, 20, 5], torch.device("cpu"))
    assert not torch.equal(model.fc.weight.detach(), w0)
    assert {id(p) for p in stage.params} == {id(model.fc.weight), id(model.fc.bias)}
    assert all(not p.requires_grad for p in model.features.parameters())


# ==== refused combinations ========================================================================

@pytest.mark.parametrize("changes, words", [
    ({"loss": "ldam", "max_norm": 0.1}, "cosine classifier"),
    ({"loss": "ldam", "stage2": "tau-norm"}, "norm 1"),
    ({"optimizer": "imbsam", "mixup": 1.0}, "two classes"),
    ({"loss": "focal", "smoothing": 0.1}, "focal"),
    ({"stage2": "crt", "stage2_epochs": 0}, "--stage2-epochs"),
    ({"max_norm": -1.0}, "--max-norm"),
    ({"stage2": "nope"}, "--stage2"),
])
def test_bad_method_combinations_are_refused(changes, words) -> None:
    cfg = resolve_config(dataclasses.replace(TrainConfig(), **changes))
    with pytest.raises(DataError, match=words):
        check_config(cfg, False)


def test_max_steps_inside_the_first_stage_is_refused_before_training() -> None:
    cfg = TrainConfig(epochs=2, stage2="crt", max_steps=10, device="cpu")
    with pytest.raises(DataError, match="first stage"):
        check_run(cfg)


# ==== end to end ==================================================================================

def _train(store: Path, **changes):
    cfg = TrainConfig(epochs=2, stage2_epochs=1, device="cpu", dynamics="full", **changes)
    return train(cfg, RunWriter(store))


@pytest.fixture(scope="module")
def two_stage(tmp_path_factory: pytest.TempPathFactory):
    store = tmp_path_factory.mktemp("stages")
    plain = _train(store, name="plain")
    crt = _train(store, name="crt", stage2="crt")
    tau = _train(store, name="tau", stage2="tau-norm", tau_norm=1.0)
    return store, plain, crt, tau


def test_the_second_stage_leaves_the_features_as_the_first_stage_left_them(two_stage) -> None:
    _, plain, crt, tau = two_stage
    # the same seed trains the same first stage; the second touches only the classifier
    for name, value in plain.model.features.state_dict().items():
        assert torch.equal(crt.model.features.state_dict()[name], value), name
    assert not torch.equal(crt.model.fc.weight, plain.model.fc.weight)
    w = plain.model.fc.weight.detach()
    assert torch.equal(tau.model.fc.weight.detach(), w / w.norm(dim=1, keepdim=True))


def test_stages_are_in_the_store(two_stage) -> None:
    store, plain, crt, tau = two_stage
    con = Store(store).connect()
    spe = con.execute("SELECT steps_per_epoch FROM runs WHERE name = 'crt'").fetchall()[0][0]
    rows = con.sql("SELECT r.name, s.stage, s.name, s.first_epoch, s.last_epoch, s.first_step "
                   "FROM stages s JOIN runs r USING (run_id) ORDER BY r.name, s.stage").fetchall()
    assert rows == [("crt", 1, "train", 1, 2, 0), ("crt", 2, "crt", 3, 3, 2 * spe),
                    ("plain", 1, "train", 1, 2, 0),
                    ("tau", 1, "train", 1, 2, 0), ("tau", 2, "tau-norm", 3, 3, 2 * spe)]
    # crt's third epoch trained a whole epoch of steps; tau-norm's only evaluated
    steps = dict(con.sql("SELECT r.name, max(s.step) + 1 FROM steps s JOIN runs r "
                         "USING (run_id) GROUP BY r.name").fetchall())
    assert steps == {"plain": 2 * spe, "crt": 3 * spe, "tau": 2 * spe}
    epochs = dict(con.sql("SELECT r.name, max(e.epoch) FROM epochs e JOIN runs r "
                          "USING (run_id) GROUP BY r.name").fetchall())
    assert epochs == {"plain": 2, "crt": 3, "tau": 3}
    assert crt.steps == 3 * spe and tau.steps == 2 * spe
    methods = dict(con.sql("SELECT name, method FROM runs").fetchall())
    assert methods == {"plain": "ce", "crt": "ce+crt", "tau": "ce+tau-norm"}


def test_crt_samples_class_balanced_batches(two_stage) -> None:
    store, *_ = two_stage
    con = Store(store).connect()
    # per class: the share of presentations in stage 2 (class-balanced: about 1/C each)
    shares = con.sql("""
        SELECT s.class_id, sum(s.n) / (SELECT sum(n) FROM steps x JOIN runs q USING (run_id)
                                        WHERE q.name = 'crt' AND x.epoch = 3) AS share
        FROM steps s JOIN runs r USING (run_id)
        WHERE r.name = 'crt' AND s.epoch = 3 GROUP BY s.class_id""").fetchall()
    n = con.execute("SELECT sum(n) FROM steps s JOIN runs r USING (run_id) "
                    "WHERE r.name = 'crt' AND s.epoch = 3").fetchall()[0][0]
    for _, share in shares:  # binomial: 5 standard deviations of a share of 1/10
        assert abs(share - 0.1) <= 5 * (0.1 * 0.9 / n) ** 0.5


def test_the_app_marks_where_the_second_stage_begins(two_stage) -> None:
    from imbtui.tui.data.curves import load_run
    from imbtui.tui.widgets.shared_sparkline import mark_column

    store, *_ = two_stage
    con = Store(store).connect()
    crt_id, spe = con.execute("SELECT run_id, steps_per_epoch FROM runs "
                              "WHERE name = 'crt'").fetchall()[0]
    plain_id = con.execute("SELECT run_id FROM runs WHERE name = 'plain'").fetchall()[0][0]
    c = load_run(con.cursor(), crt_id, 60, "step")
    assert c.stage2 == "crt" and c.stage2_at == pytest.approx(2 * spe / (3 * spe))
    assert mark_column(c.stage2_at, 60) == 40
    e = load_run(con.cursor(), crt_id, 60, "epoch")
    assert e.stage2_at == pytest.approx(3 / 4)  # epochs 0..3 on the axis; stage 2 is epoch 3
    p = load_run(con.cursor(), plain_id, 60, "step")
    assert p.stage2 is None and p.stage2_at is None
