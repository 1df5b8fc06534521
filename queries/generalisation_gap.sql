-- Generalisation gap at the end: train minus test accuracy per class and per group, last epoch.
-- params:
--   runs  VARCHAR[]  run ids to include; empty = every run  [default: []]
-- columns:
--   run_id, epoch (the run's last evaluated epoch), grp, class_id (NULL on a group's row),
--   train_count (the class's, or summed over the group), train_acc, test_acc (class_results.acc;
--   on a group's row group_results.acc, the mean over its classes), gap = train_acc - test_acc
--   (memorisation without generalisation shows as a minority gap far above the majority's; the
--   group rows are final_results' gap_majority and gap_minority)
WITH last AS (
    SELECT run_id, max(epoch) AS epoch FROM group_results
    WHERE len($runs) = 0 OR list_contains($runs, run_id)
    GROUP BY run_id
),
per_class AS (
    SELECT
        k.run_id, k.epoch, k.grp, k.class_id, k.train_count,
        max(k.acc) FILTER (WHERE k.split = 'train') AS train_acc,
        max(k.acc) FILTER (WHERE k.split = 'test') AS test_acc
    FROM class_results k
    JOIN last USING (run_id, epoch)
    GROUP BY ALL
),
per_group AS (
    SELECT
        g.run_id, g.epoch, g.grp, NULL::INTEGER AS class_id,
        (SELECT sum(c.train_count) FROM classes c
         WHERE c.run_id = g.run_id AND c.grp = g.grp)::BIGINT AS train_count,
        max(g.acc) FILTER (WHERE g.split = 'train') AS train_acc,
        max(g.acc) FILTER (WHERE g.split = 'test') AS test_acc
    FROM group_results g
    JOIN last USING (run_id, epoch)
    WHERE g.grp <> 'all'
    GROUP BY g.run_id, g.epoch, g.grp
)
SELECT run_id, epoch, grp, class_id, train_count, train_acc, test_acc, train_acc - test_acc AS gap
FROM (SELECT * FROM per_class UNION ALL SELECT * FROM per_group)
ORDER BY run_id, grp, class_id NULLS FIRST
