"""The comparison's splits: k-fold parts are disjoint and test every item once, stratified; a split column and its
errors; every check runs without any backbone."""

import numpy as np
import pytest

from hf_metaembed.compare.splits import SplitError, check_labels_in_splits, column_splits, kfold_splits


def test_kfold_tests_every_item_once_validates_on_the_next_part_and_stratifies():
    labels = ["a"] * 12 + ["b"] * 6
    splits = kfold_splits(labels, folds=3, seed=1)
    assert sorted(splits.test_items.tolist()) == list(range(18))
    for number, (train, validation, test) in enumerate(splits.folds):
        assert not set(train) & set(validation) and not set(train) & set(test) and not set(validation) & set(test)
        assert len(train) + len(validation) + len(test) == 18
        assert set(validation) == set(splits.folds[(number + 1) % 3][2])
        assert sum(labels[i] == "b" for i in test) == 2  # 6 of class b dealt over 3 parts
    assert kfold_splits(labels, 3, seed=1).digest == splits.digest != kfold_splits(labels, 3, seed=2).digest


def test_kfold_refuses_more_folds_than_the_smallest_class_has_items():
    with pytest.raises(SplitError, match="class 'b' has 2 items, fewer than the 4 folds"):
        kfold_splits(["a"] * 10 + ["b"] * 2, folds=4)
    with pytest.raises(SplitError, match="at least 3 folds"):
        kfold_splits(["a", "b"] * 5, folds=2)


def test_split_column_aliases_carved_validation_and_errors():
    values = ["train"] * 8 + ["dev", "TEST", "test"]
    ((train, validation, test),) = column_splits(values, "part").folds
    assert validation.tolist() == [8] and test.tolist() == [9, 10] and len(train) == 8
    ((train, validation, test),) = column_splits(["train"] * 10 + ["test"], "part").folds
    assert len(validation) == 1 and len(train) == 9 and not set(train) & set(validation)
    with pytest.raises(SplitError, match="gives no test items"):
        column_splits(["train"] * 5 + ["validation"], "part")
    with pytest.raises(SplitError, match="item 2: split column 'part' holds 'holdout'"):
        column_splits(["train", "test", "holdout"], "part")


def test_one_class_training_part_is_refused():
    splits = column_splits(["train", "train", "test", "test"], "part")
    with pytest.raises(SplitError, match="every training label is 'a'"):
        check_labels_in_splits(splits, np.array(["a", "a", "b", "a"]), "classification")
    check_labels_in_splits(splits, np.array([0.1, 0.1, 0.2, 0.3]), "regression")
