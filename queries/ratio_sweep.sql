-- Ratio sweep: how do final balanced, majority and minority accuracy change with the imbalance ratio?
-- params:
--   runs                VARCHAR[]  run ids to include; empty = every run                [default: []]
--   include_unfinished  BOOLEAN    also count runs that are not `finished` (running, failed ...)  [default: false]
-- columns:
--   dataset, profile, model, epochs, loss, drw (deferred re-weighting epoch, NULL without), sampler,
--   ratio (one row per setting; seeds pooled),
--   runs (how many runs), seeds (their seeds, comma-separated), test_balanced (mean of per-class test accuracy),
--   test_majority, test_minority (pooled group test accuracy), train_minority,
--   minority_gap = train_minority - test_minority, each the mean over the row's runs at their last
--   evaluated epoch; test_balanced_sd = standard deviation of test_balanced across seeds
WITH sel AS (
    SELECT * FROM runs
    WHERE (len($runs) = 0 OR list_contains($runs, run_id))
      AND ($include_unfinished OR status = 'finished')
),
last AS (
    SELECT run_id, max(epoch) AS epoch FROM epochs GROUP BY run_id
),
final AS (
    SELECT
        e.run_id,
        avg(e.correct / nullif(e.n, 0)) FILTER (WHERE e.split = 'test') AS test_balanced,
        sum(e.correct) FILTER (WHERE e.split = 'test' AND c.grp = 'majority')
            / sum(e.n) FILTER (WHERE e.split = 'test' AND c.grp = 'majority') AS test_majority,
        sum(e.correct) FILTER (WHERE e.split = 'test' AND c.grp = 'minority')
            / sum(e.n) FILTER (WHERE e.split = 'test' AND c.grp = 'minority') AS test_minority,
        sum(e.correct) FILTER (WHERE e.split = 'train' AND c.grp = 'minority')
            / sum(e.n) FILTER (WHERE e.split = 'train' AND c.grp = 'minority') AS train_minority
    FROM epochs e
    JOIN last USING (run_id, epoch)
    JOIN classes c USING (run_id, class_id)
    GROUP BY e.run_id
)
SELECT
    r.dataset, r.profile, r.model, r.epochs, r.loss, r.drw, r.sampler, r.ratio,
    count(*) AS runs,
    string_agg(r.seed::VARCHAR, ',' ORDER BY r.seed) AS seeds,
    avg(f.test_balanced) AS test_balanced,
    avg(f.test_majority) AS test_majority,
    avg(f.test_minority) AS test_minority,
    avg(f.train_minority) AS train_minority,
    avg(f.train_minority - f.test_minority) AS minority_gap,
    stddev_samp(f.test_balanced) AS test_balanced_sd
FROM sel r
JOIN final f USING (run_id)
GROUP BY r.dataset, r.profile, r.model, r.epochs, r.loss, r.drw, r.sampler, r.ratio
ORDER BY r.dataset, r.profile, r.model, r.epochs, r.loss, r.drw NULLS FIRST, r.sampler, r.ratio
