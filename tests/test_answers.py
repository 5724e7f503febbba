"""Answer parsing shared by rewards and eval: letters, spans, segment-union IoU, classes, normal vs abnormal."""

import pytest

from vau_annotate.annotate import answers
from vau_annotate.annotate.classes import parse_taxonomy

def rounded(spans):
    """Spans rounded to 6 decimals (pytest.approx does not take lists of tuples)."""
    return [(round(a, 6), round(b, 6)) for a, b in spans]


OPTIONS = ["A. Robbery", "B. Fighting", "C. Arson", "D. Nothing unusual"]


@pytest.mark.parametrize(
    "text,options,letter",
    [
        ("<think>x</think><answer>B</answer>", None, "B"),
        ("<answer>(C)</answer>", None, "C"),
        ("<answer>D.</answer>", None, "D"),
        ("I pick Option B because they fight", None, "B"),
        ("The answer is (a)", None, "A"),
        ("<answer>Fighting</answer>", OPTIONS, "B"),  # option text, options carrying their prefix
        ("<answer>arson</answer>", ["Robbery", "Fighting", "Arson", "Normal"], "C"),  # plain options
        ("they were clearly fighting in the street", ["Robbery", "Fighting", "Arson", "Normal"], "B"),
        ("<answer>A man falls down</answer>", None, None),  # the article, not option A
        ("<answer>A. a man falls</answer>", None, "A"),  # an explicit "A." is option A
        ("<answer>A man is fighting</answer>", ["A man is fighting", "x", "y", "z"], "A"),
        ("robbery or fighting, hard to say", ["Robbery", "Fighting", "Arson", "Normal"], None),  # two options: ambiguous
        ("", OPTIONS, None),
        (None, OPTIONS, None),
        ("no idea", None, None),
    ],
)
def test_extract_choice(text, options, letter):
    assert answers.extract_choice(text, options) == letter


@pytest.mark.parametrize(
    "text,duration,spans",
    [
        ("[12.5, 30]", 40.0, [(12.5, 30.0)]),
        ("[2s, 7s]", None, [(2.0, 7.0)]),
        ("12.5 to 30 seconds", None, [(12.5, 30.0)]),
        ("(4 - 9)", None, [(4.0, 9.0)]),
        # Vad-R1 <when>: fractions of the video length, converted with the duration
        ("[0.250, 0.600]", 40.0, [(10.0, 24.0)]),
        ("[25%, 60%]", 40.0, [(10.0, 24.0)]),
        # fractions without a duration stay as written
        ("[0.25, 0.6]", None, [(0.25, 0.6)]),
        # seconds unit: not fractions even though below 1
        ("[0.2s, 0.9s]", 40.0, [(0.2, 0.9)]),
        # clock times (VAU-Bench's TAG evaluation accepts HH:MM:SS and MM:SS)
        ("from 1:05 to 1:20", None, [(65.0, 80.0)]),
        ("between 00:01:05.5 and 00:01:20", None, [(65.5, 80.0)]),
        ("[00:00:10, 00:00:20]", 100.0, [(10.0, 20.0)]),
        # several segments
        ("[1, 3] and [5.5s - 8s]", 10.0, [(1.0, 3.0), (5.5, 8.0)]),
        # one second-valued span keeps all numbers as seconds (not every number is ≤ 1)
        ("[0.5, 1] and [3, 4]", 10.0, [(0.5, 1.0), (3.0, 4.0)]),
        # reversed: dropped by default; zero-length dropped
        ("[30, 12]", 40.0, []),
        ("[5, 5]", 40.0, []),
        # clipped to the video, wholly outside dropped
        ("[30, 50]", 40.0, [(30.0, 40.0)]),
        ("[45, 50]", 40.0, []),
        # a bare comma pair is a list, not a span
        ("3, 4 people", None, []),
        ("", 10.0, []),
        (None, 10.0, []),
    ],
)
def test_parse_spans(text, duration, spans):
    assert rounded(answers.parse_spans(text, duration)) == spans


