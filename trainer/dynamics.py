"""Per-class learning dynamics, accumulated on the device.

Per step: sums over the batch, by true class (n, loss, correct, p_true, margin) and by predicted class
(pred_count), plus the gradient norm of each classifier row -- written into a device buffer with
`index_add_`, never `.item()` / `.cpu()` / `bincount`, so the step never waits for the device. The
buffer goes to the host once per flush.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from trainer.distributed import dist_sum_, eval_shard

STEP_STATS = ("n", "loss_sum", "correct", "p_true_sum", "margin_sum", "pred_count", "grad_norm")
_INT_STATS = {"n", "correct", "pred_count"}


@torch.no_grad()
def per_sample_stats(logits: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Cross-entropy, correctness, p(true class) and margin (true logit - best other) per sample."""
    logits = logits.detach().float()
    logp = logits.log_softmax(1)
    logp_true = logp.gather(1, y[:, None]).squeeze(1)
    z_true = logits.gather(1, y[:, None]).squeeze(1)
    best_other = logits.scatter(1, y[:, None], float("-inf")).amax(1)
    pred = logits.argmax(1)
    return -logp_true, (pred == y), logp_true.exp(), z_true - best_other, pred


class StepRecorder:
    """A (capacity, C, len(STEP_STATS)) device buffer of per-step per-class sums."""

    def __init__(self, n_classes: int, capacity: int, device: torch.device) -> None:
        self.n_classes = n_classes
        self.capacity = capacity
        self.buf = torch.zeros(capacity, n_classes, len(STEP_STATS), device=device)
        self.steps: list[int] = []
        self.epochs: list[int] = []
        self.lrs: list[float] = []

    def __len__(self) -> int:
        return len(self.steps)

    @property
    def full(self) -> bool:
        return len(self.steps) >= self.capacity

    @torch.no_grad()
    def record(self, step: int, epoch: int, lr: float, logits: torch.Tensor, y: torch.Tensor,
               fc_grad: torch.Tensor | None) -> None:
        loss, correct, p_true, margin, pred = per_sample_stats(logits, y)
        row = self.buf[len(self.steps)]
        ones = torch.ones_like(loss)
        by_true = torch.stack([ones, loss, correct.float(), p_true, margin], 1)
        row[:, :5].index_add_(0, y, by_true)
        row[:, 5].index_add_(0, pred, ones)
        if fc_grad is not None:
            row[:, 6] = fc_grad.float().norm(dim=1)
        self.steps.append(step)
        self.epochs.append(epoch)
        self.lrs.append(lr)

    def drain(self) -> dict[str, np.ndarray]:
        """Host copy of the buffered steps as `steps` table columns; empties the buffer."""
        k, c = len(self.steps), self.n_classes
        arr = self.buf[:k].cpu().numpy().astype(np.float64)
        self.buf[:k].zero_()
        cols: dict[str, np.ndarray] = {
            "step": np.repeat(np.asarray(self.steps, dtype=np.int64), c),
            "epoch": np.repeat(np.asarray(self.epochs, dtype=np.int32), c),
            "class_id": np.tile(np.arange(c, dtype=np.int32), k),
        }
        for j, name in enumerate(STEP_STATS):
            v = arr[:, :, j].reshape(-1)
            cols[name] = np.rint(v).astype(np.int64) if name in _INT_STATS else v
        cols["lr"] = np.repeat(np.asarray(self.lrs, dtype=np.float64), c)
        self.steps, self.epochs, self.lrs = [], [], []
        return cols


@torch.no_grad()
def evaluate(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, n_classes: int,
             batch_size: int = 4096, prepare=None) -> dict[str, np.ndarray]:
    """Per-class n, correct, loss_sum, p_true_sum and mean penultimate feature norm, in eval mode.

    `prepare` maps a raw batch to model input (normalisation for image datasets, no augmentation).
    Under torchrun each rank evaluates its own slice of x and the per-class sums are added up
    across ranks on the device, so every rank returns the whole set's rows.
    """
    x, y = eval_shard(x, y)
    was_training = model.training
    model.eval()
    dev = x.device
    acc = torch.zeros(n_classes, 5, device=dev, dtype=torch.float64)
    for i in range(0, len(x), batch_size):
        xb, yb = x[i:i + batch_size], y[i:i + batch_size]
        if prepare is not None:
            xb = prepare(xb)
        h, logits = model.forward_features(xb)
        loss, correct, p_true, _, _ = per_sample_stats(logits, yb)
        stats = torch.stack([torch.ones_like(loss), correct.float(), loss, p_true,
                             h.float().norm(dim=1)], 1).double()
        acc.index_add_(0, yb, stats)
    model.train(was_training)
    dist_sum_(acc)
    a = acc.cpu().numpy()
    n = np.rint(a[:, 0]).astype(np.int64)
    with np.errstate(invalid="ignore", divide="ignore"):
        feat = np.where(n > 0, a[:, 4] / np.maximum(n, 1), np.nan)
    return {"n": n, "correct": np.rint(a[:, 1]).astype(np.int64), "loss_sum": a[:, 2],
            "p_true_sum": a[:, 3], "feature_norm": feat}


def classifier_rows(fc: torch.nn.Linear) -> tuple[np.ndarray, np.ndarray]:
    """(||w_c||, b_c) per class."""
    with torch.no_grad():
        w = fc.weight.detach().float().norm(dim=1).cpu().numpy().astype(np.float64)
        b = (fc.bias.detach().float().cpu().numpy().astype(np.float64) if fc.bias is not None
             else np.zeros(fc.out_features))
    return w, b
