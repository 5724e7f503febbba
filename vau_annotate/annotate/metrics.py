"""The evaluation metrics of VAU-R1, Vad-R1 and SRVAU-R1 as pure functions over parsed predictions.

The evaluator parses replies with `annotate/answers.py` (as the GRPO rewards do) and hands the
parsed values here, so every number in `metrics.json` comes from a function tested on
hand-computed cases. Conventions, the same in every function:

- a metric over zero items is `None` (undefined), never 0 or 1 (e.g. mIoU on an all-normal split);
- an unparsable prediction (`None`) is a wrong prediction and is counted (`unparsable`);
- a ratio with a zero denominator inside a defined metric is 0.0 (scikit-learn's
  `zero_division=0`), e.g. precision when nothing is predicted abnormal;
- rates are fractions in [0, 1]; the papers' tables print them ×100.

Text metrics need nltk (BLEU, METEOR) and rouge-score; METEOR's synonym stage needs WordNet, read
offline from Debian's `wordnet-base` files (`/usr/share/wordnet`) or from `$VAU_WORDNET_DIR`, never
downloaded.
"""

from __future__ import annotations

import io
import os
import re
import warnings
from collections import Counter
from functools import lru_cache
from pathlib import Path
from typing import Any, Sequence

from vau_annotate.annotate.answers import Span, spans_iou
from vau_annotate.annotate.classes import NORMAL, default_taxonomy

UNPARSABLE = "(unparsable)"


def _same_length(name_a: str, a: Sequence[Any], name_b: str, b: Sequence[Any]) -> None:
    if len(a) != len(b):
        raise ValueError(f"{len(a)} {name_a} for {len(b)} {name_b}")


def _ratio(num: float, den: float) -> float:
    return num / den if den else 0.0


# ---------------------------------------------------------------------------------------------
# multiple-choice QA (VAU-R1 Table 2: "Acc w/o think", "Acc w/ think" are two calls of this)


def qa_accuracy(predictions: list[str | None], answers: list[str]) -> dict:
    """{accuracy, n, unparsable}: share of predicted letters equal to the answer letters.

    Predictions are letters already extracted (`answers.extract_choice`); None or "" is an
    unparsable reply, counted wrong and reported in `unparsable`.
    """
    _same_length("predictions", predictions, "answers", answers)
    unparsable = sum(1 for p in predictions if not (p or "").strip())
    correct = sum(1 for p, a in zip(predictions, answers) if (p or "").strip() and p.strip().upper() == str(a).strip().upper())
    n = len(answers)
    return {"accuracy": correct / n if n else None, "n": n, "unparsable": unparsable}


# ---------------------------------------------------------------------------------------------
# temporal grounding (VAU-R1 Table 3: mIoU, R@0.3/0.5/0.7 on abnormal videos)


def _is_abnormal_span(span: Any) -> bool:
    """A true span that counts: not None, not VAU-Bench's (0, 0) normal marker, not empty/reversed."""
    return span is not None and len(span) == 2 and float(span[1]) > float(span[0])


def grounding_metrics(
    pred_spans: list[list[Span]], gt_spans: list[Span | None], thresholds: Sequence[float] = (0.3, 0.5, 0.7)
) -> dict:
    """{miou, "r@0.3", "r@0.5", "r@0.7", n} over the videos with a true span.

    Normal videos (true span None or (0, 0), VAU-Bench's marker) and unusable true spans (end ≤
    start) are excluded, as VAU-R1's evaluation does; `n` counts the videos scored. A video's IoU
    is that of the union of its predicted segments (`answers.spans_iou`): no prediction → 0.
    R@k counts IoU ≥ k. All metrics None when no video has a true span.
    """
    _same_length("predictions", pred_spans, "ground truths", gt_spans)
    ious = [spans_iou(list(pred or []), [tuple(gt)]) for pred, gt in zip(pred_spans, gt_spans) if _is_abnormal_span(gt)]
    n = len(ious)
    out: dict[str, Any] = {"miou": sum(ious) / n if n else None}
    for k in thresholds:
        out[f"r@{k:g}"] = sum(1 for v in ious if v >= k) / n if n else None
    out["n"] = n
    return out


