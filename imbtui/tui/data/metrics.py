"""The metric registry: every curve the run and compare screens can draw, and how it is drawn.

A `Metric` names one quantity (its label, its help text, its y-scale, whether it exists per class);
`y_range`, `ema`, `forward_fill` and `last_value` are the plain-Python helpers that turn the series
the curves module reads into what a sparkline shows. No DuckDB and no Textual here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

Series = list[float | None]
GROUPS = ("majority", "minority")


@dataclass(frozen=True)
class Metric:
    """One quantity a curve can show, declared once: the help screen and every row read it here."""

    key: str
    label: str
    scale: str  # unit: 0..1 · zero: 0..max · sym: -1..1 · free: min..max (over compared curves)
    help: str
    per_class: bool = True


METRICS: tuple[Metric, ...] = (
    Metric("train_acc", "train accuracy", "unit", "mean over the group's classes of each class's "
           "accuracy: sum(correct) / sum(n) over the bucket's training batches (step; a class "
           "absent from them is left out) or the eval pass over the training set (epoch)"),
    Metric("test_acc", "test accuracy", "unit", "mean over the group's classes of each class's "
           "accuracy on the balanced test set, per epoch"),
    Metric("loss", "train loss", "zero", "mean over the group's classes of each class's mean "
           "cross-entropy on training samples"),
    Metric("confidence", "confidence", "unit", "mean over the group's classes of each class's "
           "mean predicted probability of the true class"),
    Metric("margin", "margin", "free", "mean over the group's classes of each class's mean true "
           "logit minus the best other logit (steps only)"),
    Metric("grad_norm", "gradient norm", "zero", "norm of the gradient of the group's classifier "
           "rows (last layer), mean over the bucket's steps"),
    Metric("grad_own", "own-grad share", "unit", "how much of the group's classifier-row gradient "
           "comes from its own samples: sum(grad_pos) / sum(grad_pos + grad_neg) over the group's "
           "classes and the bucket's steps (grad_pos: the norm of the part from the class's own "
           "samples, grad_neg: from all other samples). 1 = rows only pulled toward their class, "
           "0 = only pushed away by the others'; a ratio of sums like accuracy (the accumulated "
           "pos/neg ratio of EQL v2, as pos / (pos + neg)), so a row whose gradient is tiny does "
           "not weigh as much as one that moves"),
    Metric("pred_share", "prediction share", "unit", "fraction of all predictions that go to the "
           "group's classes (balanced data: its share of classes)"),
    Metric("weight_norm", "classifier norm", "zero", "mean norm of the group's classifier rows "
           "(epochs)"),
    Metric("w_cos", "classifier cos", "sym", "mean pairwise cosine of the group's classifier rows "
           "(geometry_summary.w_majority_cos / w_minority_cos, per epoch): minority collapse "
           "(Fang et al. 2021) shows as the minority's rising toward 1", per_class=False),
    Metric("feature_norm", "feature norm", "zero", "mean penultimate-feature norm of the group's "
           "training samples (epochs)"),
    Metric("logit_norm", "logit norm", "zero", "mean over the group's classes of each class's "
           "mean logit norm ||z||_2 on the training set's eval pass, per epoch (logit_results; "
           "the logit norm as Wei et al. 2022's LogitNorm discusses it)", per_class=False),
    Metric("logit_margin", "logit margin", "free", "mean over the group's classes of each "
           "class's mean own logit minus its largest other logit on the training set's eval "
           "pass, per epoch (logit_results.margin; `margin` is the same on the training "
           "batches)", per_class=False),
    Metric("within_rel", "within/between", "zero", "each class's within-class variability of "
           "the training features relative to the between-class spread (geometry.within_rel = "
           "tr Sigma_W,c / tr Sigma_B, a trace ratio, not NC1), mean over the group's classes, "
           "per epoch from epoch 1 (the untrained network's is off the scale); falls toward 0 as "
           "the features collapse onto their class means. NC1 itself (Papyan et al. 2020, "
           "Tr(Sigma_W Sigma_B^+)/C) is one number per split, not per group: "
           "geometry_summary.nc1, `imbtui query geometry`"),
    Metric("probe_grad", "model grad norm", "zero", "full-model gradient norm of the group's loss "
           "(gradient probes)", per_class=False),
    Metric("probe_cos", "grad cosine", "sym", "cosine between the group's full-model gradient and "
           "the whole batch's (gradient probes)", per_class=False),
    Metric("sharpness", "sharpness", "free", "largest Hessian eigenvalue of the group's "
           "training loss at the epochs recorded with --sharpness-every (group_sharpness; "
           "Rangwani et al. 2022: the minority's loss sits at sharper points)", per_class=False),
    Metric("curvature_min", "lowest curvature", "free", "smallest Hessian eigenvalue of the "
           "group's training loss at the same epochs (group_sharpness; below 0: a direction of "
           "negative curvature, a saddle point's sign)", per_class=False),
    Metric("conflict", "class grad cos", "sym", "mean cosine between two distinct classes' "
           "full-model gradients within the group, at the steps recorded with --conflict-every "
           "(group_conflict, majority/majority and minority/minority; below 0: the classes pull "
           "the model apart)", per_class=False),
    Metric("direction", "batch/whole cos", "sym", "cosine between the group's mini-batch "
           "gradient and its whole-training-set gradient at the same steps (the direction table; "
           "well below 1: a noisy direction, Francazi et al. 2023)", per_class=False),
    Metric("forgetting", "forgetting", "zero", "per epoch, the share of the group's training "
           "presentations that are forgetting events (correct at the sample's previous "
           "presentation, wrong now: Toneva et al. 2019, as in queries/memorisation.sql), out of "
           "the presentations that have a previous one (so the first epoch has none)"),
)
METRIC = {m.key: m for m in METRICS}
CLASS_METRICS = tuple(m.key for m in METRICS if m.per_class and m.key not in ("margin",))


def y_range(metric: str, curves: list[Series]) -> tuple[float, float]:
    """The one y-range every compared curve of `metric` is drawn on."""
    scale = METRIC[metric].scale
    if scale == "unit":
        return 0.0, 1.0
    if scale == "sym":
        return -1.0, 1.0
    values = [v for c in curves for v in c if v is not None and math.isfinite(v)]
    if not values:
        return 0.0, 1.0
    hi = max(values)
    lo = 0.0 if scale == "zero" else min(values)
    return (lo, hi) if hi > lo else (lo, lo + 1.0)


def ema(values: Series, alpha: float) -> Series:
    """Exponential moving average (weight `alpha` on the past); gaps stay gaps."""
    if alpha <= 0:
        return list(values)
    out: Series = []
    acc: float | None = None
    for v in values:
        if v is None or not math.isfinite(v):
            out.append(None)
            continue
        acc = v if acc is None else alpha * acc + (1 - alpha) * v
        out.append(acc)
    return out


def forward_fill(values: Series) -> Series:
    """Carry each point to the right until the next one (per-epoch points on a step axis)."""
    last_seen = max((i for i, v in enumerate(values) if v is not None), default=-1)
    out: Series = []
    cur: float | None = None
    for i, v in enumerate(values):
        cur = v if v is not None else cur
        out.append(cur if i <= last_seen else None)
    return out


def last_value(values: Series) -> float | None:
    """The last point that is not a gap (None when the series is empty)."""
    return next((v for v in reversed(values) if v is not None), None)
