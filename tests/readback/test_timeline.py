"""The timeline: every record once, in step order, with a diagnosis's first sentence."""

import json

import pytest

from lightning_convergence.readback import build_timeline
from lightning_convergence.readback.timeline import compact_detail, first_sentence


@pytest.mark.parametrize("message, sentence", [
    ("The norm jumped to 14.4x (0.363). Likely causes: a high LR.", "The norm jumped to 14.4x (0.363)."),
    ("Loss was NaN at step 12! Try a lower LR.", "Loss was NaN at step 12!"),
    ("Flat since step 3, e.g. the loss. Then more.", "Flat since step 3, e.g. the loss."),
    ("One sentence only", "One sentence only"),
    ("  Leading space. Second.", "Leading space."),
])
def test_first_sentence(message, sentence):
    assert first_sentence(message) == sentence


@pytest.mark.parametrize("detail, text", [
    ({}, ""),
    ({"reason": "nonfinite_gradients", "consecutive": 1}, "reason=nonfinite_gradients, consecutive=1"),
    ({"factor": [0.5, 0.25], "lr_before": [0.123456]}, "factor=[0.5, 0.25], lr_before=[0.123]"),
    ({"norm": float("inf"), "nested": {"a": 1}}, 'norm=inf, nested={"a":1}'),
])
def test_compact_detail(detail, text):
    assert compact_detail(detail) == text


def test_real_report_every_record_once_in_step_order(watched_run):
    report = json.loads((watched_run / "convergence_report.json").read_text())
    rows = build_timeline(report)
    assert len(rows) == len(report["diagnoses"]) + len(report["interventions"])
    assert [r.step for r in rows] == sorted(r.step for r in rows)
    diagnoses = [r for r in rows if r.event == "diagnosis"]
    assert [(r.kind, r.level, r.layer) for r in diagnoses] == [
        (d["kind"], d["severity"], d["layer"]) for d in sorted(report["diagnoses"], key=lambda d: d["step"])]
    assert all(d["message"].startswith(r.text) for r, d in zip(diagnoses, report["diagnoses"]))
    assert {r.level for r in rows if r.event == "intervention"} == {i["action"] for i in report["interventions"]}


def test_a_diagnosis_comes_before_an_intervention_at_the_same_step_and_layer_is_taken_from_detail():
    report = {
        "diagnoses": [{"kind": "dead_units", "severity": "warning", "step": 50, "message": "Dead. Try ReDo.",
                       "layer": "net.1"}],
        "interventions": [
            {"action": "reinit_units", "step": 50, "source": "DeadNeuronTracker",
             "detail": {"layer": "net.1", "units": [3, 4], "of": 32}},
            {"action": "clip", "step": 10, "source": "AutoClip", "detail": {"clipped_steps": 2}},
        ],
    }
    rows = build_timeline(report)
    assert [(r.step, r.event) for r in rows] == [(10, "intervention"), (50, "diagnosis"), (50, "intervention")]
    assert rows[2].layer == "net.1" and rows[2].text == "units=[3, 4], of=32"
    assert rows[2].kind == "DeadNeuronTracker"