# ---------------------------------------------------------------------------------------------
# classification (VAU-R1: normal-vs-abnormal accuracy, 20-class accuracy; + macro F1, confusion)


def _canonical(name: str | None) -> str | None:
    if name is None or not str(name).strip():
        return None
    return default_taxonomy().lookup(str(name)) or str(name).strip()


def classification_metrics(pred: list[str | None], gt: list[str]) -> dict:
    """{binary_accuracy, accuracy, macro_f1, confusion, labels, n, unparsable}.

    Names are mapped through the alias table first. `binary_accuracy`: normal-vs-abnormal right
    (an unparsable prediction is wrong); `accuracy`: exact class; `macro_f1`: mean F1 over the
    classes that occur in the truth or the predictions (scikit-learn's `f1_score(average="macro")`
    with zero_division=0). `confusion[i][j]` counts truth `labels[i]` predicted as `labels[j]`;
    when some predictions are unparsable, a last label "(unparsable)" collects them (it takes
    no part in macro F1 other than as a miss of the true class).
    """
    _same_length("predictions", pred, "ground truths", gt)
    truth = [_canonical(g) or UNPARSABLE for g in gt]
    guess = [_canonical(p) for p in pred]
    n = len(truth)
    unparsable = sum(1 for p in guess if p is None)
    binary = sum(1 for p, t in zip(guess, truth) if p is not None and (p == NORMAL) == (t == NORMAL))
    exact = sum(1 for p, t in zip(guess, truth) if p == t)
    classes = sorted(set(truth) | {p for p in guess if p is not None})
    labels = classes + ([UNPARSABLE] if unparsable and UNPARSABLE not in classes else [])
    index = {label: i for i, label in enumerate(labels)}
    confusion = [[0] * len(labels) for _ in labels]
    for p, t in zip(guess, truth):
        confusion[index[t]][index[p if p is not None else UNPARSABLE]] += 1
    f1s = []
    for label in classes:
        tp = sum(1 for p, t in zip(guess, truth) if p == label and t == label)
        predicted = sum(1 for p in guess if p == label)
        actual = sum(1 for t in truth if t == label)
        precision, recall = _ratio(tp, predicted), _ratio(tp, actual)
        f1s.append(_ratio(2 * precision * recall, precision + recall))
    return {
        "binary_accuracy": binary / n if n else None,
        "accuracy": exact / n if n else None,
        "macro_f1": sum(f1s) / len(f1s) if n and f1s else None,
        "confusion": confusion,
        "labels": labels,
        "n": n,
        "unparsable": unparsable,
    }


# ---------------------------------------------------------------------------------------------
# anomaly detection (Vad-R1 Table: accuracy, precision, recall, F1 from <which>; abnormal = positive)


def detection_metrics(pred_abnormal: list[bool | None], gt_abnormal: list[bool]) -> dict:
    """{accuracy, precision, recall, f1, n, unparsable} with abnormal as the positive class.

    An unparsable verdict (None) is wrong for accuracy and is not a positive prediction: on an
    abnormal video it is a miss (lowers recall), on a normal one it lowers accuracy only.
    """
    _same_length("predictions", pred_abnormal, "ground truths", gt_abnormal)
    n = len(gt_abnormal)
    tp = sum(1 for p, t in zip(pred_abnormal, gt_abnormal) if p is True and t)
    fp = sum(1 for p, t in zip(pred_abnormal, gt_abnormal) if p is True and not t)
    fn = sum(1 for p, t in zip(pred_abnormal, gt_abnormal) if p is not True and t)
    correct = sum(1 for p, t in zip(pred_abnormal, gt_abnormal) if p is not None and bool(p) == bool(t))
    precision, recall = _ratio(tp, tp + fp), _ratio(tp, tp + fn)
    return {
        "accuracy": correct / n if n else None,
        "precision": precision if n else None,
        "recall": recall if n else None,
        "f1": _ratio(2 * precision * recall, precision + recall) if n else None,
        "n": n,
        "unparsable": sum(1 for p in pred_abnormal if p is None),
    }


