"""Text, markdown and JSON carry the same content: timeline, last values, headline, figure."""

import json

import pytest

from lightning_convergence.readback import load_runs
from lightning_convergence.readback.formats import render
from lightning_convergence.readback.run import NOT_WATCHED


@pytest.fixture
def runs(runs_dir):
    return load_runs(str(runs_dir))


def _plots(runs):
    return {run.path: f"/figures/{run.name}.png" for run in runs}


def test_text_has_a_row_per_record_and_the_headline(runs):
    watched, unwatched = runs
    text = render(runs, _plots(runs), "text")
    report = watched.report
    assert f"Timeline: {len(report['diagnoses'])} diagnos" in text
    for d in report["diagnoses"]:
        assert any(line.lstrip().startswith(f"{d['step']}  {d['severity'].upper()}") and d["kind"] in line
                   for line in text.splitlines())
    for i in report["interventions"]:
        assert any(line.lstrip().startswith(f"{i['step']}  {i['action']}") for line in text.splitlines())
    assert f"Summary: {report['summary']['headline']}" in text
    top = report["summary"]["causes"][0]
    assert f"Likely causes: {top['cause']} (" in text
    assert any(d["causes"] and d["causes"][0]["cause"] in line and d["kind"] in line
               for d in report["diagnoses"] for line in text.splitlines())
    assert f"== {unwatched.name}" in text and NOT_WATCHED in text
    assert "Plot: /figures/with_suite/version_0.png" in text and "Last values: train_loss" in text


def test_markdown_tables(runs):
    text = render(runs, _plots(runs), "markdown")
    rows = [line for line in text.splitlines() if line.startswith("| ") and "CRITICAL" in line]
    assert rows and all(line.count(" | ") == 5 for line in rows)
    assert "| step | severity/action | kind / source | layer | likely cause | what |" in text
    assert "**Likely causes:** " in text
    assert f"**{NOT_WATCHED}**" in text and "![with_suite/version_0](/figures/with_suite/version_0.png)" in text


def test_markdown_escapes_pipes():
    from lightning_convergence.readback import Run

    report = {"diagnoses": [{"kind": "plateau", "severity": "info", "step": 1, "message": "a | b."}],
              "interventions": [], "summary": {"headline": "h"}}
    assert "a \\| b." in render([Run("/r", "r", report, {})], {}, "markdown")


def test_json_is_the_report_plus_the_timeline(runs):
    document = json.loads(render(runs, _plots(runs), "json"))
    watched, unwatched = document["runs"]
    report = runs[0].report
    assert watched["diagnoses"] == report["diagnoses"] and watched["interventions"] == report["interventions"]
    assert watched["summary"] == report["summary"] and watched["headline"] == report["summary"]["headline"]
    assert len(watched["timeline"]) == len(report["diagnoses"]) + len(report["interventions"])
    assert watched["watched"] is True and watched["plot"] == "/figures/with_suite/version_0.png"
    assert unwatched["watched"] is False and unwatched["headline"] == NOT_WATCHED
    assert unwatched["timeline"] == [] and unwatched["summary"] is None
    assert "train_loss" in unwatched["last_values"] and "train_loss" in unwatched["scalar_tags"]


def test_json_writes_nan_as_a_string_like_the_report():
    from lightning_convergence.readback import Run

    document = json.loads(render([Run("/r", "r", None, {"loss": [(3, float("nan"))]})], {}, "json"))
    assert document["runs"][0]["last_values"] == {"loss": {"step": 3, "value": "nan"}}


def test_unknown_format(runs):
    with pytest.raises(ValueError, match="`format` must be one of"):
        render(runs, {}, "html")
