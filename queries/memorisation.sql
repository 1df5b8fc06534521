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
--   forgetting_events = presentations that are wrong right after a correct one of the same sample
--   (Toneva et al. 2019), events_per_sample = forgetting_events / samples,
--   forgotten_share = share of samples with at least one forgetting event
--   (presentations of one sample are ordered by step; a sample drawn twice in one step by a
--   sampler with replacement counts its wrong presentation first)
WITH pres AS (
    SELECT run_id, sample_id, class_id, epoch, step, correct,
           lag(correct) OVER w AS prev,
           row_number() OVER w AS k
    FROM samples
    WHERE len($runs) = 0 OR list_contains($runs, run_id)
    WINDOW w AS (PARTITION BY run_id, sample_id ORDER BY step, correct)
),
per_sample AS (
    SELECT
        run_id, sample_id, any_value(class_id) AS class_id,
        count(*) AS presentations,
        min(epoch) FILTER (WHERE correct) AS first_learned,
        max(k) FILTER (WHERE NOT correct) AS last_wrong,
        count(*) FILTER (WHERE prev AND NOT correct) AS forgets
    FROM pres
    GROUP BY run_id, sample_id
),
stable AS (
    SELECT s.run_id, s.sample_id,
           min(p.epoch) FILTER (WHERE p.k > coalesce(s.last_wrong, 0)) AS stable_epoch
    FROM per_sample s
    JOIN pres p USING (run_id, sample_id)
    GROUP BY s.run_id, s.sample_id
)
SELECT
    s.run_id, c.grp, s.class_id,
    count(*) AS samples,
    sum(s.presentations)::BIGINT AS presentations,
    count(*) FILTER (WHERE s.first_learned IS NULL) AS never_learned,
    avg(s.first_learned) AS first_learned_epoch,
    avg(t.stable_epoch) AS stable_epoch,
    sum(s.forgets)::BIGINT AS forgetting_events,
    sum(s.forgets) / count(*) AS events_per_sample,
    avg(CASE WHEN s.forgets > 0 THEN 1.0 ELSE 0.0 END) AS forgotten_share
FROM per_sample s
JOIN stable t USING (run_id, sample_id)
JOIN classes c USING (run_id, class_id)
GROUP BY GROUPING SETS ((s.run_id, c.grp, s.class_id), (s.run_id, c.grp))
ORDER BY s.run_id, c.grp, s.class_id NULLS FIRST
