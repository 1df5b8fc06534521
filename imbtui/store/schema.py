"""The run store's tables: one place that names every column and its type.

The writer casts what the trainer hands it to these types, and the reader builds an empty, typed view
from them when a table has no part yet, so a query over a fresh store never fails on a missing table.
"""

from __future__ import annotations

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
    # Feature geometry per epoch, split and class, from the eval passes (trainer.dynamics).
    "geometry": {
        "run_id": pl.String(),
        "epoch": pl.Int32(),
        "step": pl.Int64(),
        "split": pl.String(),
        "class_id": pl.Int32(),
        "n": pl.Int64(),
        "mean_norm": pl.Float64(),   # ||mu_c - mu_G||
        "within_var": pl.Float64(),  # tr Sigma_W,c = mean ||h - mu_c||^2
        "nc1": pl.Float64(),         # within_var / tr Sigma_B
        "cos_mean": pl.Float64(),    # mean cosine of the centred class mean to the others
        "cos_max": pl.Float64(),     # ... and to the nearest one
        "shift": pl.Float64(),       # test rows: ||mu_c(test) - mu_c(train)||
        "shift_rel": pl.Float64(),   # test rows: shift / sqrt(within_var(train))
    },
    # One row per epoch and split: neural-collapse and minority-collapse summaries.
    "geometry_summary": {
        "run_id": pl.String(),
        "epoch": pl.Int32(),
        "step": pl.Int64(),
        "split": pl.String(),
        "nc1": pl.Float64(),
        "within_var": pl.Float64(),
        "between_var": pl.Float64(),
        "cos_mean": pl.Float64(),
        "cos_std": pl.Float64(),
        "norm_cv": pl.Float64(),
        "majority_cos": pl.Float64(),
        "minority_cos": pl.Float64(),
        "w_cos_mean": pl.Float64(),
        "w_majority_cos": pl.Float64(),
        "w_minority_cos": pl.Float64(),
    },
}

# Columns added to a table after its first parts were written: an older part (or a hand-built one)
# may lack them. The writer stores them as NULL when not given; readers see NULL for old parts.
ADDED: dict[str, frozenset[str]] = {
    "steps": frozenset({"grad_pos", "grad_neg"}),
    "probes": frozenset({"cos_other"}),
    "samples": frozenset({"pos"}),
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


def method_label(loss: str | None, drw: int | None, sampler: str | None) -> str:
    """The method a run trained with, as every table and screen names it: the loss, `-drw` with
    deferred re-weighting, `+sampler` with a sampler (ce, ldam-drw, ce+class-balanced)."""
    label = (loss or "?") + ("-drw" if drw is not None else "")
    return label if sampler in (None, "", "none") else f"{label}+{sampler}"


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
    "epochs": pl.Int32(),
    "batch_size": pl.Int32(),
    "lr": pl.Float64(),
    "seed": pl.Int64(),
    "device": pl.String(),
    "epoch_done": pl.Int32(),
    "step_done": pl.Int64(),
    "total_steps": pl.Int64(),
    "message": pl.String(),
    "config": pl.String(),
    "code_version": pl.String(),
}
