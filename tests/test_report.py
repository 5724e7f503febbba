"""`vau-annotate report`: the page's data against the run's own files, and the page itself in a
real headless Chromium (console errors, plots, records, filtering, paging, a screenshot)."""

from __future__ import annotations

import json
import os
import shutil
from collections import Counter
from pathlib import Path

import pytest
from typer.testing import CliRunner

from vau_annotate.cli import app
from vau_annotate.pipelines.report import ReportInputs, collect, render, write_report


def find_chromium() -> str | None:
    """Debian's chromium (`.ci/run` installs it); Playwright's own browser download is unreachable here."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


def test_payload_matches_the_run_files(demo_run: Path) -> None:
    payload = collect(ReportInputs(run=demo_run))
    cot_files = [p for p in (demo_run / "cot").glob("*.json") if not p.name.endswith(".rejected.json")]
    reflect_files = [p for p in (demo_run / "reflect").glob("*.json") if not p.name.endswith(".rejected.json")]
    rejects = [json.loads(line) for line in (demo_run / "rejects.jsonl").read_text().splitlines() if line.strip()]
    kinds = Counter((r["kind"], r["status"] == "rejected") for r in payload["records"])
    assert kinds[("cot", False)] == len(cot_files) > 0
    assert kinds[("reflect", False)] == len(reflect_files) > 0
    assert sum(n for (kind, rejected), n in kinds.items() if rejected) == len(rejects) > 0
    transitions = Counter(json.loads(p.read_text())["transition"] for p in reflect_files)
    assert payload["plots"]["transitions"] == {t: transitions.get(t, 0) for t in ("C→C", "W→C", "W→W", "C→W")}
    rejected_reasons = {r["id"]: r["reason"] for r in payload["records"] if r["status"] == "rejected"}
    assert rejected_reasons == {r["item"]: r["reason"] for r in rejects}
    # The cot gate that rejected an item in the demo is counted under its own name.
    cot_gates = Counter(g for r in rejects if r["stage"] == "cot" for g in r["detail"])
    for gate, n in cot_gates.items():
        assert payload["gates"]["by_gate"]["cot"][gate]["rejected"] == n
    # Every accepted cot record shows its sampled frames as thumbnails with their timestamps.
    cot = [r for r in payload["records"] if r["kind"] == "cot" and r["status"] != "rejected"]
    for record in cot:
        strip = payload["thumbs"][record["frames"]]
        assert [f["t"] for f in strip] == [round(c["t"], 2) for c in record["captions"]]
        assert all(f["src"].startswith("data:image/jpeg;base64,") for f in strip)


def test_page_is_self_contained(demo_run: Path, tmp_path: Path) -> None:
    target = write_report(ReportInputs(run=demo_run), tmp_path / "report.html")
    page = target.read_text()
    assert "<script src" not in page and "<link" not in page
    assert "http://" not in page.replace("http://www.w3.org", "") and "https://" not in page
    assert oct(target.stat().st_mode & 0o777) == "0o644"


def test_cli_report_with_training_and_eval(demo_run: Path, tmp_path: Path) -> None:
    train = tmp_path / "train"
    train.mkdir()
    (train / "log.jsonl").write_text("\n".join(json.dumps({"step": s, "loss": 2.0 / s}) for s in (1, 2, 3)))
    evaluation = tmp_path / "eval"
    evaluation.mkdir()
    (evaluation / "metrics.json").write_text(json.dumps({"qa": {"accuracy": 0.5, "n": 4}}))
    result = CliRunner().invoke(app, ["report", "--run", str(demo_run), "--train", str(train), "--eval", str(evaluation), "--out", str(tmp_path / "r.html")])
    assert result.exit_code == 0, result.output
    data = json.loads(_embedded_json((tmp_path / "r.html").read_text()))
    assert data["train"][0]["series"]["loss"] == [[1, 2.0], [2, 1.0], [3, 2.0 / 3]]
    assert data["eval"][0]["metrics"] == {"qa.accuracy": 0.5, "qa.n": 4}
    missing = CliRunner().invoke(app, ["report", "--run", str(demo_run), "--eval", str(tmp_path / "nope")])
    assert missing.exit_code == 2
    assert "no metrics.json" in missing.output


def _embedded_json(page: str) -> str:
    start = page.index('id="report-data">') + len('id="report-data">')
    return page[start:page.index("</script>", start)]


def screenshot_report(html_path: Path, png_path: Path, chromium: str) -> dict:
    """Open the page in headless Chromium, exercise it, screenshot it; return what was seen."""
    from playwright.sync_api import sync_playwright

    seen: dict = {"console_errors": [], "page_errors": []}
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1300, "height": 1800})
        page.on("console", lambda msg: seen["console_errors"].append(msg.text) if msg.type == "error" else None)
        page.on("pageerror", lambda exc: seen["page_errors"].append(str(exc)))
        page.goto(html_path.resolve().as_uri())
        seen["plots"] = page.locator(".plot svg").count()
        seen["records"] = page.locator("#record-list .record").count()
        seen["page_info"] = page.locator("#pager-top .page-info").inner_text()
        seen["first_id"] = page.locator("#record-list .record").first.get_attribute("data-id")
        page.screenshot(path=str(png_path), full_page=False)
        page.locator("#pager-top .next-page").click()
        seen["page2_info"] = page.locator("#pager-top .page-info").inner_text()
        seen["page2_first_id"] = page.locator("#record-list .record").first.get_attribute("data-id")
        page.select_option("#filter-status", "rejected")
        seen["rejected_shown"] = page.locator("#record-list .record.rejected").count()
        seen["shown_after_filter"] = page.locator("#record-list .record").count()
        page.select_option("#filter-status", "")
        page.select_option("#filter-transition", "W→C")
        seen["wc_shown"] = page.locator("#record-list .record").count()
        browser.close()
    return seen


def test_page_in_headless_chromium(demo_run: Path, tmp_path: Path) -> None:
    chromium = find_chromium()
    if chromium is None:
        pytest.skip("no Chromium on this machine (`apt-get install chromium`; .ci/run installs it)")
    # the demo run holds everything a report shows: its dataset, training logs and eval
    payload = collect(ReportInputs(run=demo_run, dataset=demo_run / "dataset", trains=[demo_run / "train"], evals=[demo_run / "eval"]))
    assert payload["dataset"]["counts"]["grpo_qa"]["test"] == 2 and payload["train"][0]["series"]["loss"]
    assert payload["eval"][0]["metrics"]
    base = payload["records"]
    # Enough records for several pages: the run's own records, repeated under distinct ids.
    payload["records"] = [dict(r, id=f"{r['id']}~{i}") for i in range(4) for r in base]
    html_path = tmp_path / "report.html"
    html_path.write_text(render(payload))
    png = tmp_path / "report.png"
    seen = screenshot_report(html_path, png, chromium)
    assert seen["console_errors"] == [] and seen["page_errors"] == []
    assert seen["plots"] >= 6  # distributions + training curves
    total = len(payload["records"])
    assert seen["records"] == min(25, total)
    assert seen["page_info"] == f"page 1 of {-(-total // 25)} · {total} records"
    assert seen["page2_info"].startswith("page 2 of")
    assert seen["page2_first_id"] == payload["records"][25]["id"] != seen["first_id"]
    n_rejected = sum(r["status"] == "rejected" for r in payload["records"])
    assert seen["rejected_shown"] == seen["shown_after_filter"] == min(25, n_rejected) > 0
    assert seen["wc_shown"] == min(25, sum(r.get("transition") == "W→C" for r in payload["records"]))
    assert png.stat().st_size > 10_000
    if os.environ.get("VAU_REPORT_SCREENSHOT"):
        shutil.copy(png, os.environ["VAU_REPORT_SCREENSHOT"])
