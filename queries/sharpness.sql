-- Sharpness per group (Rangwani et al. 2022): at each recorded epoch, how sharp is the minority's
-- training loss compared with the majority's?
-- params:
--   runs  VARCHAR[]  run ids to include; empty = every run  [default: []]
-- columns:
--   run_id, name, method, epoch, step,
--   majority_lambda_max, minority_lambda_max = the largest Hessian eigenvalue of each group's
--   training loss (mean cross-entropy over a fixed subset of its samples, eval mode),
--   lambda_max_ratio = minority / majority (above 1: the minority sits at a sharper point),
--   majority_lambda_min, minority_lambda_min = the smallest eigenvalues (below 0: negative
--   curvature, a saddle point's sign). Runs recorded without --sharpness-every have no rows.
SELECT
    s.run_id, r.name, r.method, s.epoch, s.step,
    s.majority_lambda_max, s.minority_lambda_max, s.lambda_max_ratio,
    s.majority_lambda_min, s.minority_lambda_min
FROM group_sharpness s
JOIN runs r USING (run_id)
WHERE len($runs) = 0 OR list_contains($runs, s.run_id)
ORDER BY s.run_id, s.epoch
