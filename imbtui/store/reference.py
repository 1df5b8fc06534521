"""The store reference (docs/store.md), generated from the definitions the store is built from.

Column types come from `schema.TABLES` and `schema.RUN_COLUMNS`, row keys from `reader.KEY_COLUMNS`,
the semantic layer from `semantic.VIEWS` and `semantic.MACROS`; this module adds one sentence per
stored table and column (`TABLE_DOCS`, `RUN_DOCS`), and a test holds both to the schema (every
column described, nothing described that is not stored) and docs/store.md to `store_reference()`.

    python -m imbtui.store.reference > docs/store.md
"""

from __future__ import annotations

from imbtui.store.reader import KEY_COLUMNS
from imbtui.store.schema import RUN_COLUMNS, TABLES, duck_type
from imbtui.store.semantic import MACROS, VIEWS, reference_markdown

# table -> (what a row is, {column: definition}), in the schema's column order
TABLE_DOCS: dict[str, tuple[str, dict[str, str]]] = {
    "classes": ("Each class of a run's dataset, with its size in the long-tailed training set.", {
        "run_id": "the run",
        "class_id": "the class (0 = largest in the training set under the exp and step profiles)",
        "class_name": "the dataset's name for it",
        "train_count": "its samples in the long-tailed training set",
        "test_count": "its samples in the (balanced) test set",
        "rank": "0 = largest class in the training set",
        "grp": "'majority' or 'minority': a step profile's two plateaus, else the larger half of "
               "the classes by training count (ties by class id)",
        "shot": "'many' (> 100 training samples), 'medium' (20-100) or 'few' (< 20)",
    }),
    "steps": ("Each class at each training step: sums over the class's samples in the batch "
              "(before the update, network in training mode). A class absent from a batch has "
              "its row with n = 0.", {
        "run_id": "the run",
        "step": "the training step (0-based)",
        "epoch": "the epoch it belongs to (1-based)",
        "class_id": "the class",
        "n": "the class's samples in the batch",
        "loss_sum": "sum of their cross-entropy (plain CE whatever the objective)",
        "correct": "of them classified correctly",
        "p_true_sum": "sum of the probability given to the true class",
        "margin_sum": "sum of (true logit - largest other logit)",
        "pred_count": "samples of the batch predicted as this class",
        "grad_norm": "norm of the batch loss's gradient on the class's classifier row",
        "lr": "the learning rate of the step",
        "grad_pos": "norm of the part of that gradient from the class's own samples (NaN when "
                    "not recorded)",
        "grad_neg": "norm of the part from every other sample (NaN when not recorded)",
    }),
    "epochs": ("Each class at each evaluated epoch (0 = the untrained network), on the training "
               "set without augmentation and on the balanced test set, in eval mode.", {
        "run_id": "the run",
        "epoch": "the epoch evaluated after (0 = before training)",
        "step": "the step the epoch ended at",
        "split": "'train' or 'test'",
        "class_id": "the class",
        "n": "the class's samples in the split",
        "correct": "of them classified correctly",
        "loss_sum": "sum of their cross-entropy",
        "p_true_sum": "sum of the probability given to the true class",
        "feature_norm": "mean norm of their penultimate features",
        "weight_norm": "norm of the class's classifier row",
        "bias": "the class's classifier bias (0 without one)",
    }),
    "posthoc": (("Post-hoc logit adjustment (Menon et al. 2021) at each evaluated epoch, from "
                 "the same eval passes as `epochs`: per tau of `--posthoc-tau`, each class's "
                 "samples that argmax_c z_c - tau * log pi_c classifies correctly, z the logits "
                 "and pi_c = n_c / N the class's share of the long-tailed training set. Runs "
                 "recorded before the table existed have no rows."), {
        "run_id": "the run",
        "epoch": "the epoch evaluated after (0 = before training)",
        "step": "the step the epoch ended at",
        "split": "'train' or 'test'",
        "tau": "the adjustment's strength (0 = the plain logits: `correct` equals the epochs "
               "row's)",
        "class_id": "the class",
        "n": "the class's samples in the split (as in `epochs`)",
        "correct": "of them classified correctly by the adjusted logits",
    }),
    "logits": (("Logit statistics at each evaluated epoch, from the same eval passes as "
                "`epochs` (no extra forward pass): per split and class, sums over the class's "
                "samples of its own logit, of the largest other logit and of the logit vector's "
                "norm, and how many samples of the split are predicted as the class. The "
                "`logit_results` view turns them into means and prediction shares. Runs "
                "recorded before the table existed (or with `--dynamics off`) have no rows."), {
        "run_id": "the run",
        "epoch": "the epoch evaluated after (0 = before training)",
        "step": "the step the epoch ended at",
        "split": "'train' or 'test'",
        "class_id": "the class",
        "n": "the class's samples in the split (as in `epochs`)",
        "own_logit_sum": "sum over them of their own class's logit z_y",
        "other_logit_sum": "sum over them of the largest other logit max_{c != y} z_c",
        "norm_sum": "sum over them of the logit vector's norm ||z||_2",
        "pred_count": "samples of the whole split predicted as this class (argmax z, ties to "
                      "the first class)",
    }),
    "probes": ("Every K steps (`--probe-every`), each group's share of the batch loss: the "
               "norm of its full-model gradient and its cosines.", {
        "run_id": "the run",
        "step": "the probed step",
        "epoch": "its epoch",
        "grp": "'majority' or 'minority'",
        "n": "the group's samples in the batch",
        "grad_norm": "norm of the gradient of the group's share of the batch loss",
        "cos_to_batch": "its cosine with the whole batch's gradient, in [-1, 1] (NULL when the "
                        "group is absent from the batch)",
        "cos_other": "its cosine with the other group's gradient, in [-1, 1] (NULL when either "
                     "is absent)",
    }),
    "conflict": ("Gradient conflict (Francazi et al. 2023; `--conflict-every N`, steps 0, N, "
                 "2N, ...): cosines between the classes' full-model gradients, class c's being "
                 "the gradient of the sum of its samples' terms of the batch loss over every "
                 "trainable parameter. With C <= 20 classes a row per ordered class pair (the "
                 "whole C x C matrix: symmetric, 1 on the diagonal); with more, a row per group "
                 "pair whose class_a and class_b are NULL and whose cos is the mean over its "
                 "class pairs. The `group_conflict` view reads both alike.", {
        "run_id": "the run",
        "step": "the recorded step",
        "epoch": "its epoch",
        "class_a": "the first class (NULL on a group pair's row)",
        "class_b": "the second class (NULL on a group pair's row)",
        "grp_a": "class_a's group, or the pair's first group ('majority' or 'minority')",
        "grp_b": "class_b's group, or the pair's second group",
        "pairs": "class pairs the cosine is over: 1 on a class pair's row (0 when its cosine is "
                 "NULL); on a group pair's row its distinct class pairs with both classes in the "
                 "batch",
        "cos": "the cosine of the two classes' gradients in [-1, 1], or the mean over the "
               "group pair's class pairs (NULL when a class is absent from the batch, or no "
               "pair has both)",
    }),
    "direction": ("Directional noise at the `conflict` table's steps: per group, the cosine "
                  "between the mini-batch's group gradient (the sum of its classes' gradients) "
                  "and the group's gradient over the whole long-tailed training set, taken in "
                  "the model's current mode in chunks of the batch size (trainer/conflict.py).", {
        "run_id": "the run",
        "step": "the recorded step",
        "epoch": "its epoch",
        "grp": "'majority' or 'minority'",
        "n": "the group's samples in the batch",
        "cos_to_full": "cosine of the batch's group gradient with the whole set's, in [-1, 1] "
                       "(NULL when the group is absent from the batch)",
    }),
    "samples": ("Each training sample at each presentation, from the training forward pass.", {
        "run_id": "the run",
        "epoch": "the epoch of the presentation",
        "step": "its step",
        "sample_id": "index into the dataset's original training arrays (stable across epochs)",
        "class_id": "the sample's class",
        "correct": "classified correctly",
        "p_true": "probability given to the true class",
        "loss": "its cross-entropy",
        "pos": "its position in the (global) batch: a sampler with replacement may present one "
               "sample twice in a step",
    }),
    "geometry": ("Each class's penultimate-feature geometry at each evaluated epoch and split "
                 "(`--dynamics full`). Centred = minus the split's global sample mean mu_G "
                 "(Papyan et al. 2020; Fang et al. 2021's code); parts written before `nc3` "
                 "existed centred on the mean of the class means.", {
        "run_id": "the run",
        "epoch": "the evaluated epoch",
        "step": "the step it ended at",
        "split": "'train' or 'test'",
        "class_id": "the class",
        "n": "its samples in the split",
        "mean_norm": "||mu_c - mu_G||: norm of the centred class mean",
        "within_var": "tr Sigma_W,c = mean ||h - mu_c||^2 over the class's samples",
        "within_rel": "within_var / tr Sigma_B: the class's within-class variability relative "
                      "to the between-class spread (a trace ratio, not NC1)",
        "cos_mean": "mean cosine of the centred class mean to the other classes', in [-1, 1]",
        "cos_max": "its cosine to the nearest one, in [-1, 1]",
        "shift": "test rows: ||mu_c(test) - mu_c(train)|| (Ye et al. 2020)",
        "shift_rel": "test rows: shift / sqrt(within_var of the training split)",
    }),
    "geometry_summary": ("Neural collapse (Papyan et al. 2020) and minority collapse (Fang et "
                         "al. 2021) at each evaluated epoch and split, over the classes present "
                         "(C of them); centred as in `geometry`.", {
        "run_id": "the run",
        "epoch": "the evaluated epoch",
        "step": "the step it ended at",
        "split": "'train' or 'test'",
        "nc1": "NC1 = Tr(Sigma_W Sigma_B^+) / C, Sigma_B^+ the rank-(C-1) pseudo-inverse (NULL "
               "in parts written before it was stored)",
        "within_rel": "mean over classes of geometry.within_rel (a trace ratio, not NC1)",
        "within_var": "mean over classes of tr Sigma_W,c",
        "between_var": "tr Sigma_B = mean over classes of ||mu_c - mu_G||^2",
        "cos_mean": "mean pairwise cosine of the centred class means",
        "cos_std": "NC2 equiangularity: the standard deviation of those cosines",
        "norm_cv": "NC2 equinorm: std / mean of the centred class-mean norms (ddof 0)",
        "nc2_angle": "NC2 max-angle: mean over pairs of |cos + 1/(C-1)| (0 for a simplex ETF)",
        "nc3": "NC3 self-duality: ||W/||W||_F - M/||M||_F||_F^2, W the classifier weight, M the "
               "centred class means",
        "majority_cos": "mean pairwise cosine of the majority's centred class means",
        "minority_cos": "the same for the minority (minority collapse: toward 1)",
        "w_cos_mean": "mean pairwise cosine of the classifier rows (uncentred)",
        "w_majority_cos": "the same over the majority's rows",
        "w_minority_cos": "the same over the minority's rows (minority collapse: toward 1)",
    }),
    "sharpness": (("Sharpness per group (Rangwani et al. 2022; `--sharpness-every N`, after the "
                   "evaluations of epochs 0, N, 2N, ...; `--dynamics minimal` or `full`): the "
                   "largest and smallest eigenvalue of the Hessian, with respect to every "
                   "parameter of the model, of the group's training loss L_g = mean "
                   "cross-entropy over a fixed subset of its training samples "
                   "(`--sharpness-samples`, drawn once with `--subset-seed`), in eval mode "
                   "(BatchNorm's running statistics), float32, without augmentation. Power "
                   "iteration and Lanczos on Hessian-vector products (trainer/hessian.py), each "
                   "at most 20 products or until its estimate changes by less than 1e-3 "
                   "relative. Each value is a Rayleigh quotient: lambda_max is a lower bound on "
                   "the true top eigenvalue, lambda_min an upper bound on the true bottom one "
                   "(which converges more slowly: read its sign and size). The "
                   "`group_sharpness` view adds the minority / majority ratio."), {
        "run_id": "the run",
        "epoch": "the epoch evaluated after (0 = before training)",
        "step": "the step the epoch ended at",
        "grp": "'majority' or 'minority'",
        "n": "the group's samples in the loss (min(--sharpness-samples, the group's size))",
        "lambda_max": "the largest Hessian eigenvalue of L_g (sharpness; NaN when the loss is "
                      "not finite)",
        "lambda_min": "the smallest Hessian eigenvalue of L_g (negative: a direction of "
                      "negative curvature, a saddle point's sign)",
        "iters": "Hessian-vector products of the power iteration (20: it hit the cap before "
                 "converging to 1e-3)",
        "iters_lanczos": "Hessian-vector products of the Lanczos run (20: it hit the cap)",
    }),
}

