-- Gradient conflict: do the classes' gradients pull the model apart, by group pair, and how far does each group's mini-batch gradient point from its whole-training-set gradient, early vs late?
-- params:
--   runs  VARCHAR[]  run ids to include; empty = every run  [default: []]
-- columns:
--   run_id, lens ('conflict' | 'direction'),
--   grp = the group pair for conflict ('majority/majority', 'majority/minority',
--   'minority/minority'), the group for direction ('majority' | 'minority'),
--   steps = recorded steps with a value,
--   mean_cos = mean over those steps of group_conflict.cos (the mean cosine between two distinct
--   classes' full-model gradients; below 0: they conflict) or of direction.cos_to_full (the
--   mini-batch group gradient's cosine with the whole training set's; well below 1: a noisy
--   direction),
--   early_cos, late_cos = the same mean over the first and the second half of the run's recorded
--   steps (ntile(2) over them in order: with an odd count the first half has one more),
--   first_step, last_step = the recorded steps the row covers
-- Runs recorded without --conflict-every have no rows.
WITH recorded AS (
    SELECT run_id, step FROM group_conflict
    UNION
    SELECT run_id, step FROM direction
),
halves AS (
    SELECT run_id, step, ntile(2) OVER (PARTITION BY run_id ORDER BY step) AS half
    FROM recorded
),
vals AS (
    SELECT run_id, step, 'conflict' AS lens, grp_a || '/' || grp_b AS grp, cos
    FROM group_conflict
    UNION ALL
    SELECT run_id, step, 'direction', grp, cos_to_full
    FROM direction
)
SELECT
    v.run_id, v.lens, v.grp,
    count(v.cos) AS steps,
    avg(v.cos) AS mean_cos,
    avg(v.cos) FILTER (WHERE h.half = 1) AS early_cos,
    avg(v.cos) FILTER (WHERE h.half = 2) AS late_cos,
    min(v.step) AS first_step, max(v.step) AS last_step
FROM vals v
JOIN halves h USING (run_id, step)
WHERE len($runs) = 0 OR list_contains($runs, v.run_id)
GROUP BY v.run_id, v.lens, v.grp
ORDER BY v.run_id, v.lens, v.grp
