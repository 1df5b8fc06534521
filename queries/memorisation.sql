-- Memorisation: when is each training sample first learned, and how often is it forgotten again,
-- by class and group?
-- params:
--   runs  VARCHAR[]  run ids to include; empty = every run  [default: []]
-- columns:
--   run_id, grp, class_id (NULL on a group's row), samples (distinct training samples seen),
--   presentations, never_learned (samples never classified correctly at a presentation),
--   first_learned_epoch = mean over learned samples of the epoch of their first correct
--   presentation, stable_epoch = mean over samples whose last presentation is correct of the epoch
--   of the first presentation after their last wrong one (from there on they stay correct),
--   forgetting_events = presentations that are wrong right after a correct one of the same sample,
--   events_per_sample = forgetting_events / samples,
--   forgettable_share = share of samples that are not unforgettable: forgotten at least once, or
--   never learned (Toneva et al. 2019 give a never-learned sample the largest forgetting count),
--   mean_forgetting_count = mean of Toneva et al.'s per-sample count
--   (every per-sample number is a column of the `sample_events` view; docs/store.md)
SELECT
    run_id, grp, class_id,
    count(*) AS samples,
    sum(presentations)::BIGINT AS presentations,
    count(*) FILTER (WHERE never_learned) AS never_learned,
    avg(first_learned_epoch) AS first_learned_epoch,
    avg(stable_epoch) AS stable_epoch,
    sum(forgetting_events)::BIGINT AS forgetting_events,
    sum(forgetting_events) / count(*) AS events_per_sample,
    avg(CASE WHEN unforgettable THEN 0.0 ELSE 1.0 END) AS forgettable_share,
    avg(forgetting_count) AS mean_forgetting_count
FROM sample_events
WHERE len($runs) = 0 OR list_contains($runs, run_id)
GROUP BY GROUPING SETS ((run_id, grp, class_id), (run_id, grp))
ORDER BY run_id, grp, class_id NULLS FIRST
