-- Prediction bias: does the network predict each class more or less often than it occurs, per epoch?
-- params:
--   runs  VARCHAR[]  run ids to include; empty = every run  [default: []]
-- columns:
--   run_id, epoch, class_id, train_count, grp,
--   pred_share = the class's share of all predictions on the epoch's training batches,
--   true_share = the class's share of the samples in those batches,
--   bias = pred_share / true_share (1 = predicted as often as it occurs; above 1 = over-predicted;
--   NULL if the class did not occur)
WITH per_class AS (
    SELECT run_id, epoch, class_id, sum(n) AS n, sum(pred_count) AS preds
    FROM steps
    WHERE len($runs) = 0 OR list_contains($runs, run_id)
    GROUP BY run_id, epoch, class_id
),
shares AS (
    SELECT
        p.run_id, p.epoch, p.class_id, c.train_count, c.grp,
        p.preds / nullif(sum(p.preds) OVER (PARTITION BY p.run_id, p.epoch), 0) AS pred_share,
        p.n / nullif(sum(p.n) OVER (PARTITION BY p.run_id, p.epoch), 0) AS true_share
    FROM per_class p
    JOIN classes c USING (run_id, class_id)
)
SELECT *, pred_share / nullif(true_share, 0) AS bias
FROM shares
ORDER BY run_id, epoch, class_id