# ---------------------------------------------------------------------------------------------
# reflection (SRVAU-R1: initial vs final accuracy and the transitions)


def reflection_metrics(initial_correct: list[bool], final_correct: list[bool]) -> dict:
    """{initial_accuracy, final_accuracy, "C→C", "W→C", "W→W", "C→W", n}: accuracies before and
    after reflection and how many answers stayed right, were corrected, stayed wrong, were broken."""
    _same_length("initial", initial_correct, "final", final_correct)
    n = len(initial_correct)
    pairs = Counter((bool(a), bool(b)) for a, b in zip(initial_correct, final_correct))
    return {
        "initial_accuracy": sum(map(bool, initial_correct)) / n if n else None,
        "final_accuracy": sum(map(bool, final_correct)) / n if n else None,
        "C→C": pairs[(True, True)],
        "W→C": pairs[(False, True)],
        "W→W": pairs[(False, False)],
        "C→W": pairs[(True, False)],
        "n": n,
    }


# ---------------------------------------------------------------------------------------------
# reasoning text (Vad-R1: BLEU-1..4, METEOR, ROUGE-1/2/L)

MIN_PREDICTION_CHARS = 5
_TOKEN = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")

# WordNet 3.0's lexicographer file names (its `lexnames` file, which Debian's wordnet-base omits;
# `lexnames(5WN)` lists them). Index = position.
_LEXNAMES = (
    "adj.all adj.pert adv.all noun.Tops noun.act noun.animal noun.artifact noun.attribute noun.body "
    "noun.cognition noun.communication noun.event noun.feeling noun.food noun.group noun.location "
    "noun.motive noun.object noun.person noun.phenomenon noun.plant noun.possession noun.process "
    "noun.quantity noun.relation noun.shape noun.state noun.substance noun.time verb.body verb.change "
    "verb.cognition verb.communication verb.competition verb.consumption verb.contact verb.creation "
    "verb.emotion verb.motion verb.perception verb.possession verb.social verb.stative verb.weather adj.ppl"
).split()
WORDNET_DIRS = ("/usr/share/wordnet",)


class WordNetUnavailable(RuntimeError):
    """METEOR needs WordNet and none was found on disk (it is never downloaded at run time)."""


def tokens(text: str) -> list[str]:
    """Lower-case word tokens (letters, digits, inner apostrophes); punctuation dropped."""
    return _TOKEN.findall((text or "").lower())


def find_wordnet_dir() -> Path:
    """`$VAU_WORDNET_DIR`, else Debian's `/usr/share/wordnet`: a folder of WordNet 3.0 db files."""
    candidates = [os.environ["VAU_WORDNET_DIR"]] if os.environ.get("VAU_WORDNET_DIR") else list(WORDNET_DIRS)
    for candidate in candidates:
        path = Path(candidate)
        if (path / "data.noun").is_file() and (path / "index.noun").is_file():
            return path
    raise WordNetUnavailable(
        f"METEOR needs the WordNet 3.0 database and none was found in {', '.join(candidates)}: "
        "install Debian's `wordnet-base` (apt-get install wordnet-base) or point VAU_WORDNET_DIR "
        "at a folder holding data.noun, index.noun, … (nltk's corpora/wordnet works too)"
    )


