"""Every reward of VAU-R1, Vad-R1 and SRVAU-R1 as a pure function `fn(completion, row) -> float`.

`row` is a GRPO row of the exported-row contract (CONTRACT.md): `task` (qa|tag|cls|p2c|reflect),
`answer`, `options`, `span` ([start_s, end_s] or None), `duration`, `label` (normal|abnormal),
`category`, `span_known`, `reflect_task` (qa|tag). Parsing is `annotate/answers.py`, shared with
the evaluator, so a reply is read the same way when rewarded and when scored.

The functions, by paper:

- VAU-R1 (arXiv 2505.23504, §3.2): format (`<think>…</think><answer>…</answer>`; for temporal
  grounding the span in VAU-R1's `<glue>` grounding tag or in `<answer>`), accuracy (choice
  letter, class), temporal IoU.
- Vad-R1 (arXiv 2505.19877, §3.2 / §4.2): the P2C structure (abnormal: `<step1>`…`<step4>` +
  `<which><what><when><where><why><how>`; normal: `<step1><step2>` + `<which><what><why>`),
  `<which>` accuracy, `<when>` IoU, the length reward inside a word band, the AVA
  anomaly-verification reward.
- SRVAU-R1 (arXiv 2602.01004, reward eqs. 2–6): five-part format, task reward (format 0.5 +
  first-answer accuracy 0.5), reflection reward (effectiveness + reflection-tag format 0.25 +
  brevity exp(−|L−T|/(Tmax−T))), total α·task + β·reflection + γ·IoU.

`REWARDS` maps names to functions; `combine` applies weights over a batch; `verl_compute_score`
and `easyr1_compute_score` run the same rewards inside verl and EasyR1.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any, Callable, Mapping, NamedTuple, Sequence

from vau_annotate.annotate.answers import (
    answer_spans,
    extract_choice,
    extract_class,
    predicts_abnormal,
    spans_iou,
)
from vau_annotate.annotate.classes import NORMAL, default_taxonomy
from vau_annotate.annotate.tags import extract_all, extract_tag, strip_outside, tag_sequence, unbalanced_tags

RewardFn = Callable[[str, Mapping[str, Any]], float]

# ---------------------------------------------------------------------------------------------
# row access (Arrow/numpy-tolerant: verl hands lists over as numpy arrays)


def _field(row: Mapping[str, Any], key: str, default: Any = None) -> Any:
    value = row.get(key, default) if row is not None else default
    return default if value is None else value


def row_span(row: Mapping[str, Any]) -> tuple[float, float] | None:
    """The row's true span in seconds, or None when the video is normal or the span unknown."""
    span = row.get("span")
    if span is None or len(span) != 2:
        return None
    if row.get("span_known") is False:
        return None
    start, end = float(span[0]), float(span[1])
    return (start, end) if end > start else None


def row_options(row: Mapping[str, Any]) -> list[str]:
    return [str(o) for o in list(_field(row, "options", []))]


def row_is_abnormal(row: Mapping[str, Any]) -> bool:
    label = str(_field(row, "label", "")).lower()
    if label in ("normal", "abnormal"):
        return label == "abnormal"
    return default_taxonomy().lookup(str(_field(row, "category", ""))) not in (None, NORMAL)


def _duration(row: Mapping[str, Any]) -> float | None:
    value = row.get("duration")
    return float(value) if value is not None and float(value) > 0 else None


def _sub_task(row: Mapping[str, Any]) -> str:
    """The task a reply answers: `reflect` rows carry their inner task in `reflect_task`."""
    task = str(_field(row, "task", "")).lower()
    if task == "reflect":
        return str(_field(row, "reflect_task", "")).lower() or "qa"
    return task


# ---------------------------------------------------------------------------------------------
# format rewards

P2C_ABNORMAL_STEPS = ("step1", "step2", "step3", "step4")
P2C_NORMAL_STEPS = ("step1", "step2")
P2C_ABNORMAL_FIELDS = ("which", "what", "when", "where", "why", "how")
P2C_NORMAL_FIELDS = ("which", "what", "why")
REFLECTION_TAGS = ("reflection", "reflect")


def _top_level(text: str, expected: tuple[str, ...]) -> list[str] | None:
    """Contents of the top-level tags when `text` is exactly `expected` in order (non-empty, nothing
    outside, balanced); None otherwise. A second `<think><answer>` round fails here."""
    if tag_sequence(text) != list(expected) or unbalanced_tags(text, tuple(set(expected))):
        return None
    if strip_outside(text, tuple(dict.fromkeys(expected))):
        return None
    parts = [_top_content(text, tag, i) for i, tag in enumerate(expected)]
    return parts if all(p is not None and p.strip() for p in parts) else None


