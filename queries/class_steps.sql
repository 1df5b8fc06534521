-- Per-class curves over training steps: accuracy, loss and last-layer gradient of each class on the
-- training batches, in bins of steps.
-- params:
--   runs  VARCHAR[]  run ids to include; empty = every run          [default: []]
--   bin   INTEGER    steps per bin (a bin starts at a multiple of it)  [default: 50]
-- columns:
--   run_id, step (first step of the bin), epoch (epoch of that first step), class_id, train_count,
--   grp, n (samples of the class seen in the bin), acc = correct / n on the batches (before each
--   update, network in training mode; NULL when n = 0), loss = mean cross-entropy,
--   p_true = mean probability of the true class, margin = mean (true logit - best other logit),
--   pred_share = share of the bin's predictions that went to this class,
--   grad_norm = mean over the bin's steps of the norm of the class's last-layer gradient row
WITH binned AS (
    SELECT s.*, s.step // greatest($bin, 1) * greatest($bin, 1) AS bin_step
    FROM steps s
    WHERE len($runs) = 0 OR list_contains($runs, s.run_id)
)
SELECT
    b.run_id, b.bin_step AS step, min(b.epoch) AS epoch, b.class_id, c.train_count, c.grp,
    sum(b.n)::BIGINT AS n,
    sum(b.correct) / nullif(sum(b.n), 0) AS acc,
    sum(b.loss_sum) / nullif(sum(b.n), 0) AS loss,
    sum(b.p_true_sum) / nullif(sum(b.n), 0) AS p_true,
    sum(b.margin_sum) / nullif(sum(b.n), 0) AS margin,
    sum(b.pred_count) / nullif(sum(sum(b.pred_count)) OVER (PARTITION BY b.run_id, b.bin_step), 0)
        AS pred_share,
    avg(b.grad_norm) AS grad_norm
FROM binned b
JOIN classes c USING (run_id, class_id)
GROUP BY b.run_id, b.bin_step, b.class_id, c.train_count, c.grp
ORDER BY b.run_id, b.class_id, step
