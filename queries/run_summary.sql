-- Final accuracy of each run: balanced, majority-group and minority-group, on train and test.
-- params: none (covers every run in the store; filter the result by run_id)
-- columns:
--   run_id, epoch (last evaluated), train_balanced, train_majority, train_minority,
--   test_balanced, test_majority, test_minority (accuracies in 0..1; balanced = mean of the
--   per-class accuracies, group = pooled correct / pooled n over the group's classes)
WITH last AS (
    SELECT run_id, max(epoch) AS epoch FROM epochs GROUP BY run_id
),
per_class AS (
    SELECT e.run_id, e.epoch, e.split, c.grp, e.n, e.correct
    FROM epochs e
    JOIN last USING (run_id, epoch)
    JOIN classes c USING (run_id, class_id)
)
SELECT
    run_id,
    any_value(epoch) AS epoch,
    avg(correct / n) FILTER (WHERE split = 'train') AS train_balanced,
    sum(correct) FILTER (WHERE split = 'train' AND grp = 'majority')
        / sum(n) FILTER (WHERE split = 'train' AND grp = 'majority') AS train_majority,
    sum(correct) FILTER (WHERE split = 'train' AND grp = 'minority')
        / sum(n) FILTER (WHERE split = 'train' AND grp = 'minority') AS train_minority,
    avg(correct / n) FILTER (WHERE split = 'test') AS test_balanced,
    sum(correct) FILTER (WHERE split = 'test' AND grp = 'majority')
        / sum(n) FILTER (WHERE split = 'test' AND grp = 'majority') AS test_majority,
    sum(correct) FILTER (WHERE split = 'test' AND grp = 'minority')
        / sum(n) FILTER (WHERE split = 'test' AND grp = 'minority') AS test_minority
FROM per_class
GROUP BY run_id
ORDER BY run_id
