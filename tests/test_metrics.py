"""Evaluation metrics on hand-computed cases: empty input, unparsable predictions, reversed spans,
all-normal splits, and text metrics with the offline WordNet."""

import pytest

from vau_annotate.annotate import metrics as M


def test_qa_accuracy_counts_unparsable_as_wrong():
    result = M.qa_accuracy(["B", None, "c", "A", ""], ["B", "A", "C", "B", "D"])
    assert result == {"accuracy": pytest.approx(2 / 5), "n": 5, "unparsable": 2}
    assert M.qa_accuracy([], []) == {"accuracy": None, "n": 0, "unparsable": 0}
    with pytest.raises(ValueError, match="2 predictions for 1 answers"):
        M.qa_accuracy(["A", "B"], ["A"])


def test_grounding_metrics_by_hand():
    preds = [[(0.0, 10.0)], [], [(5.0, 15.0), (20.0, 30.0)], [(1.0, 2.0)], [(10.0, 0.0)]]
    gts = [(0.0, 10.0), (0.0, 5.0), (10.0, 25.0), None, (0.0, 10.0)]
    # IoUs: 1.0; 0 (no prediction); |(5,15)∪(20,30) ∩ (10,25)| = 5 + 5 over |(5,30)| = 25 → 0.4;
    # the normal video is excluded; a reversed predicted span is no span → 0.
    result = M.grounding_metrics(preds, gts)
    assert result["n"] == 4
    assert result["miou"] == pytest.approx((1.0 + 0.0 + 0.4 + 0.0) / 4)
    assert result["r@0.3"] == pytest.approx(2 / 4)
    assert result["r@0.5"] == pytest.approx(1 / 4)
    assert result["r@0.7"] == pytest.approx(1 / 4)


def test_grounding_metrics_excludes_normal_and_reversed_truth_and_all_normal_is_undefined():
    # VAU-Bench marks normal videos (0, 0); a reversed true span is unusable: both excluded
    result = M.grounding_metrics([[(1.0, 2.0)], [(0.0, 3.0)], [(2.0, 4.0)]], [(0.0, 0.0), (5.0, 1.0), (2.0, 6.0)])
    assert result["n"] == 1 and result["miou"] == pytest.approx(0.5) and result["r@0.5"] == 1.0 and result["r@0.7"] == 0.0
    all_normal = M.grounding_metrics([[(1.0, 2.0)], []], [None, (0.0, 0.0)])
    assert all_normal == {"miou": None, "r@0.3": None, "r@0.5": None, "r@0.7": None, "n": 0}
    assert set(M.grounding_metrics([], [], thresholds=(0.1,))) == {"miou", "r@0.1", "n"}


def test_classification_metrics_by_hand():
    pred = ["Fighting", "Road accident", None, "Normal", "Robbery"]
    gt = ["Fighting", "Traffic_accident", "Fighting", "Normal", "Normal Videos"]
    result = M.classification_metrics(pred, gt)
    assert result["binary_accuracy"] == pytest.approx(3 / 5)  # 1, 2, 4 right; None wrong; Robbery on a normal video wrong
    assert result["accuracy"] == pytest.approx(3 / 5)  # aliases resolved: Road accident = Traffic_accident
    # F1: Fighting P=1 R=1/2 → 2/3; Normal 2/3; Robbery 0; Traffic_accident 1 → macro 7/12
    assert result["macro_f1"] == pytest.approx(7 / 12)
    assert result["labels"] == ["Fighting", "Normal", "Robbery", "Traffic_accident", "(unparsable)"]
    assert result["confusion"] == [
        [1, 0, 0, 0, 1],
        [0, 1, 1, 0, 0],
        [0, 0, 0, 0, 0],
        [0, 0, 0, 1, 0],
        [0, 0, 0, 0, 0],
    ]
    assert result["n"] == 5 and result["unparsable"] == 1


def test_classification_metrics_all_normal_and_empty():
    result = M.classification_metrics(["Normal", "Normal"], ["Normal", "Normal"])
    assert result["accuracy"] == 1.0 and result["binary_accuracy"] == 1.0 and result["macro_f1"] == 1.0
    assert result["labels"] == ["Normal"] and result["confusion"] == [[2]]
    empty = M.classification_metrics([], [])
    assert empty["accuracy"] is None and empty["macro_f1"] is None and empty["confusion"] == []


