-- Learning speed: how fast is each class learned (area under its train accuracy curve), against its size?
-- params:
--   runs  VARCHAR[]  run ids to include; empty = every run  [default: []]
-- columns:
--   run_id, grp, class_id (NULL on a group's row), class_name, rank, shot (NULL on a group's row),
--   train_count (the class's, or summed over the group), classes (1 on a class's row, the group's
--   classes on a group's), last_epoch,
--   auc = class_learning_speed.auc: the area under the class's train accuracy curve from epoch 0
--   to last_epoch, trapezoid rule, divided by the epochs so it lies in [0, 1]; on a group's row
--   the mean over its classes (the area under group_results' train curve); grp 'all' = every class,
--   pearson_log_count = Pearson's r between ln(train_count) and auc across the group's classes
--   (DuckDB's corr), spearman_count = Spearman's rho between train_count and auc across them
--   (Pearson's r of their ranks, ties given their mean rank); both NULL on a class's row, and
--   when train_count or auc is the same for every class (e.g. ratio 1: all sizes equal)
WITH speed AS (
    SELECT s.*, c.class_name
    FROM class_learning_speed s
    JOIN classes c USING (run_id, class_id)
    WHERE len($runs) = 0 OR list_contains($runs, run_id)
),
members AS (  -- each class counted in its group and in `all`
    SELECT *, grp AS member_of FROM speed
    UNION ALL
    SELECT *, 'all' FROM speed
),
ranked AS (
    SELECT *,
           rank() OVER (PARTITION BY run_id, member_of ORDER BY train_count)
             + (count(*) OVER (PARTITION BY run_id, member_of, train_count) - 1) / 2
             AS count_rank,
           rank() OVER (PARTITION BY run_id, member_of ORDER BY auc)
             + (count(*) OVER (PARTITION BY run_id, member_of, auc) - 1) / 2
             AS auc_rank
    FROM members
    WHERE auc IS NOT NULL
),
per_group AS (
    SELECT
        run_id, member_of AS grp, NULL::INTEGER AS class_id, NULL::VARCHAR AS class_name,
        NULL::INTEGER AS rank, NULL::VARCHAR AS shot, sum(train_count)::BIGINT AS train_count,
        count(*)::INTEGER AS classes, max(last_epoch) AS last_epoch, avg(auc) AS auc,
        CASE WHEN count(DISTINCT train_count) > 1 AND count(DISTINCT auc) > 1
             THEN corr(ln(train_count), auc) END AS pearson_log_count,
        CASE WHEN count(DISTINCT train_count) > 1 AND count(DISTINCT auc) > 1
             THEN corr(count_rank, auc_rank) END AS spearman_count
    FROM ranked
    GROUP BY run_id, member_of
),
per_class AS (
    SELECT run_id, grp, class_id, class_name, rank, shot, train_count, 1 AS classes,
           last_epoch, auc, NULL::DOUBLE AS pearson_log_count, NULL::DOUBLE AS spearman_count
    FROM speed
)
SELECT * FROM per_class
UNION ALL
SELECT * FROM per_group
ORDER BY run_id, grp, class_id NULLS FIRST
