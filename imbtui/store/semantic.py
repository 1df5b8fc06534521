"""The semantic layer: every quantity the study talks about, defined once as a view of the store.

The stored tables (`schema.TABLES`) hold sums and counts; the views here turn them into the numbers a
researcher reads — a class's accuracy, a group's accuracy, a run's final results, a sample's
learning events — and every surface (the trainer's closing summary, `imbtui runs`, `show`,
`report`, `sweep`, the named queries, the browse app, the figures, the Python API and
`export --duckdb`) selects them from these views instead of computing them again. Two screens that
show one number therefore show the same number.

Definitions that matter for imbalance:

- A group's accuracy (majority, minority, or `all` classes = balanced accuracy) is the mean over the
  group's classes of per-class accuracy, so a large class does not outweigh a small one on the
  long-tailed training set. Pooling the group's samples gives another number; it is offered only
  under a name that says so (`pooled_acc`).
- A run's final results are those of its last evaluated epoch; the best epoch's test accuracy, which
  papers often report, is a separate column named as such.

Each view is a `View`: its SQL, the key of a row, and a description of every column. The store
reference (`docs/store.md`) is generated from these same objects (`reference_markdown`), and a test
holds the page to them, so the documentation cannot drift from the definitions.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import duckdb


@dataclass(frozen=True)
class View:
    """A derived view: `columns` maps each output column, in order, to its definition."""

    name: str
    key: tuple[str, ...]
    doc: str
    columns: dict[str, str]
    sql: str


CLASS_RESULTS = View(
    name="class_results",
    key=("run_id", "epoch", "split", "class_id"),
    doc="Each class's results at each evaluated epoch (epoch 0 = the untrained network), on the "
        "training set evaluated without augmentation and on the balanced test set.",
    columns={
        "run_id": "the run",
        "epoch": "evaluated epoch (0 = before training)",
        "step": "the step the epoch ended at (0 for epoch 0)",
        "split": "'train' or 'test'",
        "class_id": "the class",
        "grp": "'majority' or 'minority' (see `classes`)",
        "shot": "'many', 'medium' or 'few' (see `classes`)",
        "rank": "0 = largest class in the training set",
        "train_count": "the class's training samples",
        "n": "samples of the class evaluated",
        "correct": "of them classified correctly",
        "acc": "correct / n (NULL when n = 0)",
        "loss": "mean cross-entropy of the class's samples: loss_sum / n",
        "p_true": "mean probability given to the true class: p_true_sum / n",
    },
    sql="""
SELECT e.run_id, e.epoch, e.step, e.split, e.class_id, c.grp, c.shot, c.rank, c.train_count,
       e.n, e.correct,
       e.correct / nullif(e.n, 0) AS acc,
       e.loss_sum / nullif(e.n, 0) AS loss,
       e.p_true_sum / nullif(e.n, 0) AS p_true
FROM epochs e
JOIN classes c USING (run_id, class_id)""")

GROUP_RESULTS = View(
    name="group_results",
    key=("run_id", "epoch", "split", "grp"),
    doc="Each group's results at each evaluated epoch: the majority, the minority, and `all` "
        "classes (whose `acc` is the balanced accuracy). A group's accuracy is the mean of its "
        "classes' accuracies; the pooled accuracy is a separate column.",
    columns={
        "run_id": "the run",
        "epoch": "evaluated epoch (0 = before training)",
        "step": "the step the epoch ended at",
        "split": "'train' or 'test'",
        "grp": "'majority', 'minority' or 'all'",
        "classes": "the group's classes with samples evaluated (n > 0)",
        "acc": "mean over the group's classes of class_results.acc (for `all`: balanced accuracy)",
        "loss": "mean over the group's classes of class_results.loss",
        "p_true": "mean over the group's classes of class_results.p_true (confidence)",
        "n": "samples evaluated, summed over the group's classes",
        "correct": "of them classified correctly",
        "pooled_acc": "correct / n: the group's samples pooled, so large classes weigh more "
                      "(on the balanced test set it equals `acc` when every class has n > 0)",
    },
    sql="""
SELECT run_id, epoch, any_value(step) AS step, split, coalesce(grp, 'all') AS grp,
       count(acc)::INTEGER AS classes,
       avg(acc) AS acc,
       avg(loss) AS loss,
       avg(p_true) AS p_true,
       sum(n)::BIGINT AS n,
       sum(correct)::BIGINT AS correct,
       sum(correct) / nullif(sum(n), 0) AS pooled_acc
FROM class_results
GROUP BY GROUPING SETS ((run_id, epoch, split, grp), (run_id, epoch, split))""")

FINAL_RESULTS = View(
    name="final_results",
    key=("run_id",),
    doc="One row per run with an evaluated epoch: its results at the last evaluated epoch "
        "(group accuracies as in group_results), and the best epoch's balanced test accuracy.",
    columns={
        "run_id": "the run",
        "epoch": "the last evaluated epoch",
        "train_balanced": "balanced training accuracy (group_results.acc of `all`, train)",
        "train_majority": "the majority's training accuracy (mean over its classes)",
        "train_minority": "the minority's training accuracy (mean over its classes)",
        "test_balanced": "balanced test accuracy",
        "test_majority": "the majority's test accuracy (mean over its classes)",
        "test_minority": "the minority's test accuracy (mean over its classes)",
        "gap_balanced": "train_balanced - test_balanced",
        "gap_majority": "train_majority - test_majority",
        "gap_minority": "train_minority - test_minority: memorisation without generalisation "
                        "shows as a minority gap far above the majority's",
        "best_epoch": "the first epoch >= 1 with the highest balanced test accuracy",
        "best_test_balanced": "balanced test accuracy at best_epoch (what papers often report; "
                              "chosen on the test set, so an optimistic number)",
    },
    sql="""
