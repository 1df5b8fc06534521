-- Method comparison: at each ratio, how does each method change final balanced, majority and
-- minority accuracy against the baseline, and is the difference larger than the seeds' spread?
-- params:
--   runs                VARCHAR[]  run ids to include; empty = every run                [default: []]
--   baseline            VARCHAR    the baseline's method label (runs.method)             [default: ce]
--   include_unfinished  BOOLEAN    also count runs that are not `finished` (running, failed ...)  [default: false]
-- columns:
--   dataset, profile, model, epochs, ratio, method (runs.method, e.g. ce, ldam-drw, ce+class-balanced:
--   one row per method and setting, its seeds pooled; the baseline's row first), seeds (how many runs),
--   test_balanced, test_majority, test_minority (means over the row's runs of final_results' columns),
--   test_balanced_ci, test_majority_ci, test_minority_ci (half-width of each mean's 95 % t-interval:
--   ci95(sd, seeds) = t975(seeds - 1) * sd / sqrt(seeds); NULL with one seed),
--   d_balanced, d_majority, d_minority (the row's mean minus the baseline's at the same dataset,
--   profile, model, epochs and ratio; NULL without a baseline run),
--   d_balanced_ci, d_majority_ci, d_minority_ci (half-width of the difference's 95 % Welch t-interval:
--   ci95_diff; NULL when either side has one seed),
--   d_balanced_within, d_majority_within, d_minority_within (the rule: true when |d| <= d_..._ci, i.e.
--   the Welch interval contains 0 and the difference is within the seeds' spread, not significant at
--   the 5 % level; false when it is outside; NULL when d_..._ci is)
WITH sel AS (
    SELECT r.*, f.* EXCLUDE (run_id)
    FROM runs r
    JOIN final_results f USING (run_id)
    WHERE (len($runs) = 0 OR list_contains($runs, r.run_id))
      AND ($include_unfinished OR r.status = 'finished')
),
methods AS (
    SELECT
        dataset, profile, model, epochs, ratio, method,
        count(*) AS seeds,
        avg(test_balanced) AS test_balanced,
        avg(test_majority) AS test_majority,
        avg(test_minority) AS test_minority,
        stddev_samp(test_balanced) AS sd_balanced,
        stddev_samp(test_majority) AS sd_majority,
        stddev_samp(test_minority) AS sd_minority,
        count(test_balanced) AS n_balanced,
        count(test_majority) AS n_majority,
        count(test_minority) AS n_minority
    FROM sel
    GROUP BY dataset, profile, model, epochs, ratio, method
),
diffs AS (
    SELECT
        m.*,
        m.test_balanced - b.test_balanced AS d_balanced,
        m.test_majority - b.test_majority AS d_majority,
        m.test_minority - b.test_minority AS d_minority,
        ci95_diff(m.sd_balanced, m.n_balanced, b.sd_balanced, b.n_balanced) AS d_balanced_ci,
        ci95_diff(m.sd_majority, m.n_majority, b.sd_majority, b.n_majority) AS d_majority_ci,
        ci95_diff(m.sd_minority, m.n_minority, b.sd_minority, b.n_minority) AS d_minority_ci
    FROM methods m
    LEFT JOIN methods b
      ON b.dataset = m.dataset AND b.profile = m.profile AND b.model = m.model
     AND b.epochs = m.epochs AND b.ratio = m.ratio AND b.method = $baseline
)
SELECT
    dataset, profile, model, epochs, ratio, method, seeds,
    test_balanced, ci95(sd_balanced, n_balanced) AS test_balanced_ci,
    test_majority, ci95(sd_majority, n_majority) AS test_majority_ci,
    test_minority, ci95(sd_minority, n_minority) AS test_minority_ci,
    d_balanced, d_balanced_ci, abs(d_balanced) <= d_balanced_ci AS d_balanced_within,
    d_majority, d_majority_ci, abs(d_majority) <= d_majority_ci AS d_majority_within,
    d_minority, d_minority_ci, abs(d_minority) <= d_minority_ci AS d_minority_within
FROM diffs
ORDER BY dataset, profile, model, epochs, ratio, method = $baseline DESC, method
