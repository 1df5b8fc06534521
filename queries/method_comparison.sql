-- Method comparison: at each ratio, how do losses and samplers change final balanced, majority and
-- minority accuracy against the plain baseline?
-- params:
--   runs                VARCHAR[]  run ids to include; empty = every run                [default: []]
--   baseline_loss       VARCHAR    the loss of the baseline method                      [default: ce]
--   baseline_sampler    VARCHAR    the sampler of the baseline method                   [default: none]
--   include_unfinished  BOOLEAN    also count runs that are not `finished` (running, failed ...)  [default: false]
-- columns:
--   dataset, profile, model, epochs, ratio, loss, drw (deferred re-weighting epoch, NULL without),
--   sampler (one row per method and setting; seeds pooled), runs, test_balanced, test_majority, test_minority (means over the row's runs of
--   final_results' columns, as in ratio_sweep), d_balanced, d_majority, d_minority = the same minus
--   the baseline's at the same dataset, profile, model, epochs and ratio (NULL without a baseline run;
--   the baseline trains without deferred re-weighting)
WITH sel AS (
    SELECT r.*, f.* EXCLUDE (run_id)
    FROM runs r
    JOIN final_results f USING (run_id)
    WHERE (len($runs) = 0 OR list_contains($runs, r.run_id))
      AND ($include_unfinished OR r.status = 'finished')
),
methods AS (
    SELECT
        dataset, profile, model, epochs, ratio, loss, drw, sampler,
        count(*) AS runs,
        avg(test_balanced) AS test_balanced,
        avg(test_majority) AS test_majority,
        avg(test_minority) AS test_minority
    FROM sel
    GROUP BY dataset, profile, model, epochs, ratio, loss, drw, sampler
)
SELECT
    m.*,
    m.test_balanced - b.test_balanced AS d_balanced,
    m.test_majority - b.test_majority AS d_majority,
    m.test_minority - b.test_minority AS d_minority
FROM methods m
LEFT JOIN methods b
  ON b.dataset = m.dataset AND b.profile = m.profile AND b.model = m.model
 AND b.epochs = m.epochs AND b.ratio = m.ratio
 AND b.loss = $baseline_loss AND b.sampler = $baseline_sampler AND b.drw IS NULL
ORDER BY m.dataset, m.profile, m.model, m.epochs, m.ratio,
         (m.loss = $baseline_loss AND m.sampler = $baseline_sampler AND m.drw IS NULL) DESC,
         m.loss, m.drw NULLS FIRST, m.sampler