WITH last AS (
    SELECT run_id, max(epoch) AS epoch FROM group_results GROUP BY run_id
),
fin AS (
    SELECT
        g.run_id, any_value(g.epoch) AS epoch,
        max(g.acc) FILTER (WHERE g.split = 'train' AND g.grp = 'all') AS train_balanced,
        max(g.acc) FILTER (WHERE g.split = 'train' AND g.grp = 'majority') AS train_majority,
        max(g.acc) FILTER (WHERE g.split = 'train' AND g.grp = 'minority') AS train_minority,
        max(g.acc) FILTER (WHERE g.split = 'test' AND g.grp = 'all') AS test_balanced,
        max(g.acc) FILTER (WHERE g.split = 'test' AND g.grp = 'majority') AS test_majority,
        max(g.acc) FILTER (WHERE g.split = 'test' AND g.grp = 'minority') AS test_minority
    FROM group_results g
    JOIN last USING (run_id, epoch)
    GROUP BY g.run_id
),
test AS (
    SELECT run_id, epoch, acc FROM group_results
    WHERE split = 'test' AND grp = 'all' AND epoch >= 1 AND acc IS NOT NULL
),
best AS (
    SELECT t.run_id, min(t.epoch) AS best_epoch, any_value(m.top) AS best_test_balanced
    FROM test t
    JOIN (SELECT run_id, max(acc) AS top FROM test GROUP BY run_id) m
      ON m.run_id = t.run_id AND t.acc = m.top
    GROUP BY t.run_id
)
SELECT f.run_id, f.epoch,
       f.train_balanced, f.train_majority, f.train_minority,
       f.test_balanced, f.test_majority, f.test_minority,
       f.train_balanced - f.test_balanced AS gap_balanced,
       f.train_majority - f.test_majority AS gap_majority,
       f.train_minority - f.test_minority AS gap_minority,
       b.best_epoch, b.best_test_balanced
FROM fin f
LEFT JOIN best b USING (run_id)""")

SAMPLE_PRESENTATIONS = View(
    name="sample_presentations",
    key=("run_id", "sample_id", "presentation"),
    doc="Each presentation of each training sample (the `samples` table), numbered in order, with "
        "its forgetting event (Toneva et al. 2019: correct at the sample's previous presentation, "
        "wrong at this one). A sample drawn twice in one step by a sampler with replacement counts "
        "its wrong presentation first.",
    columns={
        "run_id": "the run",
        "sample_id": "index into the dataset's original training arrays",
        "class_id": "the sample's class",
        "epoch": "epoch of the presentation",
        "step": "step of the presentation",
        "presentation": "1, 2, ...: the sample's presentations in order of step",
        "correct": "classified correctly by the training forward pass",
        "forgotten": "a forgetting event: correct at the previous presentation, wrong at this one",
    },
    sql="""
SELECT run_id, sample_id, class_id, epoch, step,
       row_number() OVER w AS presentation,
       correct,
       coalesce(lag(correct) OVER w AND NOT correct, false) AS forgotten
FROM samples
WINDOW w AS (PARTITION BY run_id, sample_id ORDER BY step, correct)""")

SAMPLE_EVENTS = View(
    name="sample_events",
    key=("run_id", "sample_id"),
    doc="Each training sample's learning events over the run, as Toneva et al. 2019 count them "
        "(reference code: mtoneva/example_forgetting, order_examples_by_forgetting.py): a sample "
        "never classified correctly is given the largest forgetting count, its number of "
        "presentations, so it sorts as the most forgettable, not as unforgettable.",
    columns={
        "run_id": "the run",
        "sample_id": "index into the dataset's original training arrays",
        "class_id": "the sample's class",
        "grp": "the class's group",
        "presentations": "how often the sample was presented",
        "never_learned": "never classified correctly at a presentation",
        "first_learned_epoch": "epoch of the first correct presentation (NULL if never learned)",
        "stable_epoch": "epoch of the first presentation after the last wrong one, from which on "
                        "the sample stays correct (NULL if its last presentation is wrong)",
        "forgetting_events": "presentations that are forgetting events (sample_presentations)",
        "forgetting_count": "forgetting_events, or presentations if never learned (Toneva et "
                            "al.'s count, by which they sort samples)",
        "unforgettable": "learned and never forgotten (forgetting_count = 0)",
    },
    sql="""
