-- Feature geometry by group over epochs: do the minority's features collapse onto each other, spread
-- more within class, and move between train and test more than the majority's?
-- params:
--   runs  VARCHAR[]  run ids to include; empty = every run  [default: []]
-- columns:
--   run_id, epoch, split ('train' | 'test'), grp ('majority' | 'minority'),
--   within_rel = mean over the group's classes of within_var_c / tr Sigma_B: a class's within-class
--   variability relative to the between-class spread (a trace ratio; not NC1),
--   within_rel_all = the same over every class (geometry_summary.within_rel),
--   nc1 = the split's NC1 = Tr(Sigma_W Sigma_B^+) / C (Papyan et al. 2020; one value per split and
--   epoch, the same on both group rows; NULL for runs recorded before it was),
--   nc2_angle = the split's NC2 max-angle measure, mean over class pairs of |cos + 1/(C-1)| (0 at a
--   simplex ETF), nc3 = the split's NC3 self-duality ||W/||W||_F - M/||M||_F||^2 (both NULL for
--   runs recorded before they were),
--   mean_norm = mean over the group's classes of ||mu_c - mu_G||,
--   feature_cos = mean pairwise cosine of the group's centred class means (Fang et al. 2021),
--   classifier_cos = mean pairwise cosine of the group's classifier rows, uncentred (minority
--   collapse: Fang et al. 2021; it approaches 1 as the minority's rows merge),
--   shift_rel = mean over the group's classes of ||mu_c(test) - mu_c(train)|| / sqrt(train
--   within_var_c) (Ye et al. 2020; test rows only, NULL on train rows)
-- Centred means minus the split's global sample mean mu_G (every sample counts once), as Papyan et
-- al. and Fang et al. define it; runs recorded before nc3 existed centred on the mean of the class
-- means. Formulas and sources: trainer/dynamics.py, section "feature geometry".
SELECT
    g.run_id, g.epoch, g.split, c.grp,
    avg(g.within_rel) AS within_rel,
    any_value(s.within_rel) AS within_rel_all,
    any_value(s.nc1) AS nc1,
    any_value(s.nc2_angle) AS nc2_angle,
    any_value(s.nc3) AS nc3,
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
