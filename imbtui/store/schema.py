"""The run store's tables: one place that names every column and its type.

The writer casts what the trainer hands it to these types, and the reader builds an empty, typed view
from them when a table has no part yet, so a query over a fresh store never fails on a missing table.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import polars as pl
import pyarrow as pa

# table -> ordered {column: polars dtype}. Every table carries run_id; it is stored in each part (a
# constant column costs a few bytes in Parquet) so any part can be read on its own.
TABLES: dict[str, dict[str, pl.DataType]] = {
    "classes": {
        "run_id": pl.String(),
        "class_id": pl.Int32(),
        "class_name": pl.String(),
        "train_count": pl.Int64(),
        "test_count": pl.Int64(),
        "rank": pl.Int32(),
        "grp": pl.String(),
        "shot": pl.String(),
    },
    "steps": {
        "run_id": pl.String(),
        "step": pl.Int64(),
        "epoch": pl.Int32(),
        "class_id": pl.Int32(),
        "n": pl.Int64(),
        "loss_sum": pl.Float64(),
        "correct": pl.Int64(),
        "p_true_sum": pl.Float64(),
        "margin_sum": pl.Float64(),
        "pred_count": pl.Int64(),
        "grad_norm": pl.Float64(),
        "lr": pl.Float64(),
        # grad_norm split by the samples it comes from: the class's own (pos) and the others' (neg)
        "grad_pos": pl.Float64(),
        "grad_neg": pl.Float64(),
    },
    "epochs": {
        "run_id": pl.String(),
        "epoch": pl.Int32(),
        "step": pl.Int64(),
        "split": pl.String(),
        "class_id": pl.Int32(),
        "n": pl.Int64(),
        "correct": pl.Int64(),
        "loss_sum": pl.Float64(),
        "p_true_sum": pl.Float64(),
        "feature_norm": pl.Float64(),
        "weight_norm": pl.Float64(),
        "bias": pl.Float64(),
    },
    # Post-hoc logit adjustment (Menon et al. 2021) at each evaluation: per split, tau and class,
    # how many of the class's samples argmax_c z_c - tau * log pi_c classifies correctly, pi_c the
    # class's share of the training set (trainer.dynamics, "post-hoc logit adjustment").
    "posthoc": {
        "run_id": pl.String(),
        "epoch": pl.Int32(),
        "step": pl.Int64(),
        "split": pl.String(),
        "tau": pl.Float64(),
        "class_id": pl.Int32(),
        "n": pl.Int64(),
        "correct": pl.Int64(),
    },
    # Logit statistics at each evaluation, from the same eval passes as `epochs`: per split and
    # class y, sums over its samples of z_y, of max_{c != y} z_c and of ||z||_2 (float64), and the
    # samples of the whole split predicted (argmax) as the class (trainer.dynamics, "logit
    # statistics").
    "logits": {
        "run_id": pl.String(),
        "epoch": pl.Int32(),
        "step": pl.Int64(),
        "split": pl.String(),
        "class_id": pl.Int32(),
        "n": pl.Int64(),
        "own_logit_sum": pl.Float64(),
        "other_logit_sum": pl.Float64(),
        "norm_sum": pl.Float64(),
        "pred_count": pl.Int64(),
    },
    # Gradient probes every K steps: the full-model gradient of one group's loss on the batch.
    "probes": {
        "run_id": pl.String(),
        "step": pl.Int64(),
        "epoch": pl.Int32(),
        "grp": pl.String(),
        "n": pl.Int64(),
        "grad_norm": pl.Float64(),
        "cos_to_batch": pl.Float64(),
        "cos_other": pl.Float64(),  # cosine with the other group's gradient at the same step
    },
    # Gradient conflict (trainer.conflict, `--conflict-every`): cosines between the classes'
    # full-model gradients at a recorded step; with C <= 20 a row per ordered class pair (the whole
    # matrix), else a row per group pair (class_a, class_b NULL: the mean over its class pairs).
    "conflict": {
        "run_id": pl.String(),
        "step": pl.Int64(),
        "epoch": pl.Int32(),
        "class_a": pl.Int32(),
        "class_b": pl.Int32(),
        "grp_a": pl.String(),
        "grp_b": pl.String(),
        "pairs": pl.Int64(),
        "cos": pl.Float64(),
    },
    # Directional noise at the same steps: each group's mini-batch gradient against its gradient
    # over the whole training set.
    "direction": {
        "run_id": pl.String(),
        "step": pl.Int64(),
        "epoch": pl.Int32(),
        "grp": pl.String(),
        "n": pl.Int64(),
        "cos_to_full": pl.Float64(),
    },
    # Each training sample at each presentation, from the training forward pass.
    "samples": {
        "run_id": pl.String(),
        "epoch": pl.Int32(),
        "step": pl.Int64(),
        "sample_id": pl.Int64(),
        "class_id": pl.Int32(),
        "correct": pl.Boolean(),
        "p_true": pl.Float64(),
        "loss": pl.Float64(),
        "pos": pl.Int32(),  # position in the (global) batch: a sampler with replacement may
        #                     present one sample twice in a step
    },
    # Feature geometry per epoch, split and class, from the eval passes (trainer.dynamics, section
    # "feature geometry": formulas and sources). "Centred" is minus the split's global sample mean
    # mu_G = (1/N) sum_i h_i (Papyan et al. 2020's mu_G; Fang et al. 2021's code centres on it too).
    # Parts written before nc3 existed centred on the mean of the class means instead.
    "geometry": {
        "run_id": pl.String(),
        "epoch": pl.Int32(),
        "step": pl.Int64(),
        "split": pl.String(),
        "class_id": pl.Int32(),
        "n": pl.Int64(),
        "mean_norm": pl.Float64(),   # ||mu_c - mu_G||
        "within_var": pl.Float64(),  # tr Sigma_W,c = mean ||h - mu_c||^2
        "within_rel": pl.Float64(),  # within_var / tr Sigma_B: the class's within-class variability
        #                              relative to the between-class spread (a trace ratio, not
        #                              NC1: see geometry_summary.nc1; older parts called it nc1)
        "cos_mean": pl.Float64(),    # mean cosine of the centred class mean to the others
        "cos_max": pl.Float64(),     # ... and to the nearest one
        "shift": pl.Float64(),       # test rows: ||mu_c(test) - mu_c(train)||
        "shift_rel": pl.Float64(),   # test rows: shift / sqrt(within_var(train))
    },
    # One row per epoch and split: neural-collapse (Papyan et al. 2020) and minority-collapse
    # (Fang et al. 2021) summaries, over the classes present in the split (C of them), centred
    # on mu_G as above.
    "geometry_summary": {
        "run_id": pl.String(),
        "epoch": pl.Int32(),
        "step": pl.Int64(),
        "split": pl.String(),
        # NC1 = Tr(Sigma_W Sigma_B^+) / C (Papyan et al. 2020): Sigma_W = (1/N) sum_i (h_i -
        # mu_c)(h_i - mu_c)^T over every sample, Sigma_B = (1/C) sum_c (mu_c - mu_G)(mu_c - mu_G)^T,
        # ^+ its pseudo-inverse of rank C-1 (as the reference code's svds(Sb, k=C-1)). NULL in
        # older parts, whose nc1 was the trace ratio now called within_rel.
        "nc1": pl.Float64(),
        "within_rel": pl.Float64(),   # mean_c within_rel_c = within_var / between_var (not NC1)
        "within_var": pl.Float64(),   # mean_c tr Sigma_W,c (each class once)
        "between_var": pl.Float64(),  # tr Sigma_B = mean_c ||mu_c - mu_G||^2
        "cos_mean": pl.Float64(),     # mean pairwise cosine of the centred class means
        "cos_std": pl.Float64(),      # NC2 equiangularity: the std of those cosines
        "norm_cv": pl.Float64(),      # NC2 equinorm: std_c / mean_c of ||mu_c - mu_G|| (ddof 0)
        "nc2_angle": pl.Float64(),    # NC2 max-angle: mean_{c != c'} |cos + 1/(C-1)| (0: an ETF)
        "nc3": pl.Float64(),          # NC3 self-duality: ||W/||W||_F - M/||M||_F||_F^2, W the C x D
        #                               classifier weight as stored (LDAM's NormedLinear's too),
        #                               M the centred class means (rows mu_c - mu_G)
        "majority_cos": pl.Float64(),  # minority collapse (Fang et al.): mean pairwise cosine of
        "minority_cos": pl.Float64(),  # the group's class means, centred on mu_G as their code does
        "w_cos_mean": pl.Float64(),      # mean pairwise cosine of the classifier rows, uncentred
        "w_majority_cos": pl.Float64(),  # (as Fang et al.'s code): every class, the majority's,
        "w_minority_cos": pl.Float64(),  # the minority's (rising toward 1: minority collapse)
    },
    # Sharpness per group (trainer.hessian, `--sharpness-every`; Rangwani et al. 2022): the
    # extreme Hessian eigenvalues of the group's training loss (mean cross-entropy over a fixed
    # subset of its samples, eval mode, float32) by power iteration and Lanczos on Hessian-vector
    # products.
    "sharpness": {
        "run_id": pl.String(),
        "epoch": pl.Int32(),
        "step": pl.Int64(),
        "grp": pl.String(),
        "n": pl.Int64(),
        "lambda_max": pl.Float64(),
        "lambda_min": pl.Float64(),
        "iters": pl.Int32(),          # Hessian-vector products of the power iteration
        "iters_lanczos": pl.Int32(),  # ... and of the Lanczos run
    },
}

# Columns added to a table after its first parts were written: an older part (or a hand-built one)
# may lack them. The writer stores them as NULL when not given; readers see NULL for old parts.
ADDED: dict[str, frozenset[str]] = {
    "steps": frozenset({"grad_pos", "grad_neg"}),
    "probes": frozenset({"cos_other"}),
    "samples": frozenset({"pos"}),
    "geometry": frozenset({"within_rel"}),
    "geometry_summary": frozenset({"within_rel", "nc2_angle", "nc3"}),
}

# Columns whose name changed meaning: table -> (marker, {column: its column in older parts}). A part
# without the marker column was written before the change; there `column` reads from the old
# column, or is NULL where that is None (the old name meant something else). The per-class trace
# ratio was stored as `nc1` before `nc1` became Papyan et al.'s NC1 (a summary column only); an old
# summary's `nc1` is that trace ratio, so it reads as within_rel and its NC1 is NULL.
RENAMED: dict[str, tuple[str, dict[str, str | None]]] = {
    "geometry": ("within_rel", {"within_rel": "nc1"}),
    "geometry_summary": ("nc3", {"within_rel": "nc1", "nc1": None}),
}

# polars dtype -> DuckDB type name, for the empty views.
_DUCK = {
    pl.Int32(): "INTEGER",
    pl.Int64(): "BIGINT",
    pl.Float64(): "DOUBLE",
    pl.String(): "VARCHAR",
    pl.Boolean(): "BOOLEAN",
}


def duck_type(dtype: pl.DataType) -> str:
    return _DUCK[dtype]


# polars dtype -> Arrow type: the writer builds each part as an Arrow table (see writer.py).
_ARROW = {
    pl.Int32(): pa.int32(),
    pl.Int64(): pa.int64(),
    pl.Float64(): pa.float64(),
    pl.String(): pa.string(),
    pl.Boolean(): pa.bool_(),
}

# table -> its columns as (name, Arrow type), in order.
ARROW_TABLES: dict[str, list[tuple[str, pa.DataType]]] = {
    table: [(c, _ARROW[t]) for c, t in cols.items()] for table, cols in TABLES.items()
}


WEIGHTED_LOSSES = ("weighted-ce", "cb")  # losses whose class weights `cb_reduction` averages


def method_label(config: Mapping[str, Any]) -> str:
    """The method a run trained with, from its config (TrainConfig's field names), as every table,
    screen and default run name names it. The loss; `-drw` with deferred re-weighting; `-mean`
    when its class weights are averaged over the batch size (`--cb-reduction mean`, Cui et al.'s
    reduction) rather than the weight sum; then, each with a `+`, what else changed the training,
    in this order: the sampler, label smoothing (`ls`; label-aware: `las`), `mixup`, the
    optimiser (`sam`, `imbsam`), `maxnorm`, and the second stage (`crt`, `lws`, `tau-norm`,
    `cb-finetune`). E.g. ce, ldam-drw, cb-mean, ce+class-balanced, ce+maxnorm+cb-finetune."""
    def get(key: str) -> Any:
        return config.get(key)

    loss, drw = get("loss"), get("drw")
    label = (loss or "?") + ("-drw" if drw is not None else "")
    if get("cb_reduction") == "mean" and (loss in WEIGHTED_LOSSES or drw is not None):
        label += "-mean"
    parts = [label]
    if get("sampler") not in (None, "", "none"):
        parts.append(get("sampler"))
    if get("smoothing_tail") is not None:
        parts.append("las")
    elif (get("smoothing") or 0) > 0:
        parts.append("ls")
    if (get("mixup") or 0) > 0:
        parts.append("mixup")
    if get("optimizer") not in (None, "", "sgd"):
        parts.append(get("optimizer"))
    if get("max_norm") is not None:
        parts.append("maxnorm")
    if get("stage2") not in (None, "", "none"):
        parts.append(get("stage2"))
    return "+".join(parts)


# Columns of the `runs` view, in order; built from run.json files by the reader.
RUN_COLUMNS: dict[str, pl.DataType] = {
    "run_id": pl.String(),
    "name": pl.String(),
    "status": pl.String(),
    "recorded_status": pl.String(),
    "created_at": pl.Datetime("us", "UTC"),
    "finished_at": pl.Datetime("us", "UTC"),
    "heartbeat_at": pl.Datetime("us", "UTC"),
    "dataset": pl.String(),
    "profile": pl.String(),
    "ratio": pl.Float64(),
    "minority_fraction": pl.Float64(),
    "n_classes": pl.Int32(),
    "model": pl.String(),
    "loss": pl.String(),
    "sampler": pl.String(),
    "drw": pl.Int32(),  # deferred re-weighting from this epoch; NULL without
    "method": pl.String(),  # loss, drw and sampler as one label: ce, ldam-drw, ce+class-balanced
    "epochs": pl.Int32(),  # of the first stage
    "stage2": pl.String(),  # the second stage (crt, lws, tau-norm, cb-finetune); 'none' without
    "stage2_epochs": pl.Int32(),
    "steps_per_epoch": pl.Int64(),
    "batch_size": pl.Int32(),
    "lr": pl.Float64(),
    "seed": pl.Int64(),          # initialisation, batch order, augmentation
    "subset_seed": pl.Int64(),   # which samples the long-tailed subset keeps
    "cb_reduction": pl.String(),  # how class-weighted losses average a batch
    "device": pl.String(),
    "epoch_done": pl.Int32(),
    "step_done": pl.Int64(),
    "total_steps": pl.Int64(),
    "message": pl.String(),
    "config": pl.String(),
    "code_version": pl.String(),
}
