-- Minority initial drop: over the first K training steps, does each group's loss fall, or rise?
--
-- Francazi, Baity-Jesi and Lucchi 2023 (A Theoretical Analysis of the Learning Dynamics under
-- Class Imbalance, ICML): early on the minority's loss can rise while the majority's falls.
-- params:
--   runs    VARCHAR[]  run ids to include; empty = every run                       [default: []]
--   steps   INTEGER    K: the steps (updates) over which the change is measured        [default: 50]
--   window  INTEGER    how many steps are averaged at each end                         [default: 5]
-- columns:
--   run_id, grp ('majority' | 'minority'),
--   start_loss = mean of group_steps.loss over steps 0 .. window - 1 (the group's loss per step:
--   the mean over its classes present in the batch of loss_sum / n; a class absent from a batch
--   is left out of that step's mean, and a step without any of the group's classes is skipped),
--   end_loss = the same mean over steps K - window + 1 .. K, the loss after K updates (NULL when
--   the run has not reached step K),
--   start_steps, end_steps = the steps each mean is over,
--   change = end_loss - start_loss, rose = change > 0,
--   minority_minus_majority = the run's minority change minus its majority change (the same on
--   both rows of a run; > 0 when the minority fares worse)
WITH g AS (
    SELECT run_id, grp, step, loss
    FROM group_steps
    WHERE step <= $steps
      AND (len($runs) = 0 OR list_contains($runs, run_id))
),
ends AS (
    SELECT
        run_id, grp,
        avg(loss) FILTER (WHERE step < $window) AS start_loss,
        CASE WHEN max(step) = $steps
             THEN avg(loss) FILTER (WHERE step > $steps - $window) END AS end_loss,
        count(loss) FILTER (WHERE step < $window) AS start_steps,
        CASE WHEN max(step) = $steps
             THEN count(loss) FILTER (WHERE step > $steps - $window) ELSE 0 END AS end_steps
    FROM g
    GROUP BY run_id, grp
),
changed AS (
    SELECT *, end_loss - start_loss AS change FROM ends
)
SELECT
    run_id, grp, start_loss, end_loss, start_steps, end_steps, change, change > 0 AS rose,
    max(change) FILTER (WHERE grp = 'minority') OVER (PARTITION BY run_id)
        - max(change) FILTER (WHERE grp = 'majority') OVER (PARTITION BY run_id)
        AS minority_minus_majority
FROM changed
ORDER BY run_id, grp