@lru_cache(maxsize=1)
def wordnet_reader() -> Any:
    """An nltk WordNetCorpusReader over the offline WordNet files (loaded once per process)."""
    import nltk
    from nltk.corpus.reader.wordnet import WordNetCorpusReader

    root = find_wordnet_dir()

    class OfflineWordNet(WordNetCorpusReader):
        """WordNet 3.0 from plain db files: `lexnames` supplied from memory when the folder lacks
        it, and no version mapping (3.0 is the version nltk maps others to, and the mapping would
        look for nltk's downloaded corpus)."""

        def open(self, fileid: str):  # type: ignore[override]
            if fileid == "lexnames" and not (root / "lexnames").is_file():
                return io.StringIO("".join(f"{i:02d}\t{name}\t0\n" for i, name in enumerate(_LEXNAMES)))
            return super().open(fileid)

        def map_wn(self, version: str = "wordnet") -> None:  # type: ignore[override]
            return None

    if str(root) not in nltk.data.path:
        nltk.data.path.append(str(root))  # nltk only opens corpus files under its data path
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "multilingual functions are not available": not needed
        return OfflineWordNet(str(root), None)


def _bleu_individual(ref: list[str], hyp: list[str], n: int) -> float:
    """Individual BLEU-n: brevity penalty × modified n-gram precision of order n (nltk's parts;
    `sentence_bleu` with one-hot weights returns a tiny positive number instead of 0 on no overlap)."""
    from nltk.translate.bleu_score import brevity_penalty, closest_ref_length, modified_precision

    precision = modified_precision([ref], hyp, n)
    if precision.numerator == 0:
        return 0.0
    return float(brevity_penalty(closest_ref_length([ref], len(hyp)), len(hyp)) * precision)


@lru_cache(maxsize=1)
def _rouge() -> Any:
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)


TEXT_KEYS = ("bleu1", "bleu2", "bleu3", "bleu4", "meteor", "rouge1", "rouge2", "rougeL")


def text_scores(prediction: str, reference: str) -> dict[str, float]:
    """One prediction's scores; all 0 when it is under 5 characters (Vad-R1's rule)."""
    if len((prediction or "").strip()) < MIN_PREDICTION_CHARS:
        return {key: 0.0 for key in TEXT_KEYS}
    from nltk.translate.meteor_score import meteor_score

    hyp, ref = tokens(prediction), tokens(reference)
    scores = {f"bleu{n}": _bleu_individual(ref, hyp, n) if hyp and ref else 0.0 for n in range(1, 5)}
    scores["meteor"] = float(meteor_score([ref], hyp, wordnet=wordnet_reader())) if hyp and ref else 0.0
    rouge = _rouge().score(reference or "", prediction)
    scores.update({key: float(rouge[key].fmeasure) for key in ("rouge1", "rouge2", "rougeL")})
    return scores


def text_metrics(predictions: list[str], references: list[str]) -> dict:
    """{bleu1..bleu4, meteor, rouge1, rouge2, rougeL, n}: means of per-item scores.

    BLEU-n is the *individual* n-gram score (weights on n-grams of order n only, with the brevity
    penalty), as Vad-R1 reports it, not the cumulative geometric mean; nltk's modified precision
    and brevity penalty, no smoothing. METEOR: nltk's `meteor_score` (exact, Porter stem and WordNet synonym matches)
    with the offline WordNet. ROUGE-1/2/L: rouge-score F-measure with its Porter stemmer.
    Tokens are lower-case words, punctuation dropped. Predictions under 5 characters score 0 on
    every metric. All None for empty input.
    """
    _same_length("predictions", predictions, "references", references)
    n = len(predictions)
    if not n:
        return {**{key: None for key in TEXT_KEYS}, "n": 0}
    totals = dict.fromkeys(TEXT_KEYS, 0.0)
    for prediction, reference in zip(predictions, references):
        for key, value in text_scores(prediction, reference).items():
            totals[key] += value
    return {**{key: totals[key] / n for key in TEXT_KEYS}, "n": n}