WITH per_sample AS (
    SELECT run_id, sample_id, any_value(class_id) AS class_id,
           count(*) AS presentations,
           count(*) FILTER (WHERE correct) = 0 AS never_learned,
           min(epoch) FILTER (WHERE correct) AS first_learned_epoch,
           max(presentation) FILTER (WHERE NOT correct) AS last_wrong,
           list(epoch ORDER BY presentation) AS epochs,
           count(*) FILTER (WHERE forgotten) AS forgetting_events
    FROM sample_presentations
    GROUP BY run_id, sample_id
)
SELECT s.run_id, s.sample_id, s.class_id, c.grp, s.presentations, s.never_learned,
       s.first_learned_epoch,
       s.epochs[coalesce(s.last_wrong, 0) + 1] AS stable_epoch,
       s.forgetting_events,
       CASE WHEN s.never_learned THEN s.presentations ELSE s.forgetting_events END
           AS forgetting_count,
       NOT s.never_learned AND s.forgetting_events = 0 AS unforgettable
FROM per_sample s
JOIN classes c USING (run_id, class_id)""")

# In dependency order: a view may read the stored tables and the views before it.
STAGES = View(
    name="stages",
    key=("run_id", "stage"),
    doc="The stages of each run: every run has stage 1; a run trained with `--stage2` has a "
        "second, on the first stage's frozen features, whose epochs and steps continue the "
        "first's (tau-norm's second stage is one evaluation and no step).",
    columns={
        "run_id": "the run",
        "stage": "1 or 2",
        "name": "'train' for the first stage; the second's `--stage2` (crt, lws, tau-norm, "
                "cb-finetune)",
        "first_epoch": "the stage's first epoch",
        "last_epoch": "the stage's last epoch",
        "first_step": "the step the stage begins at (the steps before it belong to earlier "
                      "stages)",
    },
    sql="""
    SELECT run_id, 1 AS stage, 'train' AS name, 1 AS first_epoch, epochs AS last_epoch,
           0::BIGINT AS first_step
    FROM runs
    UNION ALL
    SELECT run_id, 2, stage2, epochs + 1,
           epochs + stage2_epochs,
           epochs * steps_per_epoch
    FROM runs
    WHERE stage2 IS NOT NULL AND stage2 <> 'none'
""")


POSTHOC_RESULTS = View(
    name="posthoc_results",
    key=("run_id", "epoch", "split", "tau", "grp", "class_id"),
    doc="Post-hoc logit adjustment (Menon et al. 2021: predict argmax_c z_c - tau * log pi_c, "
        "pi_c the class's share of the training set; the `posthoc` table) beside the plain "
        "logits, at each evaluated epoch, split and tau: a row per class, and a row per group "
        "(`majority`, `minority`, and `all`, whose accuracy is the balanced accuracy). The "
        "adjusted accuracies are class_results' and group_results' own SQL run over the "
        "adjusted counts (a group's accuracy is the mean of its classes' accuracies); the plain "
        "ones are those views' `acc`. Empty for runs recorded before the table existed.",
    columns={
        "run_id": "the run",
        "epoch": "evaluated epoch (0 = before training)",
        "step": "the step the epoch ended at",
        "split": "'train' or 'test'",
        "tau": "the adjustment's strength (`--posthoc-tau`; 0 = the plain logits)",
        "grp": "the class's group; on a group's row 'majority', 'minority' or 'all'",
        "class_id": "the class (NULL on a group's row)",
        "classes": "on a group's row its classes with n > 0, as group_results.classes (NULL on "
                   "a class's row)",
        "n": "samples evaluated (on a group's row summed over its classes)",
        "correct": "of them classified correctly by the adjusted logits",
        "adjusted_acc": "correct / n on a class's row; on a group's row the mean over its "
                        "classes of their adjusted_acc, as group_results.acc (for `all`: "
                        "balanced accuracy)",
        "plain_acc": "the same accuracy of the plain logits: class_results.acc on a class's "
                     "row, group_results.acc on a group's",
        "gain": "adjusted_acc - plain_acc",
    },
    sql=f"""
WITH adjusted AS (
    -- the posthoc rows as `epochs` rows whose run_id stands for (run, tau): class_results' and
    -- group_results' SQL, run unchanged over them, then keep every tau apart
    SELECT {{'run_id': run_id, 'tau': tau}} AS run_id, epoch, step, split, class_id, n, correct,
           NULL::DOUBLE AS loss_sum, NULL::DOUBLE AS p_true_sum
    FROM posthoc
),
adjusted_classes AS (
    SELECT r.run_id, c.* EXCLUDE (run_id)
    FROM (SELECT DISTINCT run_id FROM adjusted) r
    JOIN classes c ON c.run_id = r.run_id.run_id
),
adjusted_results AS (
    WITH epochs AS (SELECT * FROM adjusted),
         classes AS (SELECT * FROM adjusted_classes),
         class_results AS ({CLASS_RESULTS.sql}),
         group_results AS ({GROUP_RESULTS.sql})
    SELECT run_id, epoch, step, split, grp, class_id, NULL::INTEGER AS classes, n, correct, acc
    FROM class_results
    UNION ALL
    SELECT run_id, epoch, step, split, grp, NULL::INTEGER, classes, n, correct, acc
    FROM group_results
),
plain AS (
    SELECT run_id, epoch, split, grp, class_id, acc FROM class_results
    UNION ALL
    SELECT run_id, epoch, split, grp, NULL::INTEGER, acc FROM group_results
)
SELECT a.run_id.run_id AS run_id, a.epoch, a.step, a.split, a.run_id.tau AS tau, a.grp,
       a.class_id, a.classes, a.n, a.correct,
       a.acc AS adjusted_acc, p.acc AS plain_acc, a.acc - p.acc AS gain
