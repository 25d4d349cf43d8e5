"""Metrics against hand-computed cases: confusion matrix, macro scores, ECE, group gaps, UTKFace coarse merge."""
import numpy as np
import pytest

from demoprof_ros.evaluation import coarse, metrics as m
from demoprof_ros.core.taxonomy import RACES

# Hand-computed case. classes a..e; 'c' is never predicted, 'd' is predicted but absent from y_true,
# 'e' occurs in neither (left out of the macro average).
CLASSES = ("a", "b", "c", "d", "e")
Y_TRUE = ["a", "a", "a", "b", "b", "c", "c"]
Y_PRED = ["a", "a", "b", "b", "d", "a", "b"]
MATRIX = [[2, 1, 0, 0, 0],
          [0, 1, 0, 1, 0],
          [1, 1, 0, 0, 0],
          [0, 0, 0, 0, 0],
          [0, 0, 0, 0, 0]]


def test_confusion_matrix_rows_true_columns_predicted():
    np.testing.assert_array_equal(m.confusion_matrix(Y_TRUE, Y_PRED, CLASSES), MATRIX)
    assert m.confusion_matrix([], [], CLASSES).sum() == 0


@pytest.mark.parametrize("y_true,y_pred,classes,match", [
    (["a", "z"], ["a", "a"], CLASSES, "'z'"),
    (["a"], ["q"], CLASSES, "'q'"),
    (["a", "b"], ["a"], CLASSES, "2 labels"),
    (["a"], ["a"], ("a", "a"), "duplicates"),
])
def test_confusion_matrix_rejects_bad_input(y_true, y_pred, classes, match):
    with pytest.raises(ValueError, match=match):
        m.confusion_matrix(y_true, y_pred, classes)


def test_classification_report_hand_computed():
    report = m.classification_report(Y_TRUE, Y_PRED, CLASSES)
    assert report["n"] == 7 and report["accuracy"] == pytest.approx(3 / 7)
    per = report["per_class"]
    expected = {  # precision, recall, f1, support
        "a": (2 / 3, 2 / 3, 2 / 3, 3),
        "b": (1 / 3, 1 / 2, 2 / 5, 2),
        "c": (0.0, 0.0, 0.0, 2),  # never predicted: precision 0 (zero_division)
        "d": (0.0, 0.0, 0.0, 0),  # absent from y_true: recall 0 (zero_division), still in the macro
        "e": (0.0, 0.0, 0.0, 0),
    }
    for cls, (p, r, f, s) in expected.items():
        assert (per[cls]["precision"], per[cls]["recall"], per[cls]["f1"]) == pytest.approx((p, r, f)), cls
        assert per[cls]["support"] == s
    assert report["macro_classes"] == ["a", "b", "c", "d"]
    assert report["macro_precision"] == pytest.approx((2 / 3 + 1 / 3) / 4)
    assert report["macro_recall"] == pytest.approx((2 / 3 + 1 / 2) / 4)
    assert report["macro_f1"] == pytest.approx((2 / 3 + 2 / 5) / 4)
    assert report["confusion_matrix"] == MATRIX


def test_classification_report_zero_division_and_perfect():
    ones = m.classification_report(Y_TRUE, Y_PRED, CLASSES, zero_division=1.0)
    assert ones["per_class"]["c"]["precision"] == 1.0 and ones["per_class"]["d"]["recall"] == 1.0
    assert ones["per_class"]["c"]["f1"] == 0.0  # 2tp/(2tp+fp+fn) has a non-zero denominator
    assert ones["macro_precision"] == pytest.approx((2 / 3 + 1 / 3 + 1.0 + 0.0) / 4)
    perfect = m.classification_report(["x", "y", "y"], ["x", "y", "y"], ("x", "y", "z"))
    assert perfect["accuracy"] == perfect["macro_f1"] == perfect["macro_precision"] == 1.0
    with pytest.raises(ValueError, match="at least one"):
        m.classification_report([], [], CLASSES)