def _top_content(text: str, tag: str, position: int) -> str | None:
    """Content of the top-level tag at `position` of the sequence (its n-th occurrence of that name)."""
    occurrences = extract_all(text, tag)
    seq = tag_sequence(text)
    index = seq[:position].count(tag)
    return occurrences[index] if index < len(occurrences) else None


def format_vau_r1(completion: str, row: Mapping[str, Any]) -> float:
    """VAU-R1 format: 1.0 for `<think>…</think><answer>…</answer>` and nothing else, else 0.0.

    For temporal grounding (`task` tag) the grounding must be readable too: a span (in VAU-R1's
    `<glue>[s, e]</glue>` grounding tag after the answer, or inside `<answer>`) or an explicit
    normal verdict ("normal", "No anomaly"). Every tag non-empty.
    """
    text = completion or ""
    if _top_level(text, ("think", "answer")) is None and _top_level(text, ("think", "answer", "glue")) is None:
        return 0.0
    if _sub_task(row) != "tag":
        return 1.0
    grounded = answer_spans(text, _duration(row)) or predicts_abnormal(extract_tag(text, "answer")) is False
    return 1.0 if grounded else 0.0


def _ordered_children(block: str, expected: tuple[str, ...]) -> bool:
    """`block` holds exactly the `expected` tags, in order, each non-empty, with nothing between."""
    if tag_sequence(block) != list(expected) or strip_outside(block, expected):
        return False
    return all((extract_tag(block, tag) or "").strip() for tag in expected)


def format_p2c(completion: str, row: Mapping[str, Any]) -> float:
    """Vad-R1 P2C format: 1.0 when the reply has the structure its own verdict calls for.

    Abnormal verdict (`<which>` not Normal): `<think>` holding `<step1>`…`<step4>` then `<answer>`
    holding `<which><what><when><where><why><how>`; normal verdict: `<step1><step2>` and
    `<which><what><why>`. The structure follows the model's own `<which>`, so format does not
    leak correctness (that is `accuracy_which`'s job). `<when>` must hold a span. Else 0.0.
    """
    parts = _top_level(completion or "", ("think", "answer"))
    if parts is None:
        return 0.0
    think, answer = parts
    verdict = predicts_abnormal(f"<which>{extract_tag(answer, 'which') or ''}</which>")
    if verdict is None:
        return 0.0
    steps, fields = (P2C_ABNORMAL_STEPS, P2C_ABNORMAL_FIELDS) if verdict else (P2C_NORMAL_STEPS, P2C_NORMAL_FIELDS)
    if not (_ordered_children(think, steps) and _ordered_children(answer, fields)):
        return 0.0
    if verdict and not answer_spans(f"<when>{extract_tag(answer, 'when')}</when>", _duration(row)):
        return 0.0
    return 1.0


def _reflection_sequence(completion: str) -> list[str]:
    return ["reflection" if tag == "reflect" else tag for tag in tag_sequence(completion or "")]


def format_reflect(completion: str, row: Mapping[str, Any]) -> float:
    """SRVAU-R1 five-part format: `<think><answer><reflection><think><answer>`, nothing else → 1.0.

    `<reflect>` is accepted for `<reflection>` (SRVAU-R1's reflection-tag reward takes either).
    """
    text = completion or ""
    if _reflection_sequence(text) != ["think", "answer", "reflection", "think", "answer"]:
        return 0.0
    if strip_outside(text, ("think", "answer", *REFLECTION_TAGS)):
        return 0.0
    parts = extract_all(text, "think") + extract_all(text, "answer") + [_reflection_text(text) or ""]
    return 1.0 if all(p.strip() for p in parts) else 0.0


# ---------------------------------------------------------------------------------------------
# accuracy rewards


def accuracy_choice(completion: str, row: Mapping[str, Any]) -> float:
    """1.0 when the chosen letter ("B", "(B)", "B.", "Option B", or the option text) is `answer`."""
    truth = str(_field(row, "answer", "")).strip().upper()
    return 1.0 if truth and extract_choice(completion, row_options(row)) == truth else 0.0