FROM adjusted_results a
LEFT JOIN plain p
  ON p.run_id = a.run_id.run_id AND p.epoch = a.epoch AND p.split = a.split
 AND p.grp = a.grp AND p.class_id IS NOT DISTINCT FROM a.class_id""")

# The two lenses of docs/analyses.md: the group's loss step by step (read by the named query
# initial_drop) and each class's learning speed (read by learning_speed).
GROUP_STEPS = View(
    name="group_steps",
    key=("run_id", "step", "grp"),
    doc="Each group's results on each training batch (the `steps` table), defined as "
        "group_results defines a group's: the mean over the group's classes of each class's mean "
        "over its samples in the batch. A class absent from the batch (n = 0: at a large ratio "
        "the smallest classes miss many batches) is left out of that step's mean rather than "
        "counted as 0, as in group_buckets; a step with none of the group's classes has NULL "
        "acc and loss.",
    columns={
        "run_id": "the run",
        "step": "the training step (0-based; measured before its update, so after `step` "
                "updates)",
        "epoch": "the epoch it belongs to (1-based)",
        "grp": "'majority' or 'minority'",
        "classes": "the group's classes present in the batch (n > 0)",
        "n": "the group's samples in the batch",
        "acc": "mean over the present classes of correct / n",
        "loss": "mean over the present classes of loss_sum / n (plain cross-entropy whatever "
                "the objective)",
    },
    sql="""
SELECT s.run_id, s.step, any_value(s.epoch) AS epoch, c.grp,
       (count(*) FILTER (WHERE s.n > 0))::INTEGER AS classes,
       sum(s.n)::BIGINT AS n,
       avg(s.correct / nullif(s.n, 0)) AS acc,
       avg(s.loss_sum / nullif(s.n, 0)) AS loss
FROM steps s
JOIN classes c ON c.run_id = s.run_id AND c.class_id = s.class_id
GROUP BY s.run_id, s.step, c.grp""")

CLASS_LEARNING_SPEED = View(
    name="class_learning_speed",
    key=("run_id", "class_id"),
    doc="How fast each class is learned: the area under its training-accuracy curve "
        "(class_results.acc, split 'train') from its first evaluated epoch (0, the untrained "
        "network) to its last, by the trapezoid rule over epochs, divided by the epochs it spans "
        "so that it lies in [0, 1] (1 = every training sample right from the start). Of two "
        "classes that end fitted, the one learned earlier has the larger area. Every evaluated "
        "epoch counts, a second stage's included. The mean of a group's classes' areas is the "
        "area under the group's group_results train curve.",
    columns={
        "run_id": "the run",
        "class_id": "the class",
        "grp": "'majority' or 'minority'",
        "shot": "'many', 'medium' or 'few'",
        "rank": "0 = largest class in the training set",
        "train_count": "the class's training samples",
        "first_epoch": "the first epoch of the curve (0 = before training)",
        "last_epoch": "the last evaluated epoch",
        "auc": "sum over consecutive evaluated epochs e < e' of (acc_e + acc_e') / 2 * (e' - e), "
               "divided by last_epoch - first_epoch (NULL with a single evaluated epoch)",
    },
    sql="""
WITH curve AS (
    SELECT run_id, class_id, epoch, acc,
           lead(epoch) OVER w AS next_epoch, lead(acc) OVER w AS next_acc
    FROM class_results
    WHERE split = 'train' AND acc IS NOT NULL
    WINDOW w AS (PARTITION BY run_id, class_id ORDER BY epoch)
)
SELECT k.run_id, k.class_id, c.grp, c.shot, c.rank, c.train_count,
       min(k.epoch) AS first_epoch, max(k.epoch) AS last_epoch,
       sum((k.acc + k.next_acc) / 2 * (k.next_epoch - k.epoch))
           / nullif(max(k.epoch) - min(k.epoch), 0) AS auc