@pytest.mark.parametrize("confidences,correct,n_bins,expected", [
    # bin (0.8, 0.9]: acc 3/4, conf 0.9 -> 4/6 * 0.15; bin (0.5, 0.6]: acc 1/2, conf 0.6 -> 2/6 * 0.1
    ([0.9, 0.9, 0.9, 0.9, 0.6, 0.6], [1, 1, 1, 0, 1, 0], 10, 4 / 6 * 0.15 + 2 / 6 * 0.1),
    ([0.75, 0.75, 0.75, 0.75], [1, 1, 1, 0], 15, 0.0),  # perfectly calibrated
    ([1.0, 1.0], [0, 0], 15, 1.0),
    ([0.0, 0.3], [1, 0], 3, 0.5 - 0.15),  # 0 falls in the first bin (not dropped)
    ([0.2, 0.2000001], [1, 0], 5, 0.5 * 0.8 + 0.5 * 0.2000001),  # bins are right-closed: 0.2 is in (0, 0.2]
])
def test_expected_calibration_error(confidences, correct, n_bins, expected):
    assert m.expected_calibration_error(confidences, correct, n_bins) == pytest.approx(expected)


@pytest.mark.parametrize("confidences,correct", [([], []), ([0.5], [1, 0]), ([1.5], [1]), ([np.nan], [1])])
def test_expected_calibration_error_rejects(confidences, correct):
    with pytest.raises(ValueError):
        m.expected_calibration_error(confidences, correct)


def _record(race, gender, age, pred_gender):
    return {"labels": {"race": race, "gender": gender, "age": age}, "pred": {"gender": pred_gender}}


def test_group_report_gaps_and_left_out_rows():
    records = (
        [_record("White", "Male", "20-29", "Male")] * 10          # White/Male: 10/10
        + [_record("White", "Female", "20-29", "Female")] * 6      # White/Female: 6/10
        + [_record("White", "Female", "30-39", "Male")] * 4
        + [_record("Black", "Female", "30-39", "Male")] * 3        # Black/Female: 0/3, below min_count
        + [_record(None, "Male", "30-39", "Male")] * 2             # unknown race: left out of race/gender
        + [_record("Black", None, "30-39", "Male")]                # no gender label: not scored at all
    )
    report = m.group_report(records, "gender", min_count=5)
    assert report["n"] == 25 and report["unlabelled"] == 1
    by_rg = report["groupings"]["race/gender"]
    assert by_rg["left_out"] == 2
    groups = by_rg["groups"]
    assert set(groups) == {"White/Male", "White/Female", "Black/Female"}
    assert groups["White/Female"]["n"] == 10 and groups["White/Female"]["accuracy"] == pytest.approx(0.6)
    assert groups["Black/Female"]["accuracy"] == 0.0 and not groups["Black/Female"]["in_gap"]
    gap = by_rg["gap"]["accuracy"]
    assert gap == {"gap": pytest.approx(0.4), "best": "White/Male", "worst": "White/Female"}
    # Within White/Female, Male is predicted but absent: macro over {Male, Female} -> (0 + 2*6/(12+4)) / 2.
    assert groups["White/Female"]["macro_f1"] == pytest.approx((0 + 12 / 16) / 2)
    by_age = report["groupings"]["age"]
    assert by_age["groups"]["20-29"]["accuracy"] == pytest.approx(1.0)
    assert by_age["groups"]["30-39"]["accuracy"] == pytest.approx(2 / 9)
    assert by_age["gap"]["accuracy"]["gap"] == pytest.approx(1 - 2 / 9)
    assert m.group_report(records, "gender", min_count=100)["groupings"]["age"]["gap"]["accuracy"] is None


