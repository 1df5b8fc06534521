-- Ratio sweep: how do final balanced, majority and minority accuracy change with the imbalance ratio?
-- params:
--   runs                VARCHAR[]  run ids to include; empty = every run                [default: []]
--   include_unfinished  BOOLEAN    also count runs that are not `finished` (running, failed ...)  [default: false]
-- columns:
--   dataset, profile, model, epochs, loss, drw (deferred re-weighting epoch, NULL without), sampler,
--   ratio (one row per setting; seeds pooled),
--   runs (how many runs), seeds (their seeds, comma-separated), test_balanced, test_majority,
--   test_minority, train_minority, minority_gap (final_results' test_balanced, ..., gap_minority:
--   a group's accuracy is the mean of its classes'), each the mean over the row's runs;
--   test_balanced_sd = standard deviation of test_balanced across seeds
WITH sel AS (
    SELECT r.*, f.* EXCLUDE (run_id)
    FROM runs r
    JOIN final_results f USING (run_id)
    WHERE (len($runs) = 0 OR list_contains($runs, r.run_id))
      AND ($include_unfinished OR r.status = 'finished')
)
SELECT
    dataset, profile, model, epochs, loss, drw, sampler, ratio,
    count(*) AS runs,
    string_agg(seed::VARCHAR, ',' ORDER BY seed) AS seeds,
    avg(test_balanced) AS test_balanced,
    avg(test_majority) AS test_majority,
    avg(test_minority) AS test_minority,
    avg(train_minority) AS train_minority,
    avg(gap_minority) AS minority_gap,
    stddev_samp(test_balanced) AS test_balanced_sd
FROM sel
GROUP BY dataset, profile, model, epochs, loss, drw, sampler, ratio
ORDER BY dataset, profile, model, epochs, loss, drw NULLS FIRST, sampler, ratio
