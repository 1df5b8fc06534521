-- Ratio sweep: how do final balanced, majority and minority accuracy change with the imbalance ratio?
-- params:
--   runs                VARCHAR[]  run ids to include; empty = every run                [default: []]
--   include_unfinished  BOOLEAN    also count runs that are not `finished` (running, failed ...)  [default: false]
-- columns:
--   dataset, profile, model, epochs, method (runs.method, e.g. ce, ldam-drw, ce+class-balanced), ratio
--   (one row per method and setting, its seeds pooled), seeds (how many runs), seed_list (their seeds,
--   comma-separated), test_balanced, test_majority, test_minority, train_minority, minority_gap
--   (final_results' test_balanced, ..., gap_minority: a group's accuracy is the mean of its classes'),
--   each the mean over the row's runs, and after each its _ci (test_balanced_ci, ...: half-width of
--   the mean's 95 % t-interval, ci95(sd, seeds) = t975(seeds - 1) * sd / sqrt(seeds); NULL with one seed)
WITH sel AS (
    SELECT r.*, f.* EXCLUDE (run_id)
    FROM runs r
    JOIN final_results f USING (run_id)
    WHERE (len($runs) = 0 OR list_contains($runs, r.run_id))
      AND ($include_unfinished OR r.status = 'finished')
)
SELECT
    dataset, profile, model, epochs, method, ratio,
    count(*) AS seeds,
    string_agg(seed::VARCHAR, ',' ORDER BY seed) AS seed_list,
    avg(test_balanced) AS test_balanced,
    ci95(stddev_samp(test_balanced), count(test_balanced)) AS test_balanced_ci,
    avg(test_majority) AS test_majority,
    ci95(stddev_samp(test_majority), count(test_majority)) AS test_majority_ci,
    avg(test_minority) AS test_minority,
    ci95(stddev_samp(test_minority), count(test_minority)) AS test_minority_ci,
    avg(train_minority) AS train_minority,
    ci95(stddev_samp(train_minority), count(train_minority)) AS train_minority_ci,
    avg(gap_minority) AS minority_gap,
    ci95(stddev_samp(gap_minority), count(gap_minority)) AS minority_gap_ci
FROM sel
GROUP BY dataset, profile, model, epochs, method, ratio
ORDER BY dataset, profile, model, epochs, method, ratio
