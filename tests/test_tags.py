"""Tag parsing, spans, IoU and the multiple-choice letter fallbacks."""

import pytest

from vau_annotate.annotate import tags


def test_extract_tag_and_all():
    text = "<think>a</think><answer>B</answer><reflection>r</reflection><think>b</think><answer>C</answer>"
    assert tags.extract_tag(text, "think") == "a"
    assert tags.extract_all(text, "answer") == ["B", "C"]
    assert tags.tag_sequence(text) == ["think", "answer", "reflection", "think", "answer"]
    assert tags.extract_tag(text, "where") is None


def test_tag_sequence_ignores_nested_tags():
    text = "<think><step1>x</step1><step2>y</step2></think>\n<answer><which>Fighting</which></answer>"
    assert tags.tag_sequence(text) == ["think", "answer"]
    assert tags.unbalanced_tags("<think>x</think><answer>y", ("think", "answer")) == ["answer"]
    assert tags.strip_outside("<think>x</think> junk <answer>y</answer>", ("think", "answer")) == "junk"


@pytest.mark.parametrize(
    "text,span",
    [("[1.5, 3]", (1.5, 3.0)), ("from [0.10 - 0.25] of the clip", (0.10, 0.25)), ("[2s, 7s]", (2.0, 7.0)), ("no span", None), ("", None)],
)
def test_parse_span(text, span):
    assert tags.parse_span(text) == span


def test_temporal_iou():
    assert tags.temporal_iou((0, 10), (5, 15)) == pytest.approx(5 / 15)
    assert tags.temporal_iou((0, 1), (2, 3)) == 0.0
    assert tags.temporal_iou((3, 1), (0, 5)) == 0.0
    assert tags.temporal_iou((2, 4), (2, 4)) == 1.0


@pytest.mark.parametrize(
    "text,letter",
    [
        ("<think>...</think><answer>B</answer>", "B"),
        ("<answer>(C) a man falls</answer>", "C"),
        ("<answer>Option D</answer>", "D"),
        ("I think the answer is A because ...", "A"),
        ("The event is (b) clearly", "B"),
        ("A man walks into the shop and nothing happens", None),
        ("", None),
    ],
)
def test_extract_letter(text, letter):
    assert tags.extract_letter(text) == letter


def test_extract_letter_by_option_text():
    options = ["a dog barks", "a car crashes into a pole", "people dance", "it rains"]
    assert tags.extract_letter("<answer>a car crashes into a pole</answer>", options) == "B"
    assert tags.extract_letter("<answer>something else</answer>", options) is None


def test_reflect_is_read_as_reflection():
    """SRVAU-R1's reward section spells the tag <reflect>; its prompts and data <reflection>: both parse."""
    short = "<think>a</think><answer>B</answer><reflect>check 3 s</reflect><think>b</think><answer>C</answer>"
    assert tags.extract_tag(short, "reflection") == "check 3 s" and tags.extract_tag(short, "reflect") == "check 3 s"
    assert tags.tag_sequence(short) == ["think", "answer", "reflection", "think", "answer"]
    assert tags.extract_all("<reflection>x</reflection><reflect>y</reflect>", "reflection") == ["x", "y"]
    assert tags.extract_tag("<reflect>x</reflection>", "reflection") is None  # a spelling must close itself
    assert tags.strip_outside(short, ("think", "answer", "reflection")) == ""
