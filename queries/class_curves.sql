-- Per-class curves: how does each class's accuracy, loss and confidence move, epoch by epoch?
-- params:
--   runs  VARCHAR[]  run ids to include; empty = every run  [default: []]
-- columns:
--   run_id, epoch (0 = the untrained network), split ('train' = the long-tailed training set
--   evaluated without augmentation, 'test' = the balanced test set), class_id, class_name,
--   train_count, rank (0 = largest class), grp ('majority' | 'minority'),
--   n (samples evaluated), correct, acc = correct / n, loss = mean cross-entropy,
--   p_true = mean probability given to the true class
SELECT
    e.run_id, e.epoch, e.split, e.class_id, c.class_name, c.train_count, c.rank, c.grp,
    e.n, e.correct,
    e.correct / nullif(e.n, 0) AS acc,
    e.loss_sum / nullif(e.n, 0) AS loss,
    e.p_true_sum / nullif(e.n, 0) AS p_true
FROM epochs e
JOIN classes c USING (run_id, class_id)
WHERE len($runs) = 0 OR list_contains($runs, e.run_id)
ORDER BY e.run_id, e.split, e.class_id, e.epoch
