-- Generalisation gap at the end: train minus test accuracy per class and per group, last epoch.
-- params:
--   runs  VARCHAR[]  run ids to include; empty = every run  [default: []]
-- columns:
--   run_id, epoch (the run's last evaluated epoch), grp, class_id (NULL on a group's row),
--   train_count (the class's, or summed over the group), train_acc, test_acc (pooled correct /
--   pooled n over the row's classes), gap = train_acc - test_acc
--   (memorisation without generalisation shows as a minority gap far above the majority's)
WITH sel AS (
    SELECT * FROM epochs WHERE len($runs) = 0 OR list_contains($runs, run_id)
),
last AS (
    SELECT run_id, max(epoch) AS epoch FROM sel GROUP BY run_id
),
fin AS (
    SELECT s.run_id, s.epoch, c.grp, s.class_id, c.train_count, s.split, s.n, s.correct
    FROM sel s
    JOIN last USING (run_id, epoch)
    JOIN classes c USING (run_id, class_id)
),
per_row AS (
    SELECT
        run_id, epoch, grp, class_id,
        sum(train_count) FILTER (WHERE split = 'train')::BIGINT AS train_count,
        sum(correct) FILTER (WHERE split = 'train')
            / nullif(sum(n) FILTER (WHERE split = 'train'), 0) AS train_acc,
        sum(correct) FILTER (WHERE split = 'test')
            / nullif(sum(n) FILTER (WHERE split = 'test'), 0) AS test_acc
    FROM fin
    GROUP BY GROUPING SETS ((run_id, epoch, grp, class_id), (run_id, epoch, grp))
)
SELECT run_id, epoch, grp, class_id, train_count, train_acc, test_acc, train_acc - test_acc AS gap
FROM per_row
ORDER BY run_id, grp, class_id NULLS FIRST
