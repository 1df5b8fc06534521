-- Feature geometry by group over epochs: do the minority's features collapse onto each other, spread
-- more within class, and move between train and test more than the majority's?
-- params:
--   runs  VARCHAR[]  run ids to include; empty = every run  [default: []]
-- columns:
--   run_id, epoch, split ('train' | 'test'), grp ('majority' | 'minority'),
--   nc1 = mean over the group's classes of within_var_c / tr Sigma_B (NC1, trace form),
--   nc1_all = the same over every class (geometry_summary.nc1),
--   mean_norm = mean over the group's classes of ||mu_c - mu_G||,
--   feature_cos = mean pairwise cosine of the group's centred class means,
--   classifier_cos = mean pairwise cosine of the group's classifier rows (minority collapse:
--   Fang et al. 2021; it approaches 1 as the minority's rows merge),
--   shift_rel = mean over the group's classes of ||mu_c(test) - mu_c(train)|| / sqrt(train
--   within_var_c) (Ye et al. 2020; test rows only, NULL on train rows)
SELECT
    g.run_id, g.epoch, g.split, c.grp,
    avg(g.nc1) AS nc1,
    any_value(s.nc1) AS nc1_all,
    avg(g.mean_norm) AS mean_norm,
    any_value(CASE c.grp WHEN 'minority' THEN s.minority_cos ELSE s.majority_cos END)
        AS feature_cos,
    any_value(CASE c.grp WHEN 'minority' THEN s.w_minority_cos ELSE s.w_majority_cos END)
        AS classifier_cos,
    avg(g.shift_rel) AS shift_rel
FROM geometry g
JOIN classes c USING (run_id, class_id)
JOIN geometry_summary s USING (run_id, epoch, split)
WHERE len($runs) = 0 OR list_contains($runs, g.run_id)
GROUP BY g.run_id, g.epoch, g.split, c.grp
ORDER BY g.run_id, g.epoch, g.split, c.grp
