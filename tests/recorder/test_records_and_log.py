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
    assert len(DIAGNOSIS_KINDS) == 16 and "slow_data_loading" in DIAGNOSIS_KINDS
    assert INTERVENTION_ACTIONS == ("clip", "skip_step", "lr_scale", "warmup", "reinit_units", "rollback", "stop")


@pytest.mark.parametrize("bad", [{"kind": "explode"}, {"severity": "fatal"}])
def test_unknown_kind_or_severity_raises(bad):
    args = {"kind": "plateau", "severity": "info", "message": "m"} | bad
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
    assert set(report["diagnoses"][0]) == {"kind", "severity", "step", "epoch", "source", "layer", "message", "evidence"}
    assert report["summary"]["steps"] == 400 and report["summary"]["healthy"] is False
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