FROM curve k
JOIN classes c ON c.run_id = k.run_id AND c.class_id = k.class_id
GROUP BY k.run_id, k.class_id, c.grp, c.shot, c.rank, c.train_count""")

# The logit statistics lens (the `logits` table): Wei et al. 2022 (LogitNorm) on logit norms,
# Francazi et al. 2024 on the untrained network's guessing bias (pred_share at epoch 0).
LOGIT_RESULTS = View(
    name="logit_results",
    key=("run_id", "epoch", "split", "grp", "class_id"),
    doc="Logit statistics at each evaluated epoch and split (the `logits` table): a row per "
        "class, and a row per group (`majority`, `minority`, and `all` classes). A class's "
        "values are means over its samples; a group's logit values are the mean over its "
        "classes of theirs, computed by group_results' own SQL (a class with n = 0 is left out), "
        "while its pred_share is the sum over its classes of theirs. Empty for runs recorded "
        "before the table existed or with `--dynamics off`.",
    columns={
        "run_id": "the run",
        "epoch": "evaluated epoch (0 = the untrained network)",
        "step": "the step the epoch ended at",
        "split": "'train' or 'test'",
        "grp": "the class's group; on a group's row 'majority', 'minority' or 'all'",
        "class_id": "the class (NULL on a group's row)",
        "classes": "on a group's row its classes with n > 0, as group_results.classes (NULL on "
                   "a class's row)",
        "n": "samples of the class in the split (on a group's row summed over its classes)",
        "pred_count": "samples of the split predicted as the class (on a group's row summed "
                      "over its classes)",
        "own_logit": "mean over the class's samples of their own logit z_y: own_logit_sum / n "
                     "(on a group's row the mean over its classes, as group_results.acc)",
        "other_logit": "mean of the largest other logit max_{c != y} z_c: other_logit_sum / n "
                       "(group: mean over its classes)",
        "margin": "own_logit - other_logit: the mean logit margin (on a group's row the mean "
                  "over its classes of their margins)",
        "logit_norm": "mean logit norm ||z||_2: norm_sum / n (group: mean over its classes)",
        "pred_share": "pred_count / the split's samples: the share of the split's predictions "
                      "that go to the class; on a group's row the sum over its classes of "
                      "theirs (1 for `all`; on the balanced test set an unbiased classifier "
                      "gives each class 1 / C)",
    },
    sql=f"""
WITH per_class AS (
    SELECT l.run_id, l.epoch, l.step, l.split, l.class_id, c.grp, l.n, l.pred_count,
           l.own_logit_sum / nullif(l.n, 0) AS own_logit,
           l.other_logit_sum / nullif(l.n, 0) AS other_logit,
           l.norm_sum / nullif(l.n, 0) AS logit_norm
    FROM logits l
    JOIN classes c ON c.run_id = l.run_id AND c.class_id = l.class_id
),
grouped AS (
    -- group_results' SQL, run unchanged over the class rows: its acc, loss and p_true (means
    -- over the group's classes) stand for own_logit, other_logit and logit_norm, its correct
    -- (a sum) for pred_count
    WITH class_results AS (
        SELECT run_id, epoch, step, split, grp, n, pred_count AS correct,
               own_logit AS acc, other_logit AS loss, logit_norm AS p_true
        FROM per_class),
         group_results AS ({GROUP_RESULTS.sql})
    SELECT * FROM group_results
),
every AS (
    SELECT run_id, epoch, step, split, grp, class_id, NULL::INTEGER AS classes, n, pred_count,
           own_logit, other_logit, logit_norm
    FROM per_class
    UNION ALL
    SELECT run_id, epoch, step, split, grp, NULL::INTEGER, classes, n, correct,
           acc, loss, p_true
    FROM grouped
)
SELECT e.run_id, e.epoch, e.step, e.split, e.grp, e.class_id, e.classes, e.n, e.pred_count,
       e.own_logit, e.other_logit, e.own_logit - e.other_logit AS margin, e.logit_norm,
       e.pred_count / nullif(t.n, 0) AS pred_share
FROM every e
JOIN grouped t
  ON t.run_id = e.run_id AND t.epoch = e.epoch AND t.split = e.split AND t.grp = 'all'""")

# The gradient-conflict lens (the `conflict` table, trainer/conflict.py): Francazi et al. 2023.
GROUP_CONFLICT = View(
    name="group_conflict",
    key=("run_id", "step", "grp_a", "grp_b"),
    doc="Gradient conflict per group pair at each recorded step (`--conflict-every`): the mean "
        "cosine between the full-model gradients of two distinct classes, over the class pairs "
        "within the majority, between the majority and the minority, and within the minority "
        "(each unordered pair once; a pair with a class absent from the batch is left out). "
        "Computed from the stored C x C matrix when C <= 20, read as stored (the same mean, "
        "taken by the trainer) above. Negative: the classes' gradients pull the shared model "
        "apart. Empty for runs recorded without the option.",
    columns={
        "run_id": "the run",
        "step": "the recorded step",
        "epoch": "its epoch",
        "grp_a": "'majority' or 'minority' (the pair's groups in that order: majority/majority, "
                 "majority/minority, minority/minority)",
        "grp_b": "the pair's second group",
        "pairs": "class pairs with a cosine (both classes in the batch)",
        "cos": "the mean of their cosines, in [-1, 1] (NULL when there is none)",
    },
    sql="""
SELECT run_id, step, any_value(epoch) AS epoch,
       least(grp_a, grp_b) AS grp_a, greatest(grp_a, grp_b) AS grp_b,
       count(cos)::BIGINT AS pairs, avg(cos) AS cos