RUN_DOCS: dict[str, str] = {
    "run_id": "the run's folder name under runs/ (time-ordered, unique)",
    "name": "the run's name (`--name`; by default dataset, profile, ratio and method)",
    "status": "running, finished, failed, interrupted, diverged, or crashed (running with a "
              "heartbeat older than 60 s)",
    "recorded_status": "the status as run.json says it",
    "created_at": "when the run started (UTC)",
    "finished_at": "when it ended (UTC; NULL while running)",
    "heartbeat_at": "the trainer's last sign of life (UTC)",
    "dataset": "mnist1d, mnist, fashion-mnist, cifar10 or cifar100",
    "profile": "exp or step (the imbalance profile)",
    "ratio": "largest class size over smallest in the training set",
    "minority_fraction": "the step profile's share of minority classes",
    "n_classes": "number of classes",
    "model": "cnn1d, mlp, cnn or resnet32",
    "loss": "the training objective",
    "sampler": "none, class-balanced or square-root",
    "drw": "deferred re-weighting: unweighted for this many epochs, class-balanced weights "
           "after (NULL without)",
    "method": "the method as one label (imbtui.store.schema.method_label): the loss, -drw, "
              "-mean (the class-weight reduction), then +sampler, +ls / +las (label smoothing), "
              "+mixup, +sam / +imbsam, +maxnorm and +the second stage: ce, ldam-drw, cb-mean, "
              "ce+class-balanced, ce+maxnorm+cb-finetune",
    "epochs": "epochs planned for the first stage",
    "stage2": "the second stage on frozen features (crt, lws, tau-norm, cb-finetune; 'none' "
              "without): see the `stages` view",
    "stage2_epochs": "epochs the second stage adds (its training epochs; tau-norm: 1, its one "
                     "evaluation; 0 without a second stage)",
    "steps_per_epoch": "optimiser steps per epoch",
    "batch_size": "samples per step",
    "lr": "peak learning rate",
    "seed": "initialisation, batch order and augmentation",
    "subset_seed": "which samples the long-tailed subset keeps (runs made before the option "
                   "existed drew the subset with `seed`)",
    "cb_reduction": "how class-weighted losses average a batch: weighted-mean (divide by the "
                    "weight sum) or mean (by the batch size)",
    "device": "where it trained",
    "epoch_done": "epochs completed",
    "step_done": "steps completed",
    "total_steps": "steps planned",
    "message": "why it stopped, when it did not finish",
    "config": "the full configuration, as JSON",
    "code_version": "the imbtui version that trained it",
}


