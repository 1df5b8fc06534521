"""The optimiser steppers (trainer.sharpness) against separately written transcriptions of their
reference code, on a small float64 MLP and random batches.

- SAM: davda54/sam, `sam.py` (`SAM.first_step` / `SAM.second_step`, adaptive off), driven as its
  README does (first forward, backward, first_step(zero_grad=True); second forward, backward,
  second_step(zero_grad=True)) around torch.optim.SGD(momentum=0.9, weight_decay).
- ImbSAM: cool-xuan/Imbalanced_SAM, `utils/trainval.py` (`forbackward`, optim_mode 'imbsam') with
  the `ImbSAM` class of `imbsam.py` (first_step / second_step / third_step).

The steppers are driven as the training loop drives them: one forward, per-sample terms
F.cross_entropy(reduction='none') / N, `terms.sum().backward(retain_graph=stepper.keeps_graph)`,
then `stepper.step(terms, y, terms_at)`. The transcriptions use the references' own losses (a mean,
boolean-masked sums), so the two agree to round-off, not bit for bit: float64 tolerances from
tests/tolerance.py. The last test runs both methods under torchrun (two gloo ranks, DDP) against
one process on the global batch.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from tests.tolerance import rel
from trainer.options import OPTIMIZERS
from trainer.sharpness import ImbSAMStep, SAMStep, SGDStep, make_stepper

REPO = Path(__file__).resolve().parents[2]
N, D, H, C = 32, 6, 16, 5          # batch, inputs, hidden units, classes
LR, MOMENTUM, WD = 0.1, 0.9, 5e-4   # the run's SGD
STEPS = 3                           # momentum carries over: more than one step
MINORITY = torch.tensor([False, False, False, True, True])  # classes 3, 4 play ImbSAM's tail
TAIL_CLASSES = MINORITY.nonzero().view(-1)                   # the reference's `tail_classes`
# A float64 result of these steps: each gradient entry sums N samples' terms and fan-in products;
# STEPS steps accumulate (tests/tolerance.py rel). Taken against the largest weight (the updates
# and the perturbations are smaller than the weights they move).
TOL = rel(STEPS * (N + H + D), "float64")


def mlp(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(D, H), torch.nn.Tanh(),
                               torch.nn.Linear(H, C)).double()


def sgd(model: torch.nn.Module) -> torch.optim.SGD:
    return torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM, weight_decay=WD)


def batches(seed: int, tail: bool = True) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """STEPS random batches; without `tail`, labels of the head classes (0, 1, 2) only."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(STEPS):
        x = torch.randn(N, D, generator=g, dtype=torch.float64)
        y = torch.randint(0, C if tail else 3, (N,), generator=g)
        out.append((x, y))
    if tail:
        assert all(MINORITY[y].any() and not MINORITY[y].all() for _, y in out)
    return out


