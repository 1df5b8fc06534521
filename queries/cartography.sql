-- Dataset cartography (Swayamdipta et al. 2020): how confidently, how steadily and how often are
-- each class's training samples classified correctly over their presentations, by class and group?
-- params:
--   runs        VARCHAR[]  run ids to include; empty = every run           [default: []]
--   from_epoch  INTEGER    first epoch counted (later epochs only: >= 1)   [default: 1]
-- columns:
--   run_id, grp, class_id (NULL on a group's row), samples (distinct training samples),
--   confidence = mean over samples of the sample's mean p_true over its presentations,
--   variability = mean over samples of the (population) standard deviation of its p_true,
--   correctness = mean over samples of the fraction of its presentations classified correctly,
--   easy_share = share of samples in the run's top third by confidence and lower two thirds by
--   variability (easy to learn), ambiguous_share = share in the run's top third by variability,
--   hard_share = share in the run's bottom third by confidence and lower two thirds by
--   variability (hard to learn); thirds by percent_rank over all the run's samples
WITH per_sample AS (
    SELECT run_id, sample_id, any_value(class_id) AS class_id,
           avg(p_true) AS confidence,
           stddev_pop(p_true) AS variability,
           avg(CASE WHEN correct THEN 1.0 ELSE 0.0 END) AS correctness
    FROM samples
    WHERE (len($runs) = 0 OR list_contains($runs, run_id)) AND epoch >= $from_epoch
    GROUP BY run_id, sample_id
),
ranked AS (
    SELECT *,
           percent_rank() OVER (PARTITION BY run_id ORDER BY confidence) AS conf_rank,
           percent_rank() OVER (PARTITION BY run_id ORDER BY variability) AS var_rank
    FROM per_sample
)
SELECT
    r.run_id, c.grp, r.class_id,
    count(*) AS samples,
    avg(r.confidence) AS confidence,
    avg(r.variability) AS variability,
    avg(r.correctness) AS correctness,
    avg(CASE WHEN r.conf_rank >= 2 / 3 AND r.var_rank < 2 / 3 THEN 1.0 ELSE 0.0 END) AS easy_share,
    avg(CASE WHEN r.var_rank >= 2 / 3 THEN 1.0 ELSE 0.0 END) AS ambiguous_share,
    avg(CASE WHEN r.conf_rank < 1 / 3 AND r.var_rank < 2 / 3 THEN 1.0 ELSE 0.0 END) AS hard_share
FROM ranked r
JOIN classes c USING (run_id, class_id)
GROUP BY GROUPING SETS ((r.run_id, c.grp, r.class_id), (r.run_id, c.grp))
ORDER BY r.run_id, c.grp, r.class_id NULLS FIRST