def _true_class(row: Mapping[str, Any]) -> str | None:
    tax = default_taxonomy()
    for key in ("answer", "category"):
        name = tax.lookup(str(_field(row, key, "")))
        if name:
            return name
    return None if row_is_abnormal(row) else NORMAL


def accuracy_class(completion: str, row: Mapping[str, Any]) -> float:
    """1.0 when the named class (through the alias table) is the row's class (`answer`/`category`)."""
    truth = _true_class(row)
    return 1.0 if truth is not None and extract_class(completion) == truth else 0.0


def accuracy_which(completion: str, row: Mapping[str, Any]) -> float:
    """Vad-R1 `<which>` accuracy: the class in `<which>` equals the row's category (Normal for normal)."""
    which = extract_tag(completion or "", "which")
    truth = _true_class(row)
    return 1.0 if which is not None and truth is not None and extract_class(f"<which>{which}</which>") == truth else 0.0


def accuracy_binary(completion: str, row: Mapping[str, Any]) -> float:
    """1.0 when the normal-vs-abnormal verdict matches `label`; an unreadable verdict scores 0."""
    verdict = predicts_abnormal(completion)
    return 1.0 if verdict is not None and verdict == row_is_abnormal(row) else 0.0


def accuracy(completion: str, row: Mapping[str, Any]) -> float:
    """Task accuracy: qa → letter, cls → class, p2c → `<which>`, tag → normal-vs-abnormal verdict,
    reflect → its first answer (SRVAU-R1's task reward scores the first answer)."""
    task = str(_field(row, "task", "")).lower()
    if task == "reflect":
        return float(first_answer_correct(completion, row))
    return {"qa": accuracy_choice, "cls": accuracy_class, "p2c": accuracy_which}.get(task, accuracy_binary)(completion, row)


# ---------------------------------------------------------------------------------------------
# temporal IoU


def iou_of(answer_text: str, row: Mapping[str, Any]) -> float:
    """IoU reward of one answer against the row. Rules, in order:

    - normal video: 1.0 for an explicit normal verdict with no span, else 0.0 (a span on a normal
      video is a false alarm; an empty or unreadable reply earns nothing);
    - abnormal video with an unknown span (`span` null / `span_known` false): 0.0 for every reply,
      so the term gives no signal rather than a made-up one;
    - abnormal video with a known span: IoU of the union of the predicted segments (seconds,
      fractions ×duration, or clock times) with the true span; no span → 0.0.
    """
    text = answer_text or ""
    spans = answer_spans(text, _duration(row))
    if not row_is_abnormal(row):
        return 1.0 if not spans and predicts_abnormal(text) is False else 0.0
    truth = row_span(row)
    if truth is None or not spans:
        return 0.0
    return spans_iou(spans, [truth])


def iou(completion: str, row: Mapping[str, Any]) -> float:
    """Temporal IoU of the reply's span (`<when>`, `<glue>` or `<answer>`); for reflection rows the
    final (revised) answer. QA / classification rows score 0.0 (no span is asked)."""
    task = _sub_task(row)
    if task not in ("tag", "p2c"):
        return 0.0
    return iou_of(_final_round(completion) if str(_field(row, "task", "")) == "reflect" else completion, row)


# ---------------------------------------------------------------------------------------------
# SRVAU-R1 reflection rewards (arXiv 2602.01004, eqs. 2–6)

# Effectiveness of the revision, by (first answer correct, final answer correct).
EFFECTIVENESS = {(True, True): 0.25, (False, True): 0.5, (False, False): 0.0, (True, False): -0.25}
REFLECTION_FORMAT_REWARD = 0.25
TAG_CORRECT_IOU = 0.5  # a grounding answer counts as correct at IoU ≥ 0.5 (reflect.py's initial gate)


class ReflectionConfig(NamedTuple):
    """Weights and length targets of the SRVAU-R1 reward; override per run from the GRPO config.

    `target_words` (T) and `max_words` (Tmax) set the brevity term exp(−|L−T|/(Tmax−T)) over a
    length L in words: the reflection's (`length_of="reflection"`) or the whole reply's
    (`"completion"`, as SRPO, arXiv 2506.01713, whose reflection reward SRVAU-R1 adapts, measures
    the response). α, β, γ weigh task, reflection and IoU rewards. (A NamedTuple,
    not a dataclass: verl and EasyR1 import this file by path, some versions without registering
    it in sys.modules, which dataclasses need.)
    """

    alpha: float = 1.0
    beta: float = 1.0
    gamma: float = 1.0
    target_words: int = 64
    max_words: int = 256
    brevity_weight: float = 0.25
    length_of: str = "reflection"