def terms(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-sample terms of the batch loss (the `Objective.terms` contract): their sum is the mean
    cross-entropy."""
    return F.cross_entropy(model(x), y, reduction="none") / len(y)


def train_ours(name: str, model: torch.nn.Module, data, rho: float = 0.05) -> torch.nn.Module:
    """`name`'s stepper, driven as trainer.loop.train_step drives it."""
    opt = sgd(model)
    params = [p for p in model.parameters() if p.requires_grad]
    stepper = make_stepper(name, opt, params, rho, MINORITY)
    for x, y in data:
        first = terms(model, x, y)
        first.sum().backward(retain_graph=stepper.keeps_graph)
        stepper.step(first, y, lambda x=x, y=y: terms(model, x, y))
        assert all(p.grad is None for p in model.parameters())  # left zeroed (set to None)
    return model


def flat(model: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


def assert_weights(got: torch.nn.Module, want: torch.nn.Module, start: torch.Tensor,
                   tol: float = TOL) -> None:
    a, b = flat(got), flat(want)
    torch.testing.assert_close(a, b, rtol=0, atol=tol * float(b.abs().max()))
    assert not torch.equal(b, start)  # the weights did move


# ==== the references, transcribed =================================================================

def reference_sam(model: torch.nn.Module, data, rho: float) -> torch.nn.Module:
    """davda54/sam, sam.py, adaptive=False, around torch.optim.SGD (its `base_optimizer`):

        def first_step(self, zero_grad=False):
            grad_norm = self._grad_norm()
            for group in self.param_groups:
                scale = group["rho"] / (grad_norm + 1e-12)
                for p in group["params"]:
                    if p.grad is None: continue
                    e_w = p.grad * scale.to(p)
                    p.add_(e_w)  # climb to the local maximum "w + e(w)"
                    self.state[p]["e_w"] = e_w
            if zero_grad: self.zero_grad()

        def second_step(self, zero_grad=False):
            for group in self.param_groups:
                for p in group["params"]:
                    if p.grad is None: continue
                    p.sub_(self.state[p]["e_w"])  # get back to "w" from "w + e(w)"
            self.base_optimizer.step()  # do the actual "sharpness-aware" update
            if zero_grad: self.zero_grad()

        def _grad_norm(self):
            norm = torch.norm(torch.stack([p.grad.norm(p=2).to(shared_device)
                              for group in self.param_groups for p in group["params"]
                              if p.grad is not None]), p=2)
    """
    base = sgd(model)
    for x, y in data:
        # README: first forward-backward pass
        F.cross_entropy(model(x), y).backward()
        with torch.no_grad():  # first_step
            grad_norm = torch.norm(torch.stack([p.grad.norm(p=2) for p in model.parameters()
                                                if p.grad is not None]), p=2)
            scale = rho / (grad_norm + 1e-12)
            e_w = {}
            for p in model.parameters():
                if p.grad is None:
                    continue
                e_w[p] = p.grad * scale.to(p)
                p.add_(e_w[p])
        base.zero_grad()
        # README: second forward-backward pass
        F.cross_entropy(model(x), y).backward()
        with torch.no_grad():  # second_step
            for p in model.parameters():
                if p.grad is None:
                    continue
                p.sub_(e_w[p])
        base.step()
        base.zero_grad()
    return model


def reference_imbsam(model: torch.nn.Module, data, rho: float) -> torch.nn.Module:
    """cool-xuan/Imbalanced_SAM: utils/trainval.py, forbackward, optim_mode == 'imbsam', with
    `lossFunc = nn.CrossEntropyLoss(reduction='none')` (scripts/train.py):

        tail_mask = torch.where((targets[:, None] == tail_classes[None, :]
                                 .to(targets.device)).sum(1) == 1, True, False)
        head_loss = loss[~tail_mask].sum() / targets.size(0)
        head_loss.backward(retain_graph=True)
        optimizer.first_step()
        tail_loss = loss[tail_mask].sum() / targets.size(0)
        tail_loss.backward()
        optimizer.second_step()
        logits = model(images)
        tail_loss = lossFunc(logits[tail_mask], targets[tail_mask]).sum() / targets.size(0)
        tail_loss.backward()
        optimizer.third_step()

    and imbsam.py, class ImbSAM (each loop skips `if p.grad is None`):

        first_step:  grad_normal[...] = p.grad[...]; self.optimizer.zero_grad()
        second_step: grad_norm = torch.norm(torch.stack(grads), p=2) + 1.e-16
                     eps[...] = p.grad[...]; eps.mul_(self.rho / grad_norm); p.add_(eps)
                     self.optimizer.zero_grad()
        third_step:  p.sub_(self.state[p]["eps"]); p.grad.add_(self.state[p]["grad_normal"])
                     self.optimizer.step(); self.optimizer.zero_grad()
    """
    base = sgd(model)
    for x, y in data:
        loss = F.cross_entropy(model(x), y, reduction="none")
        tail_mask = torch.where((y[:, None] == TAIL_CLASSES[None, :]).sum(1) == 1, True, False)
        head_loss = loss[~tail_mask].sum() / y.size(0)
        head_loss.backward(retain_graph=True)
        with torch.no_grad():  # first_step
            grad_normal = {p: p.grad.clone() for p in model.parameters() if p.grad is not None}
        base.zero_grad()
        tail_loss = loss[tail_mask].sum() / y.size(0)
        tail_loss.backward()
        with torch.no_grad():  # second_step
            grads = [torch.norm(p.grad, p=2) for p in model.parameters() if p.grad is not None]
            grad_norm = torch.norm(torch.stack(grads), p=2) + 1.e-16
            eps = {}
            for p in model.parameters():
                if p.grad is None:
                    continue
                eps[p] = p.grad.clone().mul_(rho / grad_norm)
                p.add_(eps[p])
        base.zero_grad()
        logits = model(x)
        tail_loss = F.cross_entropy(logits[tail_mask], y[tail_mask],
                                    reduction="none").sum() / y.size(0)
        tail_loss.backward()
        with torch.no_grad():  # third_step
            for p in model.parameters():
                if p.grad is None:
                    continue
                p.sub_(eps[p])
                p.grad.add_(grad_normal[p])
        base.step()
        base.zero_grad()
    return model


# ==== the tests ===================================================================================

def test_make_stepper_covers_every_option_choice() -> None:
    model = mlp()
    params = list(model.parameters())
    kinds = {name: type(make_stepper(name, sgd(model), params, 0.05, MINORITY))
             for name in OPTIMIZERS}
    assert kinds == {"sgd": SGDStep, "sam": SAMStep, "imbsam": ImbSAMStep}
    # only ImbSAM backpropagates through the first pass's graph again
    assert {n: k.keeps_graph for n, k in kinds.items()} == {"sgd": False, "sam": False,
                                                            "imbsam": True}
    with pytest.raises(ValueError, match="unknown optimizer"):
        make_stepper("adam", sgd(model), params, 0.05, MINORITY)
    with pytest.raises(ValueError, match="rho must be > 0"):
        make_stepper("sam", sgd(model), params, 0.0, MINORITY)


def test_sgd_stepper_is_the_optimizer_step() -> None:
    data = batches(1)
    want, start = mlp(), flat(mlp())
    opt = sgd(want)
    for x, y in data:
        terms(want, x, y).sum().backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    got = train_ours("sgd", mlp(), data)
    assert torch.equal(flat(got), flat(want))  # one code path, the same operations
    assert not torch.equal(flat(got), start)


@pytest.mark.parametrize("rho", [0.05, 0.5])
def test_sam_equals_davda54_sam(rho: float) -> None:
    data, start = batches(2), flat(mlp())
    assert_weights(train_ours("sam", mlp(), data, rho), reference_sam(mlp(), data, rho), start)


@pytest.mark.parametrize("rho", [0.05, 0.5])
def test_imbsam_equals_the_reference(rho: float) -> None:
    data, start = batches(3), flat(mlp())
    assert_weights(train_ours("imbsam", mlp(), data, rho), reference_imbsam(mlp(), data, rho),
                   start)


def test_imbsam_is_not_sam_nor_sgd() -> None:
    """The reference checks above could pass for a stepper that ignored the split: ImbSAM's
    update differs from both SAM's and SGD's by far more than round-off."""
    data = batches(3)
    imb = flat(train_ours("imbsam", mlp(), data))
    for other in ("sam", "sgd"):
        diff = float((imb - flat(train_ours(other, mlp(), data))).abs().max())
        assert diff > 1e6 * TOL * float(imb.abs().max()), other


def test_imbsam_without_tail_samples_is_sgd_and_the_reference() -> None:
    """No minority sample in the batch: g_T = 0, so e_T = 0 * rho / 1e-16 = 0 exactly, the weights
    are not moved, the tail's gradient at w + e_T is exactly 0 (every term times a 0.0 mask) and
    the head's gradient is g - 0 = g: the very SGD step, bit for bit. The reference (an empty
    boolean mask) does the same to round-off."""
    data, start = batches(4, tail=False), flat(mlp())
    want = flat(train_ours("sgd", mlp(), data))
    got = train_ours("imbsam", mlp(), data)
    assert torch.equal(flat(got), want)
    assert_weights(got, reference_imbsam(mlp(), data, 0.05), start)


@pytest.mark.parametrize("name", ["sam", "imbsam"])
def test_rho_to_zero_is_sgd(name: str) -> None:
    """As rho -> 0 the step tends to SGD's, at first order in rho: the weights' distance from the
    SGD run, divided by rho, settles to a constant (the curvature term) and so shrinks tenfold
    with rho. At rho = 1e-30 the perturbation is below half an ulp of every weight, w + e = w,
    and the step is SGD's to the round-off of g_H + g_T."""
    data = batches(5)
    base = flat(train_ours("sgd", mlp(), data))
    slope = []
    for rho in (1e-3, 1e-4, 1e-5):
        diff = float((flat(train_ours(name, mlp(), data, rho)) - base).abs().max())
        slope.append(diff / rho)
    assert slope[0] > 0
    # second order in rho: the slopes at 1e-4 and 1e-5 agree to well within 1%
    assert slope[2] == pytest.approx(slope[1], rel=1e-2)
    tiny = train_ours(name, mlp(), data, 1e-30)
    torch.testing.assert_close(flat(tiny), base, rtol=0,
                               atol=TOL * float(base.abs().max()))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("name", OPTIMIZERS)
def test_no_host_sync_in_a_step(name: str) -> None:
    """Under CUDA's sync debug mode "error", a step of every stepper (the loop's backward
    included) runs without synchronising the host."""
    dev = torch.device("cuda")
    model = mlp().float().to(dev)
    opt = torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM, weight_decay=WD)
    stepper = make_stepper(name, opt, list(model.parameters()), 0.05, MINORITY.to(dev))
    for x, y in batches(6) + batches(7, tail=False):
        x, y = x.float().to(dev), y.to(dev)
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            first = terms(model, x, y)
            first.sum().backward(retain_graph=stepper.keeps_graph)
            stepper.step(first, y, lambda x=x, y=y: terms(model, x, y))
        finally:
            torch.cuda.set_sync_debug_mode("default")
    assert torch.isfinite(flat(model)).all()


# ==== two ranks under torchrun: the step of the global batch ======================================

DDP_SCRIPT = r"""
import sys
import torch
import torch.nn.functional as F
from trainer import distributed
from trainer.sharpness import make_stepper

torch.set_num_threads(1)
dev = distributed.setup(torch.device("cpu"))
r, w = distributed.rank(), distributed.world_size()
saved = torch.load(sys.argv[1])
out = {}
for name in ("sam", "imbsam"):
    model = torch.nn.Sequential(torch.nn.Linear(saved["D"], saved["H"]), torch.nn.Tanh(),
                                torch.nn.Linear(saved["H"], saved["C"])).double()
    model.load_state_dict(saved["init"])
    forward = distributed.wrap(model, dev)
    opt = torch.optim.SGD(model.parameters(), lr=saved["lr"], momentum=saved["momentum"],
                          weight_decay=saved["wd"])
    stepper = make_stepper(name, opt, list(model.parameters()), saved["rho"], saved["minority"])
    for x, y in saved["data"]:
        x, y = distributed.shard(x), distributed.shard(y)  # this rank's half of the global batch
        terms_at = lambda: F.cross_entropy(forward(x), y, reduction="none") / len(y)
        first = terms_at()
        first.sum().backward(retain_graph=stepper.keeps_graph)
        stepper.step(first, y, terms_at)
    out[name] = {k: v.detach().clone() for k, v in model.state_dict().items()}
torch.save(out, f"{sys.argv[2]}/rank{r}.pt")
distributed.teardown()
distributed.leave(0)  # as the CLI ends a worker that used DDP: no interpreter shutdown to race
"""


@pytest.mark.slow
def test_two_ranks_under_torchrun_step_as_one_process(tmp_path: Path) -> None:
    """Each of two DDP ranks holds half of every batch (per-rank mean terms, DDP averages): SAM's
    and ImbSAM's weights must be the single process's on the whole batch. For ImbSAM this needs
    the stepper's own average of g_T over the ranks (autograd.grad bypasses DDP's all-reduce)."""
    data, rho = batches(8), 0.05
    torch.save({"D": D, "H": H, "C": C, "lr": LR, "momentum": MOMENTUM, "wd": WD, "rho": rho,
                "minority": MINORITY, "data": data, "init": mlp().state_dict()},
               tmp_path / "setup.pt")
    script = tmp_path / "ddp_steppers.py"
    script.write_text(DDP_SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           str(script), str(tmp_path / "setup.pt"), str(tmp_path)]
    proc = subprocess.run(cmd, cwd=REPO, env=env, text=True, capture_output=True, check=False,
                          timeout=180)
    assert proc.returncode == 0, proc.stderr
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1)]
    for name in ("sam", "imbsam"):
        want = train_ours(name, mlp(), data, rho)
        for r in (0, 1):
            got = mlp()
            got.load_state_dict(ranks[r][name])
            assert_weights(got, want, flat(mlp()))
