"""`vau-annotate eval` with the tiny offline Qwen2.5-VL through `hf:` on a small exported split.

The model has random weights, so its replies are noise: the test checks that real local inference
runs through the engine for every item, that each reply is stored, parsed and scored, that the
aggregate metrics agree with the per-item scores, and that a re-run is answered from the ledger.
"""

from __future__ import annotations

import json

import pytest
from eval_fixtures import write_exported
from test_evaluate import dataset_rows

from vau_annotate.pipelines.evaluate import EvalOptions, iter_predictions, run_eval

pytest.importorskip("transformers")


def test_tiny_model_through_hf_on_a_small_split(tiny_model_dir, tmp_path):
    rows = dataset_rows()
    data = write_exported(tmp_path / "ds", {"grpo_qa": rows["grpo_qa"], "grpo_tag": rows["grpo_tag"]})
    options = EvalOptions(data=str(data), model=f"hf:{tiny_model_dir}", out=tmp_path / "eval", tasks=("qa", "tag"), think="off",
                          max_tokens=12, concurrency=4, show_progress=False)
    result = run_eval(options)
    preds = list(iter_predictions(tmp_path / "eval"))
    assert len(preds) == 6 and all(isinstance(p["raw"], str) and p["error"] is None for p in preds)
    assert {p["model"] for p in preds} == {f"hf:{tiny_model_dir}"}
    qa = [p for p in preds if p["task"] == "qa"]
    assert result.metrics["qa"]["no_think"]["n"] == 4
    assert result.metrics["qa"]["no_think"]["accuracy"] == sum(p["scores"]["correct"] for p in qa) / 4
    assert result.metrics["qa"]["no_think"]["unparsable"] == sum(p["prediction"] is None for p in qa)
    tag = [p for p in preds if p["task"] == "tag"]
    assert result.metrics["tag"]["no_think"]["n"] == 2
    assert result.metrics["tag"]["no_think"]["miou"] == pytest.approx(sum(p["scores"]["iou"] for p in tag) / 2, abs=1e-6)
    assert result.metrics["usage"]["model"]["answered"] == 6 and result.summary.exit_code == 0

    again = run_eval(options)
    assert again.metrics["usage"]["model"]["calls"] == 0 and again.metrics["usage"]["model"]["cache_hits"] == 6
    assert json.loads((tmp_path / "eval" / "metrics.json").read_text())["qa"] == result.metrics["qa"]