DEFAULT_REFLECTION = ReflectionConfig()


def _reflection_text(completion: str) -> str | None:
    for tag in REFLECTION_TAGS:
        inner = extract_tag(completion or "", tag)
        if inner is not None:
            return inner
    return None


def _rounds(completion: str) -> tuple[str, str]:
    """(first round, final round) of a reflection reply, split at the reflection tag."""
    text = completion or ""
    match = re.search(r"<(?:reflection|reflect)>.*?</(?:reflection|reflect)>", text, re.S | re.I)
    if not match:
        return text, ""
    return text[: match.start()], text[match.end() :]


def _final_round(completion: str) -> str:
    return _rounds(completion)[1]


def _round_correct(round_text: str, row: Mapping[str, Any]) -> bool:
    if extract_tag(round_text, "answer") is None:
        return False
    if _sub_task(row) == "tag":
        if not row_is_abnormal(row):
            return iou_of(round_text, row) == 1.0
        truth = row_span(row)
        return truth is not None and iou_of(round_text, row) >= TAG_CORRECT_IOU
    return accuracy_choice(round_text, row) == 1.0


def first_answer_correct(completion: str, row: Mapping[str, Any]) -> bool:
    return _round_correct(_rounds(completion)[0], row)


def final_answer_correct(completion: str, row: Mapping[str, Any]) -> bool:
    return _round_correct(_final_round(completion), row)


def reflection_effectiveness(completion: str, row: Mapping[str, Any]) -> float:
    """C→C +0.25, W→C +0.5, W→W 0, C→W −0.25 (first vs final answer); no reflection → 0."""
    if _reflection_text(completion) is None:
        return 0.0
    return EFFECTIVENESS[(first_answer_correct(completion, row), final_answer_correct(completion, row))]


def reflection_format(completion: str, row: Mapping[str, Any]) -> float:
    """0.25 when a non-empty `<reflection>` (or `<reflect>`) block is present, else 0."""
    inner = _reflection_text(completion)
    return REFLECTION_FORMAT_REWARD if inner and inner.strip() else 0.0


def brevity(length: int, target: int, maximum: int) -> float:
    """exp(−|L−T|/(Tmax−T)): 1 at the target length, decaying with the distance from it."""
    if maximum <= target:
        raise ValueError(f"max_words ({maximum}) must exceed target_words ({target})")
    return math.exp(-abs(length - target) / (maximum - target))


def reflection_brevity(completion: str, row: Mapping[str, Any], config: ReflectionConfig = DEFAULT_REFLECTION) -> float:
    """The brevity term over the reflection's (or the whole reply's) word count; 0 without a reflection."""
    inner = _reflection_text(completion)
    if not inner or not inner.strip():
        return 0.0
    if config.length_of not in ("reflection", "completion"):
        raise ValueError(f"length_of must be 'reflection' or 'completion', not {config.length_of!r}")
    measured = inner if config.length_of == "reflection" else re.sub(r"<[^>]+>", " ", completion)
    return brevity(len(measured.split()), config.target_words, config.max_words)


def reflection(completion: str, row: Mapping[str, Any], config: ReflectionConfig = DEFAULT_REFLECTION) -> float:
    """SRVAU-R1 reflection reward: effectiveness + tag format + brevity_weight·brevity."""
    return (
        reflection_effectiveness(completion, row)
        + reflection_format(completion, row)
        + config.brevity_weight * reflection_brevity(completion, row, config)
    )


def srvau_task(completion: str, row: Mapping[str, Any]) -> float:
    """SRVAU-R1 task reward: 0.5·five-part format + 0.5·first-answer accuracy."""
    return 0.5 * format_reflect(completion, row) + 0.5 * float(first_answer_correct(completion, row))


def srvau_total(completion: str, row: Mapping[str, Any], config: ReflectionConfig = DEFAULT_REFLECTION) -> float:
    """α·task + β·reflection + γ·IoU (IoU of the final answer; 0 for QA rows)."""
    return config.alpha * srvau_task(completion, row) + config.beta * reflection(completion, row, config) + config.gamma * iou(completion, row)


# ---------------------------------------------------------------------------------------------
# Vad-R1 length and anomaly-verification rewards

LENGTH_BANDS = {"normal": (140, 261), "abnormal": (233, 456)}


