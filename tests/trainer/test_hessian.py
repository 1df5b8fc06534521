"""Sharpness per group (trainer/hessian.py): power iteration and Lanczos on Hessian-vector products
against the exact eigenvalues of explicit float64 Hessians (a quadratic of known spectrum, either
end dominant; a tiny network with BatchNorm, its Hessian from torch.autograd.functional.hessian in
eval mode), the fixed subsets, the option checks, and a real run's `sharpness` rows against a
recomputation from the returned model.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from imbtui.queries import get_query
from imbtui.store import RunWriter, Store
from trainer import hessian, loop
from trainer.config import check_config, resolve_config
from trainer.data import DataError

from tests.conftest import one_thread

CPU = torch.device("cpu")


# ==== a quadratic of known spectrum ===============================================================

def quadratic(spectrum: list[float], seed: int = 0) -> tuple[torch.Tensor, hessian.Loss,
                                                             list[torch.Tensor]]:
    """f(w) = w^T A w / 2 with A = Q diag(spectrum) Q^T (Q a random rotation): its Hessian is A."""
    gen = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(len(spectrum), len(spectrum), generator=gen,
                                       dtype=torch.float64))
    a = q @ torch.diag(torch.tensor(spectrum, dtype=torch.float64)) @ q.T
    w = torch.randn(len(spectrum), generator=gen, dtype=torch.float64).requires_grad_(True)
    return a, (lambda: 0.5 * w @ a @ w), [w]


@pytest.mark.parametrize("spectrum", [
    [3.0, 1.0, 0.2, 0.0, -0.5],     # the top end dominates
    [2.0, 0.5, -1.0, -3.0, -5.0],   # the negative end dominates (|lambda_min| > lambda_max)
])
def test_both_ends_of_a_known_spectrum(spectrum: list[float]) -> None:
    _, loss, params = quadratic(spectrum)
    model = torch.nn.Identity()
    e = hessian.extreme_eigenvalues(model, loss, params, iters=500, tol=1e-14)
    # float64 round-off on a 5 x 5 problem; the iterations converged well before the cap
    assert e.lambda_max == pytest.approx(max(spectrum), abs=1e-10)
    assert e.lambda_min == pytest.approx(min(spectrum), abs=1e-10)
    assert hessian.top_eigenvalue(model, loss, params, 500, 1e-14) == \
        pytest.approx(max(spectrum), abs=1e-10)
    assert hessian.bottom_eigenvalue(model, loss, params, 500, 1e-14) == \
        pytest.approx(min(spectrum), abs=1e-10)


def test_power_iteration_alone_finds_the_dominant_end_and_the_shift_the_other() -> None:
    _, loss, params = quadratic([-5.0, -1.0, 0.5, 2.0])
    hvp = hessian.HessianOperator(loss, params)
    mu, k = hessian.power_iteration(hvp, params, 0.0, iters=2000, tol=1e-15)
    assert mu == pytest.approx(-5.0, abs=1e-10) and k < 2000
    other, _ = hessian.power_iteration(hvp, params, mu, iters=2000, tol=1e-15)  # H - mu I
    assert other == pytest.approx(2.0, abs=1e-10)


def test_the_estimates_are_rayleigh_quotients_inside_the_spectrum_with_the_default_budget() -> None:
    # 200 eigenvalues crowded near 0 with a few outliers: 20 products do not converge exactly,
    # but every estimate is a Rayleigh quotient, so it lies inside [lambda_min, lambda_max]
    rng = np.random.default_rng(1)
    spectrum = list(rng.normal(0.0, 0.3, 196)) + [10.0, 7.0, -2.0, -1.5]
    _, loss, params = quadratic(spectrum, seed=1)
    e = hessian.extreme_eigenvalues(torch.nn.Identity(), loss, params)  # 20 products, 1e-3
    assert e.iters <= hessian.ITERS and e.iters_lanczos <= hessian.ITERS
    slack = 1e-12 * max(map(abs, spectrum))
    assert e.lambda_max <= 10.0 + slack and e.lambda_min >= -2.0 - slack
    assert e.lambda_max == pytest.approx(10.0, rel=1e-2)  # gap 10 / 7: quick convergence
    assert e.lambda_min < -1.0                            # sign and size of the bottom end


# ==== a tiny network: its explicit Hessian ========================================================

def tiny_network() -> torch.nn.Module:
    torch.manual_seed(3)
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4), torch.nn.Tanh(),
                              torch.nn.Linear(4, 3)).double()
    bn = net[1]  # non-trivial running statistics, so train-mode and eval-mode losses differ
    bn.running_mean.copy_(torch.tensor([0.3, -0.2, 0.1, 0.0], dtype=torch.float64))
    bn.running_var.copy_(torch.tensor([2.0, 0.5, 1.5, 1.0], dtype=torch.float64))
    return net.train()


def explicit_hessian(net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """d^2 mean-CE / dw^2 over every parameter, flattened, with the network in eval mode."""
    names = [n for n, _ in net.named_parameters()]
    shapes = [p.shape for _, p in net.named_parameters()]
    sizes = [p.numel() for _, p in net.named_parameters()]
    flat = torch.cat([p.detach().reshape(-1) for p in net.parameters()])

    def loss(w: torch.Tensor) -> torch.Tensor:
        params = {n: c.view(s) for n, c, s in zip(names, torch.split(w, sizes), shapes)}
        return F.cross_entropy(torch.func.functional_call(net, params, (x,)), y)

    net.eval()
    try:
        return torch.autograd.functional.hessian(loss, flat)
    finally:
        net.train()


def test_a_tiny_network_s_extreme_eigenvalues_are_its_explicit_hessian_s() -> None:
    net = tiny_network()
    gen = torch.Generator().manual_seed(4)
    x = torch.randn(16, 3, generator=gen, dtype=torch.float64)
    y = torch.randint(0, 3, (16,), generator=gen)
    exact = torch.linalg.eigvalsh(explicit_hessian(net, x, y))  # 43 x 43
    assert exact[0] < -1e-3  # the network's loss has negative curvature here: a real test
    before = [p.detach().clone() for p in net.parameters()]
    e = hessian.group_eigen(net, x, y, iters=2000, tol=1e-14)
    scale = float(exact.abs().max())
    assert e.lambda_max == pytest.approx(float(exact[-1]), abs=1e-8 * scale)
    assert e.lambda_min == pytest.approx(float(exact[0]), abs=1e-8 * scale)
    # the network is untouched: its parameters and its (train) mode
    assert all(torch.equal(a, b) for a, b in zip(before, net.parameters()))
    assert net.training and all(m.training for m in net.modules())


# ==== the subsets and the options =================================================================

def test_the_subsets_are_fixed_draws_within_each_group() -> None:
    y = torch.tensor([0] * 50 + [1] * 30 + [2] * 6 + [3] * 2)
    minority = np.array([False, False, True, True])
    a = hessian.group_subsets(y, minority, 10, seed=7)
    b = hessian.group_subsets(y, minority, 10, seed=7)
    assert all(torch.equal(a[g], b[g]) for g in hessian.GROUPS)  # the same seed, the same rows
    assert len(a["majority"]) == 10 and len(a["minority"]) == 8  # the whole minority: 6 + 2
    assert set(y[a["majority"]].tolist()) <= {0, 1} and set(y[a["minority"]].tolist()) == {2, 3}
    assert torch.equal(a["majority"], a["majority"].sort().values)
    assert len(set(a["majority"].tolist())) == 10  # without replacement
    c = hessian.group_subsets(y, minority, 10, seed=8)
    assert not torch.equal(a["majority"], c["majority"])


@pytest.mark.parametrize("fields, message", [
    ({"sharpness_every": 0}, "--sharpness-every must be >= 1"),
    ({"sharpness_every": 1, "sharpness_samples": 0}, "--sharpness-samples must be >= 1"),
    ({"sharpness_every": 1, "dynamics": "off"}, "--dynamics off"),
])
def test_the_options_are_checked(fields: dict, message: str) -> None:
    cfg = resolve_config(loop.TrainConfig(dataset="mnist1d", epochs=1, **fields))
    with pytest.raises(DataError, match=message):
        check_config(cfg, image=False)


def test_off_by_default_and_with_dynamics_off() -> None:
    cfg = resolve_config(loop.TrainConfig(dataset="mnist1d", epochs=1))
    assert cfg.sharpness_every is None and cfg.sharpness_samples == 512
    assert hessian.make_sharpness(cfg, None) is None


# ==== a real run ==================================================================================

@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory
            ) -> tuple[loop.TrainConfig, loop.RunResult, Store]:
    """MNIST-1D at ratio 100, one epoch (minimal dynamics), one thread, into a store, with the
    sharpness of 64 samples per group after epochs 0 and 1."""
    root = tmp_path_factory.mktemp("sharpness")
    cfg = loop.TrainConfig(dataset="mnist1d", ratio=100, epochs=1, device="cpu",
                           dynamics="minimal", sharpness_every=1, sharpness_samples=64)
    result = one_thread(loop.train, cfg, RunWriter(root, "real"))
    assert result.status == "finished", result.message
    return cfg, result, Store(root)


def test_a_run_records_both_groups_at_epochs_0_and_1(trained) -> None:
    _, result, store = trained
    rows = store.sql("SELECT * FROM sharpness ORDER BY epoch, grp").to_dicts()
    assert [(r["epoch"], r["grp"]) for r in rows] == [
        (0, "majority"), (0, "minority"), (1, "majority"), (1, "minority")]
    assert {r["n"] for r in rows} == {64}
    assert [r["step"] for r in rows][2:] == [result.steps] * 2
    for r in rows:
        assert math.isfinite(r["lambda_max"]) and math.isfinite(r["lambda_min"])
        assert r["lambda_min"] <= r["lambda_max"]
        assert 1 <= r["iters"] <= hessian.ITERS and 1 <= r["iters_lanczos"] <= hessian.ITERS
    # after an epoch of training the top eigenvalues are large and positive
    assert all(r["lambda_max"] > 1.0 for r in rows if r["epoch"] == 1)


def test_the_last_epoch_s_values_are_recomputed_from_the_returned_model(trained) -> None:
    cfg, result, store = trained
    rows = {r["grp"]: r for r in store.sql("SELECT * FROM sharpness WHERE epoch = 1").to_dicts()}
    data = loop.load_data(resolve_config(cfg), CPU)
    lens = hessian.make_sharpness(resolve_config(cfg), data)
    assert lens is not None and lens.due(0) and lens.due(1)
    for grp, (x, y) in lens.subsets.items():
        # The same subset (drawn with --subset-seed again), the same weights (the evaluation of
        # epoch 1 is the run's last act), the same float32 code on one thread: the value repeats
        # up to float32 round-off. 1e-4 relative allows a reordered sum in the products
        # (a float32 sum over the ~10^5 parameters errs by far less than 1e-4 of its magnitudes
        # on pairwise/SIMD summation) without hiding a different subset or model (those change
        # lambda_max by whole percents).
        again = one_thread(hessian.group_eigen, result.model, x, y)
        assert again.lambda_max == pytest.approx(rows[grp]["lambda_max"], rel=1e-4)
        assert again.lambda_min == pytest.approx(rows[grp]["lambda_min"], rel=1e-4)
        # Independently: the top eigenvalue by another method, ARPACK's Lanczos (scipy eigsh,
        # tol 1e-8) on float64 products of a float64 copy of the model. The recorded value is a
        # Rayleigh quotient, so it is at most the true one (float32 slack 1e-4), and the run
        # stops its power iteration at a relative change below 1e-3: it is asked to be within
        # 10 times that, 1%, of the converged value (on this run it is within ~1e-4).
        exact = one_thread(arpack_top, result.model, x.double(), y)
        assert rows[grp]["lambda_max"] <= exact * (1 + 1e-4)
        assert rows[grp]["lambda_max"] == pytest.approx(exact, rel=1e-2)


def arpack_top(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """The largest Hessian eigenvalue of the mean CE on (x, y) of a float64 copy of the model in
    eval mode, by scipy's eigsh on Hessian-vector products."""
    import copy

    from scipy.sparse.linalg import LinearOperator, eigsh

    double = copy.deepcopy(model).double().eval()
    loss, params = hessian.group_loss(double, x, y)
    hvp = hessian.HessianOperator(loss, params)
    shapes, sizes = [p.shape for p in params], [p.numel() for p in params]

    def matvec(v: np.ndarray) -> np.ndarray:
        parts = torch.split(torch.as_tensor(np.asarray(v).ravel()), sizes)
        return torch.cat([h.reshape(-1) for h in hvp([c.view(s) for c, s in
                                                      zip(parts, shapes)])]).numpy()

    n = sum(sizes)
    op = LinearOperator((n, n), matvec=matvec, dtype=np.float64)
    return float(eigsh(op, k=1, which="LA", tol=1e-8, v0=np.ones(n),
                       return_eigenvectors=False)[0])


