-- Per-class curves: how does each class's accuracy, loss and confidence move, epoch by epoch?
-- params:
--   runs  VARCHAR[]  run ids to include; empty = every run  [default: []]
-- columns:
--   run_id, epoch (0 = the untrained network), split ('train' = the long-tailed training set
--   evaluated without augmentation, 'test' = the balanced test set), class_id, class_name,
--   train_count, rank (0 = largest class), grp ('majority' | 'minority'),
--   n (samples evaluated), correct, acc = correct / n, loss = mean cross-entropy,
--   p_true = mean probability given to the true class (the `class_results` view; docs/store.md)
SELECT
    k.run_id, k.epoch, k.split, k.class_id, c.class_name, k.train_count, k.rank, k.grp,
    k.n, k.correct, k.acc, k.loss, k.p_true
FROM class_results k
JOIN classes c USING (run_id, class_id)
WHERE len($runs) = 0 OR list_contains($runs, k.run_id)
ORDER BY k.run_id, k.split, k.class_id, k.epoch
