-- Majority vs minority curves: how do the two groups' train and test accuracy move, epoch by epoch?
-- params:
--   runs  VARCHAR[]  run ids to include; empty = every run  [default: []]
-- columns:
--   run_id, epoch (0 = the untrained network), split ('train' | 'test'),
--   grp ('majority' | 'minority' | 'all'), classes, n (samples evaluated), correct,
--   acc = pooled correct / pooled n over the group's classes,
--   balanced_acc = mean of the group's per-class accuracies, loss = pooled mean cross-entropy
--   (on the long-tailed training set `acc` weighs large classes more; on the balanced test set the
--   two agree)
SELECT
    e.run_id, e.epoch, e.split, coalesce(c.grp, 'all') AS grp,
    count(*) AS classes,
    sum(e.n)::BIGINT AS n,
    sum(e.correct)::BIGINT AS correct,
    sum(e.correct) / nullif(sum(e.n), 0) AS acc,
    avg(e.correct / nullif(e.n, 0)) AS balanced_acc,
    sum(e.loss_sum) / nullif(sum(e.n), 0) AS loss
FROM epochs e
JOIN classes c USING (run_id, class_id)
WHERE len($runs) = 0 OR list_contains($runs, e.run_id)
GROUP BY GROUPING SETS ((e.run_id, e.epoch, e.split, c.grp), (e.run_id, e.epoch, e.split))
ORDER BY e.run_id, e.split, grp, e.epoch