def test_the_view_and_the_named_query(trained) -> None:
    _, _, store = trained
    rows = {r["grp"]: r for r in store.sql("SELECT * FROM sharpness WHERE epoch = 1").to_dicts()}
    view = store.sql("SELECT * FROM group_sharpness WHERE epoch = 1").to_dicts()
    assert len(view) == 1
    v = view[0]
    assert v["majority_lambda_max"] == rows["majority"]["lambda_max"]
    assert v["minority_lambda_min"] == rows["minority"]["lambda_min"]
    assert v["lambda_max_ratio"] == pytest.approx(
        rows["minority"]["lambda_max"] / rows["majority"]["lambda_max"], rel=1e-15)
    q = get_query("sharpness")
    out = store.sql(q.sql, q.bind({"runs": "real"})).to_dicts()
    assert [r["epoch"] for r in out] == [0, 1]
    assert out[1]["lambda_max_ratio"] == v["lambda_max_ratio"]


def test_a_store_without_the_table_has_an_empty_view(tmp_path: Path) -> None:
    w = RunWriter(tmp_path, "old")
    w.start({"name": "old", "config": {}})
    store = Store(tmp_path)
    assert store.sql("SELECT count(*) AS n FROM group_sharpness").to_dicts() == [{"n": 0}]
    q = get_query("sharpness")
    assert store.sql(q.sql, q.bind()).height == 0
