"""The timeline: every record once, in step order, with a diagnosis's observation and top cause."""

import json

import pytest

from lightning_convergence.readback import build_timeline
from lightning_convergence.readback.timeline import compact_detail, observation_of, top_cause_of

_LR_HIGH = {"cause": "learning_rate_too_high", "confidence": 0.8, "evidence": {}}


@pytest.mark.parametrize("diagnosis, observation, cause", [
    ({"observation": "Norm 14.4x (0.363).", "message": "Norm 14.4x (0.363). Likely causes: x.", "causes": [_LR_HIGH]},
     "Norm 14.4x (0.363).", "learning_rate_too_high"),
    # a report written before diagnoses had parts: the whole message, never a cut of it
    ({"message": "Loss was NaN at step 12! Try a lower LR."}, "Loss was NaN at step 12! Try a lower LR.", None),
    ({"observation": "", "message": "Only a message.", "causes": []}, "Only a message.", None),
    ({"observation": "Seen.", "message": "Seen. Try: 1) x.", "causes": None}, "Seen.", None),
])
def test_observation_and_top_cause(diagnosis, observation, cause):
    assert observation_of(diagnosis) == observation and top_cause_of(diagnosis) == cause


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
    assert all(r.text == d["observation"] and d["message"].startswith(r.text)
               for r, d in zip(diagnoses, report["diagnoses"]))
    assert all(r.cause == d["causes"][0]["cause"] for r, d in zip(diagnoses, report["diagnoses"]) if d["causes"])
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