def reasoning_words(completion: str) -> int:
    """Words of the reasoning (`<think>` content; the whole reply when there is none)."""
    think = extract_tag(completion or "", "think")
    body = think if think is not None else (completion or "")
    return len(re.sub(r"<[^>]+>", " ", body).split())


def length_vad(completion: str, row: Mapping[str, Any], bands: Mapping[str, tuple[int, int]] = LENGTH_BANDS) -> float:
    """Vad-R1 length reward: 1.0 when the reasoning's word count lies in the band of the video's
    label (normal 140–261, abnormal 233–456 words by default, bounds inclusive), else 0.0."""
    low, high = bands["abnormal" if row_is_abnormal(row) else "normal"]
    return 1.0 if low <= reasoning_words(completion) <= high else 0.0


AVA_CONFIRMED = 0.5
AVA_CONTRADICTED = -0.2


def anomaly_verification(first_completion: str, trimmed_completion: str) -> float:
    """Vad-R1 AVA reward from the first answer and the answer on the trimmed video.

    The GRPO loop trims the video: when the first answer says abnormal it cuts the predicted
    span out; when it says normal it cuts a random part. Either way the trimmed video should read
    as normal if the first answer was right about where (or whether) the anomaly is, so a normal
    verdict on the trimmed video confirms (+0.5) and an abnormal one contradicts (−0.2). An
    unreadable first or second verdict gives 0 (nothing to verify).
    """
    first, trimmed = predicts_abnormal(first_completion), predicts_abnormal(trimmed_completion)
    if first is None or trimmed is None:
        return 0.0
    return AVA_CONFIRMED if trimmed is False else AVA_CONTRADICTED


def ava(completion: str, row: Mapping[str, Any]) -> float:
    """`anomaly_verification` with the trimmed video's reply the GRPO loop stores in the row as
    `trimmed_completion`; 0.0 when it has not run (no trimmed reply)."""
    trimmed = row.get("trimmed_completion")
    return anomaly_verification(completion, trimmed) if trimmed else 0.0


# ---------------------------------------------------------------------------------------------
# registry and weighting

REWARDS: dict[str, RewardFn] = {
    "format_vau_r1": format_vau_r1,
    "format_p2c": format_p2c,
    "format_reflect": format_reflect,
    "accuracy": accuracy,
    "accuracy_choice": accuracy_choice,
    "accuracy_class": accuracy_class,
    "accuracy_which": accuracy_which,
    "accuracy_binary": accuracy_binary,
    "iou": iou,
    "length_vad": length_vad,
    "ava": ava,
    "reflection": reflection,
    "reflection_effectiveness": reflection_effectiveness,
    "reflection_format": reflection_format,
    "reflection_brevity": reflection_brevity,
    "srvau_task": srvau_task,
    "srvau_total": srvau_total,
}

# Each paper's rewards per task, equal weights (VAU-R1 and Vad-R1 sum their rewards).
DEFAULT_WEIGHTS: dict[str, dict[str, float]] = {
    "qa": {"format_vau_r1": 1.0, "accuracy_choice": 1.0},
    "cls": {"format_vau_r1": 1.0, "accuracy_class": 1.0},
    "tag": {"format_vau_r1": 1.0, "iou": 1.0},
    "p2c": {"format_p2c": 1.0, "accuracy_which": 1.0, "iou": 1.0, "length_vad": 1.0, "ava": 1.0},
    "reflect": {"srvau_total": 1.0},
}


def default_weights(task: str) -> dict[str, float]:
    try:
        return dict(DEFAULT_WEIGHTS[task])
    except KeyError:
        raise ValueError(f"no default rewards for task {task!r}; known: {', '.join(DEFAULT_WEIGHTS)}") from None


def resolve(names: Sequence[str]) -> dict[str, RewardFn]:
    """Reward functions by name; unknown names fail with the list of known ones."""
    unknown = [n for n in names if n not in REWARDS]
    if unknown:
        raise KeyError(f"unknown reward(s) {', '.join(unknown)}; known: {', '.join(REWARDS)}")
    return {n: REWARDS[n] for n in names}