FROM conflict
WHERE class_a IS NOT NULL AND class_a < class_b
GROUP BY run_id, step, least(grp_a, grp_b), greatest(grp_a, grp_b)
UNION ALL
SELECT run_id, step, epoch, grp_a, grp_b, pairs, cos
FROM conflict
WHERE class_a IS NULL""")

# The sharpness lens (the `sharpness` table, trainer/hessian.py): Rangwani et al. 2022.
GROUP_SHARPNESS = View(
    name="group_sharpness",
    key=("run_id", "epoch"),
    doc="Sharpness per group at each recorded epoch (`--sharpness-every`), both groups on one "
        "row: the largest and smallest Hessian eigenvalue of each group's training loss (the "
        "`sharpness` table), and the minority's top eigenvalue over the majority's. Rangwani et "
        "al. 2022 report the minority (tail) loss at sharper points, with clearly negative "
        "eigenvalues (saddle points): a ratio above 1 and a minority_lambda_min well below 0. "
        "Empty for runs recorded without the option.",
    columns={
        "run_id": "the run",
        "epoch": "the epoch evaluated after (0 = before training)",
        "step": "the step the epoch ended at",
        "majority_n": "the majority's samples in its loss",
        "minority_n": "the minority's samples in its loss",
        "majority_lambda_max": "the largest Hessian eigenvalue of the majority's loss",
        "minority_lambda_max": "the largest Hessian eigenvalue of the minority's loss",
        "lambda_max_ratio": "minority_lambda_max / majority_lambda_max (NULL when the "
                            "majority's is 0 or either is missing)",
        "majority_lambda_min": "the smallest Hessian eigenvalue of the majority's loss",
        "minority_lambda_min": "the smallest Hessian eigenvalue of the minority's loss",
    },
    sql="""
SELECT run_id, epoch, any_value(step) AS step,
       max(n) FILTER (WHERE grp = 'majority') AS majority_n,
       max(n) FILTER (WHERE grp = 'minority') AS minority_n,
       max(lambda_max) FILTER (WHERE grp = 'majority') AS majority_lambda_max,
       max(lambda_max) FILTER (WHERE grp = 'minority') AS minority_lambda_max,
       max(lambda_max) FILTER (WHERE grp = 'minority')
           / nullif(max(lambda_max) FILTER (WHERE grp = 'majority'), 0) AS lambda_max_ratio,
       max(lambda_min) FILTER (WHERE grp = 'majority') AS majority_lambda_min,
       max(lambda_min) FILTER (WHERE grp = 'minority') AS minority_lambda_min
FROM sharpness
GROUP BY run_id, epoch""")

VIEWS: tuple[View, ...] = (CLASS_RESULTS, GROUP_RESULTS, FINAL_RESULTS, SAMPLE_PRESENTATIONS,
                           SAMPLE_EVENTS, STAGES, POSTHOC_RESULTS, GROUP_STEPS,
                           CLASS_LEARNING_SPEED, LOGIT_RESULTS, GROUP_CONFLICT,
                           GROUP_SHARPNESS)


@dataclass(frozen=True)
class Macro:
    """A table macro: a view with parameters (DuckDB `CREATE MACRO ... AS TABLE`); or, with
    `returns` (the DuckDB type of its value) set and no columns, a scalar macro: a function of
    its parameters that a query uses in an expression (`CREATE MACRO ... AS expression`)."""

    name: str
    params: dict[str, str]
    doc: str
    columns: dict[str, str]
    sql: str
    returns: str | None = None


# The bucketed step curves are defined once, over a list of runs (one scan of `steps` serves them
# all: the chart view draws up to 8 runs at once); the one-run forms the run screen calls are
# these same rows for a list of one. Each class's sums are bucketed before the join to `classes`,
# which then joins one row per class and bucket instead of one per class and step.
CLASS_BUCKETS_RUNS = Macro(
    name="class_buckets_runs",
    params={"runs": "a list of run ids", "width": "how many buckets",
            "span": "the steps the buckets cover (usually the longest run's total steps)"},
    doc="The training steps of each of `runs` cut into `width` equal buckets (step s falls in "
        "bucket floor(s * width / span); a step at or past `span` in the last one), with each "
        "class's results over the bucket's training batches: the curves of the app at step "
        "resolution. Every run is cut at the same steps, so several runs share one x-axis.",
    columns={
        "run_id": "the run",
        "class_id": "the class",
        "grp": "its group",
        "bucket": "0 .. width - 1",
        "n": "the class's samples in the bucket's batches",
        "acc": "correct / n over the bucket (NULL if the class was in none of its batches)",
        "loss": "loss_sum / n over the bucket",
        "p_true": "p_true_sum / n over the bucket",
        "margin": "margin_sum / n over the bucket",
    },
    sql="""
WITH k AS (
    SELECT run_id, class_id, least(floor(step * width / span), width - 1)::BIGINT AS bucket,
           sum(n)::BIGINT AS n,
           sum(correct) / nullif(sum(n), 0) AS acc,
           sum(loss_sum) / nullif(sum(n), 0) AS loss,
           sum(p_true_sum) / nullif(sum(n), 0) AS p_true,
           sum(margin_sum) / nullif(sum(n), 0) AS margin
    FROM steps
    WHERE list_contains(runs, run_id)
    GROUP BY run_id, class_id, bucket
)
SELECT k.run_id, k.class_id, c.grp, k.bucket, k.n, k.acc, k.loss, k.p_true, k.margin
FROM k
JOIN classes c ON c.run_id = k.run_id AND c.class_id = k.class_id""")

GROUP_BUCKETS_RUNS = Macro(
    name="group_buckets_runs",
    params=CLASS_BUCKETS_RUNS.params,
    doc="Each group's results over the buckets of class_buckets_runs, defined as group_results "
        "defines them: the mean over the group's classes. A class absent from every batch of a "
        "bucket (n = 0: a small class in a few short batches) is left out of that bucket's mean "
        "rather than counted as 0.",
    columns={
        "run_id": "the run",
        "grp": "'majority' or 'minority'",
        "bucket": "0 .. width - 1",
        "classes": "the group's classes present in the bucket's batches",
        "n": "the group's samples in the bucket's batches",
        "acc": "mean over the present classes of class_buckets_runs.acc",
        "loss": "mean over the present classes of class_buckets_runs.loss",
        "p_true": "mean over the present classes of class_buckets_runs.p_true",
        "margin": "mean over the present classes of class_buckets_runs.margin",
    },
    sql="""
