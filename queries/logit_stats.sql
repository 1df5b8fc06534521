-- Logit statistics at the last epoch: per run, split and group, how large are the own and the
-- best other logits, their margin and the logit norm?
-- params:
--   runs  VARCHAR[]  run ids to include; empty = every run  [default: []]
-- columns:
--   run_id, name, method, epoch (the run's last evaluated epoch, as in final_results),
--   split ('train' | 'test'), grp ('majority' | 'minority' | 'all'), classes (with n > 0),
--   own_logit = mean over the group's classes of each class's mean own logit z_y,
--   other_logit = the same of the largest other logit max_{c != y} z_c,
--   margin = own_logit - other_logit (the mean over the group's classes of their mean margin),
--   logit_norm = the same mean of the mean logit norm ||z||_2,
--   pred_share = the share of the split's predictions that go to the group's classes (the sum
--   over its classes of theirs; 1 for `all`). All from the logit_results view's group rows; runs
--   recorded without the logits table (or with --dynamics off) have no rows.
SELECT
    f.run_id, r.name, r.method, f.epoch, l.split, l.grp, l.classes,
    l.own_logit, l.other_logit, l.margin, l.logit_norm, l.pred_share
FROM final_results f
JOIN runs r USING (run_id)
JOIN logit_results l ON l.run_id = f.run_id AND l.epoch = f.epoch
WHERE l.class_id IS NULL
  AND (len($runs) = 0 OR list_contains($runs, f.run_id))
ORDER BY f.run_id, l.split DESC, CASE l.grp WHEN 'majority' THEN 0 WHEN 'minority' THEN 1 ELSE 2 END