def combine(
    completions: Sequence[str], rows: Sequence[Mapping[str, Any]], weights: Mapping[str, float] | None = None
) -> tuple[list[float], dict[str, list[float]]]:
    """Weighted sum of rewards per completion, plus each component's raw values.

    `weights` maps reward names to weights; None takes each row's task defaults (`DEFAULT_WEIGHTS`),
    a component absent from a row's defaults then counting 0 for that row.
    """
    if len(completions) != len(rows):
        raise ValueError(f"{len(completions)} completions for {len(rows)} rows")
    per_row_weights = [dict(weights) if weights is not None else default_weights(str(_field(r, "task", ""))) for r in rows]
    names = list(dict.fromkeys(n for w in per_row_weights for n in w))
    functions = resolve(names)
    components: dict[str, list[float]] = {n: [] for n in names}
    totals: list[float] = []
    for completion, row, row_weights in zip(completions, rows, per_row_weights):
        total = 0.0
        for name in names:
            value = float(functions[name](completion, row)) if name in row_weights else 0.0
            components[name].append(value)
            total += row_weights.get(name, 0.0) * value
        totals.append(total)
    return totals, components


# ---------------------------------------------------------------------------------------------
# other engines: verl and EasyR1


def solution_row(ground_truth: Any, extra_info: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The solution columns from verl's `reward_model.ground_truth` (a dict or its JSON text),
    with `extra_info` filling in keys the ground truth lacks."""
    row: dict[str, Any] = dict(extra_info or {})
    if isinstance(ground_truth, (bytes, bytearray)):
        ground_truth = ground_truth.decode("utf-8")
    if isinstance(ground_truth, str):
        try:
            ground_truth = json.loads(ground_truth)
        except json.JSONDecodeError:
            raise ValueError(f"ground_truth is neither a dict nor JSON of the solution columns: {ground_truth[:80]!r}") from None
    if not isinstance(ground_truth, Mapping):
        raise ValueError(f"ground_truth must be a dict of solution columns, got {type(ground_truth).__name__}")
    row.update(ground_truth)
    if "task" not in row:
        raise ValueError("ground_truth has no 'task' column (qa|tag|cls|p2c|reflect)")
    return row


def verl_compute_score(data_source: str, solution_str: str, ground_truth: Any, extra_info: Mapping[str, Any] | None = None, **_: Any) -> dict[str, float]:
    """verl `custom_reward_function`: called by verl's reward manager as
    `compute_score(data_source=…, solution_str=…, ground_truth=…, extra_info=…)`.

    Returns `{"score": total, <component>: value, …}` (verl takes `score` as the reward and logs the
    rest). Weights: the row's task defaults, or `extra_info["reward_weights"]` when given.
    """
    row = solution_row(ground_truth, extra_info)
    weights = row.get("reward_weights") or None
    totals, components = combine([solution_str or ""], [row], weights)
    # verl collects every returned key into per-batch lists: the same keys for every row, so a
    # batch mixing tasks keeps its lists aligned (components a task does not use read 0.0).
    fixed = {name: 0.0 for name in dict.fromkeys(n for table in DEFAULT_WEIGHTS.values() for n in table)}
    return {"score": totals[0], **fixed, **{name: values[0] for name, values in components.items()}}


_FORMAT_OF = {"qa": format_vau_r1, "cls": format_vau_r1, "tag": format_vau_r1, "p2c": format_p2c, "reflect": format_reflect}


def _easyr1_one(response: str, ground_truth: Any) -> dict[str, float]:
    row = solution_row(ground_truth)
    task = str(row["task"])
    totals, _ = combine([response or ""], [row], row.get("reward_weights") or None)
    accuracy_value = iou(response, row) if task == "tag" else accuracy(response, row)
    return {"overall": totals[0], "format": _FORMAT_OF.get(task, format_vau_r1)(response, row), "accuracy": accuracy_value}


def easyr1_compute_score(reward_inputs: Any, ground_truth: Any = None, **_: Any) -> Any:
    """EasyR1 reward function returning `{overall, format, accuracy}`.

    Accepts EasyR1's batch call (a list of `{"response", "ground_truth", …}` dicts → a list of
    score dicts), its sequential call (one such dict → one score dict), and the older
    `compute_score(predict_str, ground_truth)` form. `ground_truth` is the row's `answer` column
    as the export writes it for EasyR1: JSON of the solution columns.
    """
    if isinstance(reward_inputs, str):
        return _easyr1_one(reward_inputs, ground_truth)
    if isinstance(reward_inputs, Mapping):
        return _easyr1_one(str(reward_inputs.get("response", "")), reward_inputs["ground_truth"])
    return [_easyr1_one(str(item.get("response", "")), item["ground_truth"]) for item in reward_inputs]