def store_reference() -> str:
    """docs/store.md."""
    out = [
        "# The run store",
        "",
        "<!-- generated by `python -m imbtui.store.reference > docs/store.md` from",
        "     imbtui/store/schema.py, reference.py and semantic.py; tests/store/test_store_reference.py",
        "     fails when this page and the definitions differ -->",
        "",
        "A store is a folder: `runs/<run_id>/run.json` (identity, config, status, heartbeat) and",
        "`runs/<run_id>/<table>/part-<n>.parquet` (immutable parts). A reader opens an in-memory",
        "DuckDB connection with one view per table over the finished parts, then the semantic",
        "layer's views over those. `imbtui sql`, `imbtui query`, the browse app's SQL screen and",
        "`imbtui.open_store(...).sql(...)` all see every view below.",
        "",
        "The stored tables hold sums and counts, so any aggregation over steps, classes or groups",
        "is exact (a mean loss is sum(loss_sum) / sum(n)). The numbers the study talks about — a",
        "class's or a group's accuracy, a run's final results, a sample's forgetting events — are",
        "defined once, in the semantic layer, and every command and screen reads them from there.",
        "",
        "## Stored tables",
        "",
        "### `runs`",
        "",
        "One row per run, from its run.json.",
        "",
        "| column | type | definition |",
        "|---|---|---|",
    ]
    out += [f"| `{c}` | {_type(t)} | {RUN_DOCS[c]} |" for c, t in RUN_COLUMNS.items()]
    out.append("")
    for table, columns in TABLES.items():
        doc, described = TABLE_DOCS[table]
        out += [f"### `{table}`", "", doc, "",
                f"One row per {', '.join(KEY_COLUMNS[table])}.", "",
                "| column | type | definition |", "|---|---|---|"]
        out += [f"| `{c}` | {duck_type(t)} | {described[c]} |" for c, t in columns.items()]
        out.append("")
    out += ["## The semantic layer", "",
            "Defined in imbtui/store/semantic.py; read by every command, query and screen.", ""]
    return "\n".join(out) + "\n" + reference_markdown()