def test_detection_metrics_by_hand():
    pred = [True, False, None, True, None, False]
    gt = [True, True, True, False, False, False]
    # tp 1, fp 1, fn 2 (a miss and an unparsable on abnormal videos); right: items 1 and 6
    result = M.detection_metrics(pred, gt)
    assert result["accuracy"] == pytest.approx(2 / 6)
    assert result["precision"] == pytest.approx(1 / 2)
    assert result["recall"] == pytest.approx(1 / 3)
    assert result["f1"] == pytest.approx(2 * (1 / 2) * (1 / 3) / (1 / 2 + 1 / 3))
    assert result["n"] == 6 and result["unparsable"] == 2


def test_detection_metrics_all_normal_split_and_empty():
    # no abnormal video: recall 0/0 and precision 0/1 are 0 (zero_division=0), accuracy still defined
    result = M.detection_metrics([False, True], [False, False])
    assert result == {"accuracy": 0.5, "precision": 0.0, "recall": 0.0, "f1": 0.0, "n": 2, "unparsable": 0}
    assert M.detection_metrics([], [])["accuracy"] is None


def test_reflection_metrics_transitions():
    result = M.reflection_metrics([True, False, False, True, True], [True, True, False, False, True])
    assert result == {"initial_accuracy": pytest.approx(3 / 5), "final_accuracy": pytest.approx(3 / 5),
                      "C→C": 2, "W→C": 1, "W→W": 1, "C→W": 1, "n": 5}
    assert M.reflection_metrics([], [])["initial_accuracy"] is None


def test_text_metrics_individual_bleu_and_rouge_by_hand():
    scores = M.text_scores("The cat sat on the mat.", "the cat sat on a mat")
    # unigrams: the (clipped to 1), cat, sat, on, mat = 5/6; bigrams 3/5; trigrams 2/4; 4-grams 1/3;
    # equal lengths → brevity penalty 1. Individual n-gram BLEU, not cumulative.
    assert scores["bleu1"] == pytest.approx(5 / 6)
    assert scores["bleu2"] == pytest.approx(3 / 5)
    assert scores["bleu3"] == pytest.approx(2 / 4)
    assert scores["bleu4"] == pytest.approx(1 / 3)
    assert scores["rouge1"] == pytest.approx(5 / 6)
    assert scores["rouge2"] == pytest.approx(3 / 5)
    assert scores["rougeL"] == pytest.approx(5 / 6)  # LCS: the cat sat on mat
    # brevity penalty: 3-token hypothesis vs 6-token reference → exp(1 − 6/3) × 3/3
    short = M.text_scores("the cat sat", "the cat sat on a mat")
    assert short["bleu1"] == pytest.approx(2.718281828 ** (1 - 2))
    assert short["rouge1"] == pytest.approx(2 * 1 * 0.5 / 1.5)  # F-measure of P = 1, R = 1/2


def test_meteor_uses_the_offline_wordnet():
    # hyp "a red car" vs ref "a red auto": exact a, red + WordNet synonym car~auto = 3 matches in one
    # chunk → P = R = 1, penalty 0.5·(1/3)^3 → 1 − 1/54. Without WordNet: 2 matches, P = R = 2/3,
    # penalty 0.5·(1/2)^3 → 0.625.
    assert M.text_scores("a red car", "a red auto")["meteor"] == pytest.approx(1 - 1 / 54)
    assert M.text_scores("a red bus", "a red auto")["meteor"] == pytest.approx(0.625)
    assert M.wordnet_reader().synset("car.n.01").lexname() == "noun.artifact"


def test_text_metrics_short_predictions_score_zero_and_means():
    result = M.text_metrics(["the cat sat on the mat", "ok"], ["the cat sat on the mat", "ok"])
    assert result["n"] == 2
    for key in ("bleu1", "bleu2", "bleu3", "bleu4", "rouge1", "rouge2", "rougeL"):
        assert result[key] == pytest.approx(0.5), key  # 1.0 for the identical sentence, 0 for "ok" (< 5 chars)
    # identical 6 tokens: one chunk → (1 − 0.5·(1/6)^3) / 2
    assert result["meteor"] == pytest.approx((1 - 0.5 / 216) / 2)
    assert M.text_scores("car.", "car.") == dict.fromkeys(M.TEXT_KEYS, 0.0)
    assert M.text_scores("", "a reference") == dict.fromkeys(M.TEXT_KEYS, 0.0)
    assert M.text_metrics([], []) == {**dict.fromkeys(M.TEXT_KEYS), "n": 0}


def test_missing_wordnet_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("VAU_WORDNET_DIR", str(tmp_path))
    with pytest.raises(M.WordNetUnavailable, match="apt-get install wordnet-base"):
        M.find_wordnet_dir()
