"""Records validate their kinds; the log rate-limits and writes the documented schema."""

import json
import math

import pytest

from lightning_convergence.recorder import (
    DIAGNOSIS_KINDS,
    INTERVENTION_ACTIONS,
    ConvergenceLog,
    Diagnosis,
    Finding,
    Intervention,
)


def test_kinds_and_actions_are_the_documented_ones():
    assert len(DIAGNOSIS_KINDS) == 18 and {"invalid_targets", "slow_training"} <= set(DIAGNOSIS_KINDS)
    assert INTERVENTION_ACTIONS == ("clip", "skip_step", "lr_scale", "warmup", "reinit_units", "rollback", "stop",
                                    "undo")


@pytest.mark.parametrize("bad", [{"kind": "explode"}, {"severity": "fatal"}])
def test_unknown_kind_or_severity_raises(bad):
    args = {"kind": "plateau", "severity": "info", "observation": "m"} | bad
    with pytest.raises(ValueError, match="must be one of"):
        Finding(**args)


def test_unknown_action_raises():
    with pytest.raises(ValueError, match="`action`"):
        Intervention("explode", 1, "x")


def _d(step, kind="plateau", severity="warning", layer=None):
    return Diagnosis(kind, severity, step=step, epoch=0, source="Test", message="m", layer=layer)


def test_rate_limit_per_kind_and_layer_with_escalation():
    log = ConvergenceLog(window_steps=100)
    assert log.add_diagnosis(_d(0))
    assert not log.add_diagnosis(_d(50))
    assert log.add_diagnosis(_d(50, layer="fc1"))  # another layer
    assert log.add_diagnosis(_d(60, severity="critical"))  # severity rose
    assert log.add_diagnosis(_d(160))  # the window has passed
    assert log.suppressed == {"plateau": 1}


def test_report_schema_and_non_finite_evidence(tmp_path):
    log = ConvergenceLog()
    log.add_diagnosis(Diagnosis("exploding_gradients", "warning", 123, 2, "GradientNormMonitor", "msg",
                                layer="encoder.0", evidence={"total_norm": math.inf}))
    log.add_intervention(Intervention("skip_step", 124, "GradientNormMonitor", {"reason": "x"}))
    path = log.write_json(str(tmp_path), steps=400)
    report = json.loads(open(path).read())
    assert report["version"] == 1
    assert set(report) == {"version", "diagnoses", "interventions", "summary"}
    assert report["diagnoses"][0]["evidence"]["total_norm"] == "inf"
    assert set(report["diagnoses"][0]) == {"kind", "severity", "step", "epoch", "source", "layer", "message",
                                           "observation", "causes", "remedies", "evidence"}
    assert report["summary"]["steps"] == 400 and report["summary"]["healthy"] is False
    assert report["summary"]["causes"] == []  # the diagnosis was written without causes
    assert "exploding_gradients" in report["summary"]["headline"]


def test_records_round_trip_without_duplicates():
    log = ConvergenceLog()
    log.add_diagnosis(_d(5))
    log.add_intervention(Intervention("stop", 6, "Test"))
    saved = log.records_from("Test")
    fresh = ConvergenceLog()
    fresh.restore(saved)
    fresh.restore(saved)
    assert len(fresh.diagnoses) == 1 and len(fresh.interventions) == 1
    assert not fresh.add_diagnosis(_d(10))  # the rate limit survives the restore


def test_window_steps_validation():
    with pytest.raises(ValueError, match="`window_steps`"):
        ConvergenceLog(window_steps=0)


def _finding_diagnosis(step, kind, severity, causes=(), layer=None):
    finding = Finding(kind, severity, f"Seen at {step}.", layer=layer, causes=causes)
    return Diagnosis.from_finding(finding, step=step, epoch=0, source="Test")


def test_summary_ranks_causes_with_the_diagnoses_that_named_them(tmp_path):
    log = ConvergenceLog()
    high = {"cause": "learning_rate_too_high", "confidence": 0.9, "evidence": {"update_ratio_max": 0.3}}
    log.add_diagnosis(_finding_diagnosis(30, "divergence", "critical", causes=[high]))
    log.add_diagnosis(_finding_diagnosis(10, "oscillation", "warning"))  # usual causes: LR 0.5, batch 0.3, ...
    log.add_diagnosis(_finding_diagnosis(5, "plateau", "info"))  # an info note names no cause of harm
    report = json.loads(open(log.write_json(str(tmp_path), steps=40)).read())
    kinds = [d["kind"] for d in report["diagnoses"]]
    assert kinds == ["plateau", "oscillation", "divergence"]  # sorted by step: the indices refer to this
    causes = report["summary"]["causes"]
    assert causes[0] == {"cause": "learning_rate_too_high", "confidence": 0.9, "diagnoses": [1, 2]}
    assert [c["cause"] for c in causes[1:]] == ["batch_size_too_small", "low_precision_overflow"]
    assert all(c["diagnoses"] == [1] for c in causes[1:])
    assert report["diagnoses"][2]["causes"] == [high]


def test_a_report_without_the_parts_still_loads():
    old = {"kind": "plateau", "severity": "warning", "step": 7, "epoch": 0, "source": "PlateauAdvisor",
           "message": "Flat. Try this.", "layer": None, "evidence": {}}
    d = Diagnosis.from_dict(old)
    assert d.message == "Flat. Try this." and d.observation == "" and d.causes == [] and d.remedies == []
    assert Diagnosis.from_dict(d.to_dict()) == d


def test_diagnosis_round_trips_its_parts():
    d = _finding_diagnosis(3, "exploding_gradients", "warning", layer="fc1")
    data = json.loads(json.dumps(d.to_dict()))
    assert Diagnosis.from_dict(data) == d
    assert data["observation"] == "Seen at 3." and data["causes"][0]["cause"] == "learning_rate_too_high"
    assert data["message"].startswith("Seen at 3. Likely causes: a learning rate that is too high")
