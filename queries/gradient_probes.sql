-- Gradient probes: how hard does each group's own loss pull on the whole model, and does that pull
-- agree with the update the batch actually makes?
-- params:
--   runs  VARCHAR[]  run ids to include; empty = every run  [default: []]
-- columns:
--   run_id, step, epoch, grp ('majority' | 'minority'), n (the group's samples in the probed batch),
--   grad_norm = norm of the full-model gradient of the group's loss on the batch,
--   cos_to_batch = cosine between that gradient and the whole batch's gradient,
--   norm_ratio = grad_norm / the majority's grad_norm at the same step
SELECT
    run_id, step, epoch, grp, n, grad_norm, cos_to_batch,
    grad_norm / nullif(max(grad_norm) FILTER (WHERE grp = 'majority')
                       OVER (PARTITION BY run_id, step), 0) AS norm_ratio
FROM probes
WHERE len($runs) = 0 OR list_contains($runs, run_id)
ORDER BY run_id, step, grp
