-- Final accuracy of each run: balanced, majority-group and minority-group, on train and test.
-- params: none (covers every run in the store; filter the result by run_id)
-- columns: run_id, epoch (last evaluated), train_balanced, train_majority, train_minority,
--          test_balanced, test_majority, test_minority (accuracies in 0..1; balanced = mean of all
--          per-class accuracies, majority / minority = mean of the group's per-class accuracies, so a
--          large class does not outweigh a small one on the long-tailed training set)
WITH last AS (
    SELECT run_id, max(epoch) AS epoch FROM epochs GROUP BY run_id
),
per_class AS (
    SELECT e.run_id, e.epoch, e.split, c.grp, e.correct / e.n AS acc
    FROM epochs e
    JOIN last USING (run_id, epoch)
    JOIN classes c USING (run_id, class_id)
    WHERE e.n > 0
)
SELECT
    run_id,
    any_value(epoch) AS epoch,
    avg(acc) FILTER (WHERE split = 'train') AS train_balanced,
    avg(acc) FILTER (WHERE split = 'train' AND grp = 'majority') AS train_majority,
    avg(acc) FILTER (WHERE split = 'train' AND grp = 'minority') AS train_minority,
    avg(acc) FILTER (WHERE split = 'test') AS test_balanced,
    avg(acc) FILTER (WHERE split = 'test' AND grp = 'majority') AS test_majority,
    avg(acc) FILTER (WHERE split = 'test' AND grp = 'minority') AS test_minority
FROM per_class
GROUP BY run_id
ORDER BY run_id
