-- Learning onset: the first epoch each class's train accuracy reaches a threshold, against its size.
-- params:
--   runs       VARCHAR[]  run ids to include; empty = every run                [default: []]
--   threshold  DOUBLE     train accuracy (0..1) at which a class counts as learned  [default: 0.5]
-- columns:
--   run_id, class_id, class_name, train_count, rank (0 = largest), grp, shot,
--   onset_epoch = first epoch >= 1 whose train accuracy (class_results.acc: the training set, without
--   augmentation) is >= threshold; NULL if it never got there (epoch 0, the untrained network, is
--   left out: it often predicts one class for everything),
--   last_epoch = the last evaluated epoch (an onset of NULL means "later than this"),
--   final_train_acc = train accuracy at last_epoch
WITH acc AS (
    SELECT run_id, class_id, epoch, acc
    FROM class_results
    WHERE split = 'train' AND epoch >= 1
      AND (len($runs) = 0 OR list_contains($runs, run_id))
)
SELECT
    c.run_id, c.class_id, c.class_name, c.train_count, c.rank, c.grp, c.shot,
    min(a.epoch) FILTER (WHERE a.acc >= $threshold) AS onset_epoch,
    max(a.epoch) AS last_epoch,
    arg_max(a.acc, a.epoch) AS final_train_acc
FROM classes c
JOIN acc a USING (run_id, class_id)
GROUP BY c.run_id, c.class_id, c.class_name, c.train_count, c.rank, c.grp, c.shot
ORDER BY c.run_id, c.class_id
