"""VAU-Eval reply parsing and the pairwise both-orders rule, on hand-made judge replies."""

from __future__ import annotations

import pytest

from vau_annotate.pipelines.judges import (
    DIMENSIONS, PairVerdict, pairwise_request, pairwise_summary, parse_vau_eval, parse_verdict, vau_eval_repair,
    vau_eval_request, vau_eval_summary,
)

SCORES = '{"classification_score": 8, "key_matching_score": 6, "fluency_score": 9, "informativeness_score": 7, "factual_score": 5, "total_score": 35}'


@pytest.mark.parametrize("reply", [
    f"```json\n{SCORES}\n```",  # VAU-R1's form
    f"```\n{SCORES}\n```",  # fence without a language
    f"Here is my evaluation:\n{SCORES}\nThanks.",  # bare, with text around it
    SCORES.replace(": 8", ': "8"').replace(": 9", ": 9.0"),  # numeric strings and integral floats
])
def test_vau_eval_json_inside_or_outside_fences(reply):
    scores, problem = parse_vau_eval(reply)
    assert problem == ""
    assert scores == {"classification_score": 8, "key_matching_score": 6, "fluency_score": 9, "informativeness_score": 7,
                      "factual_score": 5, "total_score": 35, "stated_total": 35}


def test_fenced_json_wins_over_an_echoed_template():
    echo = SCORES.replace(": 8", ": 1").replace(": 6", ": 1")
    scores, _ = parse_vau_eval(f"You asked for {echo}.\n```json\n{SCORES}\n```")
    assert scores is not None and scores["classification_score"] == 8 and scores["total_score"] == 35


def test_total_is_the_sum_not_the_judges_arithmetic():
    scores, _ = parse_vau_eval(SCORES.replace('"total_score": 35', '"total_score": 50'))
    assert scores["total_score"] == 35 and scores["stated_total"] == 50


@pytest.mark.parametrize("reply, problem", [
    ("", "empty"),
    ("The description is good (8/10).", "no JSON object"),
    ("```json\n{classification_score: 8}\n```", "does not parse"),
    ('{"classification_score": 8, "fluency_score": 9}', "missing scores: key_matching_score, informativeness_score, factual_score"),
    (SCORES.replace(": 8", ": 11"), "classification_score=11"),
    (SCORES.replace(": 6", ": 6.5"), "key_matching_score=6.5"),
    (SCORES.replace(": 5", ": true"), "factual_score=True"),
])
def test_unreadable_vau_eval_replies_say_why(reply, problem):
    scores, why = parse_vau_eval(reply)
    assert scores is None and problem in why


def test_vau_eval_request_and_repair_carry_both_texts():
    request = vau_eval_request("GT-DESC", "GT-ANALYSIS", "MY-DESC", "MY-ANALYSIS")
    system, user = request.messages
    assert system.role == "system" and "expert evaluator for video anomaly detection" in system.parts[0].text
    text = user.parts[0].text
    assert "- Description: GT-DESC\n- Analysis: GT-ANALYSIS" in text and "- Description: MY-DESC\n- Analysis: MY-ANALYSIS" in text
    assert all(d in text for d in DIMENSIONS) and request.prompt_name == "judge_vau_eval"
    repair = vau_eval_repair(request, "not json", "no JSON object in the reply")
    assert [m.role for m in repair.messages] == ["system", "user", "assistant", "user"]
    assert repair.messages[2].parts[0].text == "not json" and "no JSON object in the reply" in repair.messages[3].parts[0].text


def test_vau_eval_summary_means_and_failures():
    a = {"classification_score": 8, "key_matching_score": 6, "fluency_score": 9, "informativeness_score": 7, "factual_score": 5, "total_score": 35}
    b = {"classification_score": 4, "key_matching_score": 4, "fluency_score": 10, "informativeness_score": 2, "factual_score": 0, "total_score": 20}
    summary = vau_eval_summary([a, None, b])
    assert summary == {"n": 2, "failed": 1, "classification_score": 6.0, "key_matching_score": 5.0, "fluency_score": 9.5,
                       "informativeness_score": 4.5, "factual_score": 2.5, "total_score": 27.5}
    assert vau_eval_summary([None])["total_score"] is None


def test_verdict_is_the_last_bracketed_letter():
    assert parse_verdict('Format: "[[A]]" if A is better... My verdict: [[B]]') == "B"
    assert parse_verdict("[[C]]") == "C" and parse_verdict("A is better") is None and parse_verdict(None) is None


@pytest.mark.parametrize("first, second, outcome, consistent", [
    ("A", "B", "win", True),  # preferred as A and as B
    ("B", "A", "loss", True),
    ("C", "C", "tie", True),
    ("A", "A", "tie", False),  # the judge followed the position
    ("B", "B", "tie", False),
    ("A", "C", "tie", False),  # preferred in one order only: MT-Bench counts a tie
    ("A", None, "failed", False),
])
def test_both_orders_rule(first, second, outcome, consistent):
    verdict = PairVerdict(first, second)
    assert verdict.outcome == outcome and verdict.consistent is consistent


def test_pairwise_summary_counts_position_bias():
    verdicts = [PairVerdict("A", "B"), PairVerdict("A", "A"), PairVerdict("A", "A"), PairVerdict("B", "B"), PairVerdict("B", "A"), PairVerdict(None, "A")]
    assert pairwise_summary(verdicts) == {"n": 5, "failed": 1, "wins": 1, "ties": 3, "losses": 1, "win_rate": 0.2, "consistent": 2,
                                          "consistency": 0.4, "prefers_first": 2, "prefers_second": 1}
    assert pairwise_summary([])["win_rate"] is None


def test_pairwise_request_places_the_answers():
    request = pairwise_request("What happens?", "REF", "ANSWER-ONE", "ANSWER-TWO")
    text = request.messages[0].parts[0].text
    assert text.index("ANSWER-ONE") < text.index("[The End of Assistant A's Answer]") < text.index("ANSWER-TWO")
    assert "[Reference Answer]\nREF" in text and '"[[C]]" for a tie' in text
