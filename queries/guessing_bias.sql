-- Initial guessing bias (Francazi et al. 2024): which classes does the untrained network predict,
-- are they majority or minority classes, and does the bias last over the first training steps?
-- params:
--   runs   VARCHAR[]  run ids to include; empty = every run                     [default: []]
--   steps  INTEGER    K: how many of the first training steps the 'steps' rows cover  [default: 20]
-- columns:
--   run_id, source = 'train' or 'test' (the eval passes of the untrained network, epoch 0, in
--   eval mode) or 'steps' (the training batches of steps 0 .. K-1, each measured before its
--   update, in training mode: the first K steps' predictions),
--   class_id, grp, train_count, n = the class's samples in the source, pred_count = the source's
--   samples predicted as the class,
--   pred_share = pred_count / the source's samples (epoch 0: logit_results.pred_share),
--   true_share = n / the source's samples (its share of what was classified),
--   share_rank = 1 for the most-predicted class of the run and source (ties by class id),
--   top_class, top_share = that class and its pred_share,
--   majority_share = the share of the source's predictions that go to majority classes (the sum
--   over the group's classes, as logit_results' group rows),
--   majority_class_share = the majority's share of the classes (an unbiased guess on balanced
--   data puts this share of the predictions there),
--   majority_true_share = the majority's share of the source's samples.
--   The summary columns (top_class .. majority_true_share) are the same on every row of a run
--   and source. Runs recorded without the logits table have only 'steps' rows (none with
--   --dynamics off).
WITH per_class AS (
    SELECT run_id, split AS source, class_id, grp, n, pred_count, pred_share
    FROM logit_results
    WHERE epoch = 0 AND class_id IS NOT NULL
      AND (len($runs) = 0 OR list_contains($runs, run_id))
    UNION ALL
    SELECT s.run_id, 'steps', s.class_id, any_value(c.grp), sum(s.n), sum(s.pred_count),
           sum(s.pred_count) / nullif(sum(sum(s.n)) OVER (PARTITION BY s.run_id), 0)
    FROM steps s
    JOIN classes c ON c.run_id = s.run_id AND c.class_id = s.class_id
    WHERE s.step < $steps
      AND (len($runs) = 0 OR list_contains($runs, s.run_id))
    GROUP BY s.run_id, s.class_id
),
ranked AS (
    SELECT p.*, k.train_count,
           p.n / nullif(sum(p.n) OVER w, 0) AS true_share,
           row_number() OVER (PARTITION BY p.run_id, p.source
                              ORDER BY p.pred_share DESC NULLS LAST, p.class_id) AS share_rank,
           sum(CASE WHEN p.grp = 'majority' THEN p.pred_count END) OVER w
               / nullif(sum(p.pred_count) OVER w, 0) AS majority_share,
           count(*) FILTER (WHERE p.grp = 'majority') OVER w / count(*) OVER w
               AS majority_class_share,
           sum(CASE WHEN p.grp = 'majority' THEN p.n END) OVER w
               / nullif(sum(p.n) OVER w, 0) AS majority_true_share
    FROM per_class p
    JOIN classes k ON k.run_id = p.run_id AND k.class_id = p.class_id
    WINDOW w AS (PARTITION BY p.run_id, p.source)
)
SELECT run_id, source, class_id, grp, train_count, n, pred_count, pred_share, true_share,
       share_rank,
       first(class_id ORDER BY share_rank) OVER w AS top_class,
       max(pred_share) OVER w AS top_share,
       majority_share, majority_class_share, majority_true_share
FROM ranked
WINDOW w AS (PARTITION BY run_id, source)
ORDER BY run_id, CASE source WHEN 'train' THEN 0 WHEN 'test' THEN 1 ELSE 2 END, share_rank
