-- Post-hoc logit adjustment: per run and tau, how does predicting argmax z - tau * log(prior)
-- instead of argmax z change the final balanced, majority and minority test accuracy?
-- params:
--   runs  VARCHAR[]  run ids to include; empty = every run                          [default: []]
--   taus  VARCHAR[]  taus to include (numbers: 0.5,1); empty = every tau recorded    [default: []]
-- columns:
--   run_id, name, method, epoch (the run's last evaluated epoch, as in final_results), tau,
--   test_balanced, test_majority, test_minority (the plain logits: final_results' columns),
--   adjusted_balanced, adjusted_majority, adjusted_minority (the adjusted logits: posthoc_results'
--   group rows, each group's accuracy the mean over its classes as in group_results),
--   gain_balanced, gain_majority, gain_minority = adjusted minus plain. Runs recorded without
--   the posthoc table (or with --dynamics off) have no rows.
SELECT
    f.run_id, r.name, r.method, f.epoch, p.tau,
    max(p.plain_acc) FILTER (WHERE p.grp = 'all') AS test_balanced,
    max(p.plain_acc) FILTER (WHERE p.grp = 'majority') AS test_majority,
    max(p.plain_acc) FILTER (WHERE p.grp = 'minority') AS test_minority,
    max(p.adjusted_acc) FILTER (WHERE p.grp = 'all') AS adjusted_balanced,
    max(p.adjusted_acc) FILTER (WHERE p.grp = 'majority') AS adjusted_majority,
    max(p.adjusted_acc) FILTER (WHERE p.grp = 'minority') AS adjusted_minority,
    max(p.gain) FILTER (WHERE p.grp = 'all') AS gain_balanced,
    max(p.gain) FILTER (WHERE p.grp = 'majority') AS gain_majority,
    max(p.gain) FILTER (WHERE p.grp = 'minority') AS gain_minority
FROM final_results f
JOIN runs r USING (run_id)
JOIN posthoc_results p ON p.run_id = f.run_id AND p.epoch = f.epoch
WHERE p.split = 'test' AND p.class_id IS NULL
  AND (len($runs) = 0 OR list_contains($runs, f.run_id))
  AND (len($taus) = 0 OR p.tau IN (SELECT CAST(unnest($taus) AS DOUBLE)))
GROUP BY f.run_id, r.name, r.method, f.epoch, p.tau
ORDER BY f.run_id, p.tau