def test_merge_distribution_to_utkface_races():
    vocab = ("White", "Black", "Indian", "Asian", "Others")
    probs = np.zeros((2, len(RACES)))
    probs[0, [RACES.index(c) for c in RACES]] = [0.1, 0.1, 0.2, 0.3, 0.1, 0.1, 0.1]
    probs[1, RACES.index("Middle Eastern")] = 1.0
    merged = coarse.merge_to_coarse(probs, "race", vocab)
    # columns in RACES order: White, Black, Latino, East Asian, Southeast Asian, Indian, Middle Eastern
    np.testing.assert_allclose(merged.values, [[0.1, 0.1, 0.1, 0.4, 0.3], [0, 0, 0, 0, 1]])
    assert merged.kept.all() and merged.n_left_out == 0
    with pytest.raises(ValueError, match="no entry"):
        coarse.merge_to_coarse(probs, "race", ("White", "Black", "Asian"))
    with pytest.raises(ValueError, match="both"):
        coarse.merge_to_coarse(probs, "race", (*RACES, "Asian"))
    with pytest.raises(ValueError, match="N x 7"):
        coarse.merge_to_coarse(probs[:, :5], "race", vocab)


def test_merge_labels_counts_left_out_rows():
    vocab = ("White", "Black", "Indian", "Asian", "Others")
    labels = ["East Asian", "Asian", "Pacific Islander", None, "Middle Eastern", "white", "Martian"]
    merged = coarse.merge_to_coarse(labels, "race", vocab)
    assert merged.values == ["Asian", "Asian", "Others", "White"]
    assert merged.kept.tolist() == [True, True, False, False, True, True, False]
    assert merged.left_out == {"not in taxonomy": 2, "no label": 1} and merged.n_left_out == 3
    fine = coarse.merge_to_coarse(["Asian", "Indian"], "race", RACES)  # a coarse label cannot become a fine class
    assert fine.values == ["Indian"] and fine.n_left_out == 1


def test_coarse_vocab_for_dataset_labels():
    assert coarse.coarse_vocab_for(["White", "Asian", "Others", None], "race") == \
        ("White", "Black", "Indian", "Asian", "Others")
    assert coarse.coarse_vocab_for(["White", "East Asian"], "race") == RACES
    assert coarse.coarse_vocab_for(["Male"], "gender") == ("Male", "Female")


def test_in_vocabulary_merges_probabilities_and_labels_together():
    probs = np.zeros((3, len(RACES)))
    probs[0, RACES.index("Southeast Asian")] = 1.0
    probs[1, RACES.index("Latino_Hispanic")] = 0.6
    probs[1, RACES.index("White")] = 0.4
    probs[2, RACES.index("Black")] = 1.0
    merged = coarse.in_vocabulary(probs, ["Asian", "Others", None], "race")
    assert merged.vocab == ("White", "Black", "Indian", "Asian", "Others")
    assert merged.truth == ["Asian", "Others", None] and merged.kept.tolist() == [True, True, False]
    assert merged.predicted == ["Asian", "Others", "Black"] and merged.left_out == {"no label": 1}
    assert merged.owner["East Asian"] == "Asian" and merged.owner["White"] == "White"
    assert coarse.merge_note("race", merged.vocab) == \
        "East Asian + Southeast Asian -> Asian; Latino_Hispanic + Middle Eastern -> Others"
    fine = coarse.in_vocabulary(probs, ["White", "Indian", "East Asian"], "race")
    assert fine.vocab == RACES and coarse.merge_note("race", fine.vocab) == ""
    np.testing.assert_allclose(fine.probs, probs)


def test_merge_descriptions_sums_the_descriptions_a_coarse_one_covers():
    from demoprof_ros.core.taxonomy import descriptions

    descs = descriptions(("gender", "race"))  # 2 x 7
    joint = np.full((1, len(descs)), 1 / len(descs))
    vocab = ("White", "Black", "Indian", "Asian", "Others")
    owner = {"gender": coarse.owners("gender", ("Male", "Female")), "race": coarse.owners("race", vocab)}
    merged, keys = coarse.merge_descriptions(joint, descs, ("gender", "race"), owner, " | ")
    assert len(keys) == 2 * 5 and keys[0] == "Male | White"
    np.testing.assert_allclose(merged.sum(axis=1), 1.0)
    assert merged[0, keys.index("Female | Asian")] == pytest.approx(2 / 14)
    assert merged[0, keys.index("Female | White")] == pytest.approx(1 / 14)