def views_table() -> str:
    """The table of every view, what one row is and its columns: the block between the
    `<!-- views -->` markers of docs/analyses.md (tests/store/test_store_reference.py holds the two
    together)."""
    rows = ["| view | one row per | columns |", "|---|---|---|",
            f"| `runs` | run | {', '.join(c for c in RUN_COLUMNS if c != 'run_id')} |"]
    for table, columns in TABLES.items():
        key = ", ".join(k for k in KEY_COLUMNS[table] if k != "run_id") or "run"
        cols = ", ".join(c for c in columns if c not in KEY_COLUMNS[table])
        rows.append(f"| `{table}` | run, {key} | {cols} |")
    for view in VIEWS:
        key = ", ".join(k for k in view.key if k != "run_id") or "run"
        cols = ", ".join(c for c in view.columns if c not in view.key)
        rows.append(f"| `{view.name}` | {'run, ' + key if key != 'run' else 'run'} | {cols} |")
    for macro in MACROS:
        if macro.returns:  # a scalar macro: one value, used in an expression
            rows.append(f"| `{macro.name}({', '.join(macro.params)})` | one value | "
                        f"a {macro.returns} |")
            continue
        rows.append(f"| `{macro.name}({', '.join(macro.params)})` | "
                    f"{', '.join(c for c in macro.columns if c in ('class_id', 'grp', 'bucket'))} | "
                    f"{', '.join(c for c in macro.columns if c not in ('class_id', 'grp', 'bucket'))} |")
    return "\n".join(rows) + "\n"


def _type(dtype) -> str:
    try:
        return duck_type(dtype)
    except KeyError:
        return "TIMESTAMP WITH TIME ZONE"


if __name__ == "__main__":
    print(store_reference(), end="")
