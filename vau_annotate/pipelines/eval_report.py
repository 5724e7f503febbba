"""metrics.json → metrics.md, laid out like the papers' tables so numbers can be set side by side.

- VAU-R1 (Table 2/3): QA Acc w/o think, Acc w/ think; TAG mIoU, R@0.3, R@0.5, R@0.7; CLS accuracy
  (binary and multi-class); VAU-Eval scores.
- Vad-R1 (Table 2): detection Acc / Prec / Rec / F1, grounding mIoU and R@k, BLEU-1..4 /
  METEOR / ROUGE-1/2/L of the reasoning.
- SRVAU-R1 (Table 1/3): initial vs final accuracy and the four transitions.
Accuracies, mIoU and R@k are percentages with one decimal, as the papers print them; a dash means the task was not run.
"""

from __future__ import annotations

from typing import Any


def _pct(value: Any) -> str:
    return "-" if value is None else f"{100 * float(value):.1f}"


def _num(value: Any, digits: int = 2) -> str:
    return "-" if value is None else f"{float(value):.{digits}f}"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines + [""]


def _mode(block: dict[str, Any] | None, mode: str) -> dict[str, Any]:
    return (block or {}).get(mode) or {}


def render_markdown(metrics: dict[str, Any]) -> str:
    model = metrics.get("model", "?")
    lines = [f"# Evaluation of `{model}`", "", f"Data: `{metrics.get('data')}` · items: {metrics.get('items')}", ""]
    lines += _vau_r1(metrics, model)
    lines += _vad_r1(metrics, model)
    lines += _srvau_r1(metrics, model)
    lines += _judges(metrics, model)
    failures = metrics.get("failures") or {}
    if failures:
        lines += ["## Failures", "", *[f"- {k}: {v}" for k, v in failures.items()], ""]
    return "\n".join(lines).rstrip() + "\n"


def _vau_r1(metrics: dict[str, Any], model: str) -> list[str]:
    if not any(k in metrics for k in ("qa", "tag", "cls")):
        return []
    qa, tag, cls = metrics.get("qa"), metrics.get("tag"), metrics.get("cls")
    rows = []
    for mode, label in (("no_think", "w/o think"), ("think", "w/ think")):
        t, c = _mode(tag, mode), _mode(cls, mode)
        if not (_mode(qa, mode) or t or c):
            continue
        rows.append([f"{model} ({label})", _pct(_mode(qa, mode).get("accuracy")), _pct(t.get("miou")), _pct(t.get("r@0.3")),
                     _pct(t.get("r@0.5")), _pct(t.get("r@0.7")), _pct(c.get("binary_accuracy")), _pct(c.get("accuracy"))])
    qa_line = (f"QA: Acc w/o think {_pct(_mode(qa, 'no_think').get('accuracy'))}, Acc w/ think {_pct(_mode(qa, 'think').get('accuracy'))}"
               f" (unparsable: {_mode(qa, 'no_think').get('unparsable', '-')} / {_mode(qa, 'think').get('unparsable', '-')})") if qa else ""
    lines = ["## VAU-R1 (VAU-Bench)", ""]
    lines += _table(["Model", "QA Acc", "TAG mIoU", "R@0.3", "R@0.5", "R@0.7", "CLS Acc (bin)", "CLS Acc (multi)"], rows)
    if qa_line:
        lines += [qa_line, ""]
    for mode, label in (("no_think", "w/o think"), ("think", "w/ think")):
        c = _mode(cls, mode)
        if c.get("macro_f1") is not None:
            lines += [f"CLS {label}: macro F1 {_num(c.get('macro_f1'), 3)}", ""]
    return lines


def _vad_r1(metrics: dict[str, Any], model: str) -> list[str]:
    p2c = metrics.get("p2c")
    if not p2c:
        return []
    d, g, t = p2c.get("detection") or {}, p2c.get("grounding") or {}, p2c.get("text") or {}
    lines = ["## Vad-R1 (Perception-to-Cognition)", ""]
    lines += _table(["Model", "Acc", "Prec", "Rec", "F1", "mIoU", "R@0.3", "R@0.5", "R@0.7"],
                    [[model, _pct(d.get("accuracy")), _pct(d.get("precision")), _pct(d.get("recall")), _pct(d.get("f1")),
                      _pct(g.get("miou")), _pct(g.get("r@0.3")), _pct(g.get("r@0.5")), _pct(g.get("r@0.7"))]])
    if t:
        lines += _text_table(model, t)
    return lines


def _text_table(model: str, t: dict[str, Any]) -> list[str]:
    keys = ["bleu1", "bleu2", "bleu3", "bleu4", "meteor", "rouge1", "rouge2", "rougeL"]
    header = ["Model", "BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "METEOR", "ROUGE-1", "ROUGE-2", "ROUGE-L"]
    return _table(header, [[model, *[_num(t.get(k), 4) for k in keys]]])


def _srvau_r1(metrics: dict[str, Any], model: str) -> list[str]:
    reflect = metrics.get("reflect")
    if not reflect:
        return []
    rows = []
    for name, block in reflect.items():
        rows.append([f"{model} ({name})", _pct(block.get("initial_accuracy")), _pct(block.get("final_accuracy")),
                     *[str(block.get(k, "-")) for k in ("C→C", "W→C", "W→W", "C→W")]])
    return ["## SRVAU-R1 (self-reflection)", ""] + _table(["Model", "Initial Acc", "Final Acc", "C→C", "W→C", "W→W", "C→W"], rows)


def _judges(metrics: dict[str, Any], model: str) -> list[str]:
    lines: list[str] = []
    reasoning = metrics.get("reasoning") or {}
    vau = reasoning.get("vau_eval")
    if vau:
        lines += ["## VAU-Eval (reasoning, judged)", ""]
        lines += _table(["Model", "Classification", "Key matching", "Fluency", "Informativeness", "Factual", "Total", "n", "failed"],
                        [[model, *[_num(vau.get(k)) for k in ("classification_score", "key_matching_score", "fluency_score",
                                                                "informativeness_score", "factual_score", "total_score")],
                          str(vau.get("n")), str(vau.get("failed"))]])
    if reasoning.get("text"):
        lines += ["Reasoning text against the reference:", ""] + _text_table(model, reasoning["text"])
    pair = metrics.get("pairwise")
    if pair:
        opponent = (metrics.get("options") or {}).get("pairwise", "B")
        lines += [f"## Pairwise: `{model}` vs `{opponent}`", ""]
        lines += _table(["Wins", "Ties", "Losses", "Win rate", "Consistent after swap", "Prefers first", "Prefers second", "Failed"],
                        [[str(pair.get("wins")), str(pair.get("ties")), str(pair.get("losses")), _pct(pair.get("win_rate")),
                          f"{pair.get('consistent')}/{pair.get('n')}", str(pair.get("prefers_first")), str(pair.get("prefers_second")),
                          str(pair.get("failed"))]])
    return lines