SELECT run_id, grp, bucket, count(acc)::INTEGER AS classes, sum(n)::BIGINT AS n,
       avg(acc) AS acc, avg(loss) AS loss, avg(p_true) AS p_true, avg(margin) AS margin
FROM class_buckets_runs(runs, width, span)
GROUP BY run_id, grp, bucket""")

CLASS_BUCKETS = Macro(
    name="class_buckets",
    params={"run": "the run id", "width": "how many buckets",
            "span": "the steps the buckets cover (usually the run's total steps)"},
    doc="One run's rows of class_buckets_runs (the same definition, for a list of one run): its "
        "training steps cut into `width` equal buckets, with each class's results over the "
        "bucket's training batches.",
    columns={c: d for c, d in CLASS_BUCKETS_RUNS.columns.items() if c != "run_id"},
    sql="""
SELECT * EXCLUDE (run_id) FROM class_buckets_runs([run], width, span)""")

GROUP_BUCKETS = Macro(
    name="group_buckets",
    params=CLASS_BUCKETS.params,
    doc="One run's rows of group_buckets_runs (the same definition, for a list of one run): each "
        "group's results over the buckets, the mean over the group's classes present in the "
        "bucket's batches.",
    columns={c: d for c, d in GROUP_BUCKETS_RUNS.columns.items() if c != "run_id"},
    sql="""
SELECT * EXCLUDE (run_id) FROM group_buckets_runs([run], width, span)""")

# Comparisons over seeds: a setting run with several seeds is reported as mean ± ci95 (n = seeds),
# and a difference of two such means as d ± ci95_diff; the named queries method_comparison and
# ratio_sweep, and through them `imbtui report`, read these three macros.
T975 = Macro(
    name="t975",
    params={"df": "degrees of freedom (n - 1 for the mean of n values)"},
    doc="The 0.975 quantile of Student's t distribution with `df` degrees of freedom: the factor "
        "of a two-sided 95 % t-interval. For df 1 to 30 the standard table's values (3 decimals: "
        "12.706, 4.303, 3.182, 2.776, ..., 2.042; NIST/SEMATECH e-Handbook of Statistical "
        "Methods, table 1.3.6.7.2); from df 31 on the Cornish-Fisher expansion in 1/df about the "
        "normal quantile 1.959964 (Abramowitz & Stegun 26.7.5, four terms; within 3e-8 of the "
        "exact quantile there). A non-integer df (Welch's) is rounded down, which widens an "
        "interval slightly. NULL when df < 1 or NULL.",
    columns={},
    returns="DOUBLE",
    sql="""
CASE
    WHEN df IS NULL OR floor(df + 1e-9) < 1 THEN NULL
    WHEN floor(df + 1e-9) <= 30 THEN
        ([12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
          2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
          2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042
         ]::DOUBLE[])[floor(df + 1e-9)::INTEGER]
    ELSE 1.959963984540054 + 2.372271230298562 / floor(df + 1e-9)
         + 2.8224986157396112 / pow(floor(df + 1e-9), 2)
         + 2.555849679507722 / pow(floor(df + 1e-9), 3)
         + 1.5895340533938225 / pow(floor(df + 1e-9), 4)
END""")

CI95 = Macro(
    name="ci95",
    params={"sd": "the values' sample standard deviation (stddev_samp)",
            "n": "how many values (seeds)"},
    doc="Half-width of the two-sided 95 % t-interval of the mean of `n` values: t975(n - 1) * "
        "sd / sqrt(n). A mean over seeds is reported as mean ± ci95 (n = seeds). NULL when "
        "n < 2: one seed gives no spread.",
    columns={},
    returns="DOUBLE",
    sql="""
CASE WHEN n >= 2 THEN t975(n - 1) * sd / sqrt(n) END""")

CI95_DIFF = Macro(
    name="ci95_diff",
    params={"sd_a": "sample standard deviation of side a", "n_a": "side a's values",
            "sd_b": "the same for side b", "n_b": "side b's values"},
    doc="Half-width of the two-sided 95 % Welch t-interval of a difference of two means (a's "
        "minus b's): t975(v) * sqrt(sd_a^2 / n_a + sd_b^2 / n_b), v the Welch-Satterthwaite "
        "degrees of freedom (sd_a^2/n_a + sd_b^2/n_b)^2 / ((sd_a^2/n_a)^2 / (n_a - 1) + "
        "(sd_b^2/n_b)^2 / (n_b - 1)). A difference d is within the seeds' spread (not "
        "significant at the 5 % level by Welch's t-test) when |d| <= ci95_diff. NULL when either "
        "side has n < 2; 0 when both sides' sd are 0.",
    columns={},
    returns="DOUBLE",
    sql="""
