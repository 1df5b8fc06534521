-- Final results of each run: balanced, majority and minority accuracy on train and test, the gaps,
-- and the best epoch's balanced test accuracy.
-- params: none (covers every run in the store; filter the result by run_id)
-- columns: the `final_results` view (docs/store.md): run_id, epoch (last evaluated),
--          train_balanced, train_majority, train_minority, test_balanced, test_majority,
--          test_minority (a group's accuracy = the mean of its classes' accuracies; balanced = the
--          mean over every class), gap_balanced, gap_majority, gap_minority (train - test),
--          best_epoch, best_test_balanced
SELECT * FROM final_results
ORDER BY run_id
