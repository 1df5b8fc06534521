-- Generalisation gap at the end: train minus test accuracy per class and per group, last epoch.
-- params:
--   runs  VARCHAR[]  run ids to include; empty = every run  [default: []]
-- columns:
--   run_id, epoch (the run's last evaluated epoch), grp, class_id (NULL on a group's row),
--   train_count (the class's, or summed over the group), train_acc, test_acc (a class's accuracy;
--   on a group's row the mean over its classes), gap = train_acc - test_acc
--   (memorisation without generalisation shows as a minority gap far above the majority's. Group
--   rows average classes rather than pool samples: pooled over the long-tailed training set, the
--   group's larger classes would outweigh its smaller ones on the train side only, and that alone
--   opens a gap while the smallest classes are still unlearned)
WITH sel AS (
    SELECT * FROM epochs WHERE len($runs) = 0 OR list_contains($runs, run_id)
),
last AS (
    SELECT run_id, max(epoch) AS epoch FROM sel GROUP BY run_id
),
per_class AS (
    SELECT
        s.run_id, s.epoch, c.grp, s.class_id, c.train_count,
        max(s.correct / nullif(s.n, 0)) FILTER (WHERE s.split = 'train') AS train_acc,
        max(s.correct / nullif(s.n, 0)) FILTER (WHERE s.split = 'test') AS test_acc
    FROM sel s
    JOIN last USING (run_id, epoch)
    JOIN classes c USING (run_id, class_id)
    GROUP BY s.run_id, s.epoch, c.grp, s.class_id, c.train_count
),
per_row AS (
    SELECT
        run_id, epoch, grp, class_id,
        sum(train_count)::BIGINT AS train_count,
        avg(train_acc) AS train_acc,
        avg(test_acc) AS test_acc
    FROM per_class
    GROUP BY GROUPING SETS ((run_id, epoch, grp, class_id), (run_id, epoch, grp))
)
SELECT run_id, epoch, grp, class_id, train_count, train_acc, test_acc, train_acc - test_acc AS gap
FROM per_row
ORDER BY run_id, grp, class_id NULLS FIRST