def test_parse_spans_explicit_units_and_reversed_swap():
    assert answers.parse_spans("[30, 12]", 40.0, reversed_spans="swap") == [(12.0, 30.0)]
    assert answers.parse_spans("[0.5, 0.75]", 8.0, unit="seconds") == [(0.5, 0.75)]
    assert answers.parse_spans("[2, 4]", 10.0, unit="fraction") == []  # 20 s..40 s lies outside a 10 s video
    assert rounded(answers.parse_spans("[0.1, 0.2]", 10.0, unit="fraction")) == [(1.0, 2.0)]


def test_answer_spans_reads_the_answer_not_the_reasoning():
    reply = "<think>from 3 to 5 s a man runs</think><answer>Anomaly</answer><glue>[10, 20]</glue>"
    assert answers.answer_spans(reply, 60.0) == [(10.0, 20.0)]
    vad = "<think>x</think><answer><which>Fighting</which><when>[0.100, 0.500]</when></answer>"
    assert rounded(answers.answer_spans(vad, 20.0)) == [(2.0, 10.0)]
    normal = "<answer><which>Normal</which><what>2 to 3 people walk</what><why>routine</why></answer>"
    assert answers.answer_spans(normal, 20.0) == []  # P2C: only <when> holds a span


def test_spans_iou_union_of_segments():
    # |(0,2)∪(4,6) ∩ (1,5)| = 1 + 1 = 2; union = (0,6) = 6
    assert answers.spans_iou([(0, 2), (4, 6)], [(1, 5)]) == pytest.approx(2 / 6)
    # single tuples either side; equals tags.temporal_iou
    assert answers.spans_iou((0, 10), (5, 15)) == pytest.approx(5 / 15)
    # overlapping predicted segments are merged first: (0,4)∪(2,6) = (0,6)
    assert answers.spans_iou([(0, 4), (2, 6)], [(0, 6)]) == pytest.approx(1.0)
    # several true segments: pred (0,10) vs gt (0,2)+(8,10): 4/10
    assert answers.spans_iou([(0, 10)], [(0, 2), (8, 10)]) == pytest.approx(0.4)
    assert answers.spans_iou([], [(1, 2)]) == 0.0
    assert answers.spans_iou([(1, 2)], None) == 0.0
    assert answers.spans_iou([(3, 1)], [(0, 5)]) == 0.0  # inverted ignored


@pytest.mark.parametrize(
    "text,name",
    [
        ("<which>Road accident</which>", "Traffic_accident"),
        ("<answer>The anomaly is fighting.</answer>", "Fighting"),
        ("<answer>Category: Traffic accident</answer>", "Traffic_accident"),
        ("<which>Normal</which>", "Normal"),
        ("a brawl breaks out", "Fighting"),
        ("fighting and then a robbery", None),  # two classes: ambiguous
        ("<which>teleportation</which>", None),
        ("", None),
    ],
)
def test_extract_class(text, name):
    assert answers.extract_class(text) == name


def test_extract_class_with_user_taxonomy():
    tax = parse_taxonomy({"classes": [{"name": "Loitering", "aliases": ["hanging around"]}]}, "test")
    assert answers.extract_class("<answer>someone hanging around</answer>", tax) == "Loitering"
    assert answers.extract_class("<answer>Fighting</answer>", tax) is None


@pytest.mark.parametrize(
    "text,verdict",
    [
        ("<answer><which>Normal</which><what>people walk</what></answer>", False),
        ("<answer><which>Fighting</which></answer>", True),
        ("<which>Abnormal</which>", True),
        ("<answer>No anomaly</answer>", False),
        ("<answer>Anomaly</answer><glue>[1, 2]</glue>", True),
        ("<answer>normal</answer>", False),
        ("<answer>[3, 5]</answer>", True),
        ("<answer>Yes</answer>", True),
        ("<answer>no</answer>", False),
        ("nothing abnormal happens here", False),
        ("the scene is not anomalous", False),
        ("<answer>this is not normal behaviour</answer>", True),
        ("<answer>There is no anomaly; people walk normally</answer>", False),
        ("<answer>without any anomaly</answer>", False),
        ("<answer>An anomaly occurs: a man falls</answer>", True),
        ("<which>None</which>", False),
        ("hmm", None),
        ("", None),
    ],
)
def test_predicts_abnormal(text, verdict):
    assert answers.predicts_abnormal(text) is verdict