CASE
    WHEN n_a < 2 OR n_b < 2 OR sd_a IS NULL OR sd_b IS NULL THEN NULL
    WHEN sd_a = 0 AND sd_b = 0 THEN 0.0::DOUBLE
    ELSE t975(pow(sd_a * sd_a / n_a + sd_b * sd_b / n_b, 2)
              / (pow(sd_a * sd_a / n_a, 2) / (n_a - 1) + pow(sd_b * sd_b / n_b, 2) / (n_b - 1)))
         * sqrt(sd_a * sd_a / n_a + sd_b * sd_b / n_b)
END""")

# In dependency order: a macro may call the macros before it.
MACROS: tuple[Macro, ...] = (CLASS_BUCKETS_RUNS, GROUP_BUCKETS_RUNS, CLASS_BUCKETS, GROUP_BUCKETS,
                             T975, CI95, CI95_DIFF)


def create_views(con: duckdb.DuckDBPyConnection) -> None:
    """(Re)create every semantic view and macro on a connection whose stored-table views exist."""
    for view in VIEWS:
        con.execute(f"CREATE OR REPLACE VIEW {view.name} AS {view.sql}")
    for macro in MACROS:
        args = ", ".join(macro.params)
        kind = "" if macro.returns else "TABLE "
        con.execute(f"CREATE OR REPLACE MACRO {macro.name}({args}) AS {kind}{macro.sql}")


_LIVE: duckdb.DuckDBPyConnection | None = None  # made at the first call, kept for the process


def live_group_accuracy(rows: dict[str, dict[str, Any]], groups: Sequence[str]
                        ) -> dict[str, float]:
    """group_results.acc of one evaluation still in memory: `rows` is {split: {"n": per-class
    counts, "correct": ...}}, `groups` each class's group. The training process shows these in
    its progress display before the rows reach a store, through the same SQL as the views, so
    the live numbers are the stored ones. Returns {"train_majority": ..., "test_balanced": ...}."""
    import pyarrow as pa

    global _LIVE
    if _LIVE is None:
        _LIVE = duckdb.connect(":memory:")
    splits = list(rows)
    n_classes = len(groups)
    _LIVE.register("epochs", pa.table({
        "run_id": pa.array(["live"] * (n_classes * len(splits))),
        "epoch": pa.array([0] * (n_classes * len(splits)), pa.int32()),
        "step": pa.array([0] * (n_classes * len(splits)), pa.int64()),
        "split": pa.array([s for s in splits for _ in range(n_classes)]),
        "class_id": pa.array(list(range(n_classes)) * len(splits), pa.int32()),
        "n": pa.array([int(v) for s in splits for v in rows[s]["n"]], pa.int64()),
        "correct": pa.array([int(v) for s in splits for v in rows[s]["correct"]], pa.int64()),
        "loss_sum": pa.nulls(n_classes * len(splits), pa.float64()),
        "p_true_sum": pa.nulls(n_classes * len(splits), pa.float64())}))
    _LIVE.register("classes", pa.table({
        "run_id": pa.array(["live"] * n_classes), "class_id": pa.array(range(n_classes), pa.int32()),
        "grp": pa.array(list(groups)), "shot": pa.nulls(n_classes, pa.string()),
        "rank": pa.nulls(n_classes, pa.int32()), "train_count": pa.nulls(n_classes, pa.int64())}))
    sql = (f"WITH class_results AS ({CLASS_RESULTS.sql}), group_results AS ({GROUP_RESULTS.sql}) "
           f"SELECT split, grp, acc FROM group_results")
    names = {"all": "balanced", "majority": "majority", "minority": "minority"}
    return {f"{split}_{names[grp]}": (float("nan") if acc is None else acc)
            for split, grp, acc in _LIVE.sql(sql).fetchall()}


def reference_markdown() -> str:
    """The semantic layer's section of docs/store.md: each view and macro, its key or parameters
    and every column."""
    out = []
    for view in VIEWS:
        out += [f"### `{view.name}`", "", view.doc, "",
                f"One row per {', '.join(view.key)}.", "",
                "| column | definition |", "|---|---|"]
        out += [f"| `{c}` | {d} |" for c, d in view.columns.items()]
        out.append("")
    for macro in MACROS:
        call = f"{macro.name}({', '.join(macro.params)})"
        out += [f"### `{call}`", "", macro.doc, "",
                "Parameters: " + "; ".join(f"`{p}` {d}" for p, d in macro.params.items()) + ".",
                ""]
        if macro.returns:  # a scalar macro: no columns
            out += [f"Use it in an expression: `SELECT {call}`; its value is a {macro.returns}.",
                    ""]
            continue
        out += [f"Use it as a table: `SELECT * FROM {call}`.", "",
                "| column | definition |", "|---|---|"]
        out += [f"| `{c}` | {d} |" for c, d in macro.columns.items()]
        out.append("")
    return "\n".join(out)
