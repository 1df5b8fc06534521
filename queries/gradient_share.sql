-- Gradient share: what fraction of the last-layer gradient lies in each group's classes, over steps?
-- params:
--   runs  VARCHAR[]  run ids to include; empty = every run          [default: []]
--   bin   INTEGER    steps per bin (a bin starts at a multiple of it)  [default: 1]
-- columns:
--   run_id, step (first step of the bin), epoch (epoch of that step), grp,
--   grad_sq = sum over the bin's steps and the group's classes c of ||g_c||^2, where g_c is the
--   gradient of the batch loss with respect to row c of the classifier (steps.grad_norm = ||g_c||),
--   share = grad_sq / (grad_sq of both groups): the group's part of the squared Frobenius norm of
--   the last-layer weight gradient, an exact split since ||G||^2 = sum_c ||g_c||^2,
--   sample_share = the group's fraction of the training set, for comparison
--   (definition for now: rows, not samples; once steps carries the per-class split of each row's
--   gradient by the samples it comes from, this query moves to that)
WITH sel AS (
    SELECT s.run_id, s.step // greatest($bin, 1) * greatest($bin, 1) AS bin_step, s.epoch,
           c.grp, s.grad_norm * s.grad_norm AS sq
    FROM steps s
    JOIN classes c USING (run_id, class_id)
    WHERE len($runs) = 0 OR list_contains($runs, s.run_id)
),
sizes AS (
    SELECT run_id, grp, sum(train_count) / sum(sum(train_count)) OVER (PARTITION BY run_id)
        AS sample_share
    FROM classes
    GROUP BY run_id, grp
),
per_grp AS (
    SELECT run_id, bin_step, min(epoch) AS epoch, grp, sum(sq) AS grad_sq
    FROM sel
    GROUP BY run_id, bin_step, grp
)
SELECT
    p.run_id, p.bin_step AS step, p.epoch, p.grp, p.grad_sq,
    p.grad_sq / nullif(sum(p.grad_sq) OVER (PARTITION BY p.run_id, p.bin_step), 0) AS share,
    z.sample_share
FROM per_grp p
JOIN sizes z USING (run_id, grp)
ORDER BY p.run_id, step, p.grp
