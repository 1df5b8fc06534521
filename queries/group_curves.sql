-- Majority vs minority curves: how do the two groups' train and test accuracy move, epoch by epoch?
-- params:
--   runs  VARCHAR[]  run ids to include; empty = every run  [default: []]
-- columns:
--   the `group_results` view (docs/store.md): run_id, epoch (0 = the untrained network),
--   split ('train' | 'test'), grp ('majority' | 'minority' | 'all'), classes, acc (the mean of
--   the group's per-class accuracies; for `all`, balanced accuracy), loss (the mean of the
--   classes' mean cross-entropy), n (samples evaluated), correct, pooled_acc = correct / n (large
--   classes weigh more on the long-tailed training set)
SELECT *
FROM group_results
WHERE len($runs) = 0 OR list_contains($runs, run_id)
ORDER BY run_id, split, grp, epoch
