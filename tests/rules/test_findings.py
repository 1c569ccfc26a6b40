"""Findings keep their parts as fields; causes are validated names; the message is rendered."""

import math

import pytest

from lightning_convergence.recorder.records import Diagnosis
from lightning_convergence.rules import advice
from lightning_convergence.rules.findings import (
    CAUSES,
    DIAGNOSIS_KINDS,
    SEVERITIES,
    Cause,
    Finding,
    as_causes,
    default_causes,
)


def test_every_kind_has_usual_causes_and_remedies_and_every_cause_has_words():
    assert set(advice.USUAL_CAUSES) == set(DIAGNOSIS_KINDS) == set(advice.REMEDIES)
    assert set(advice.CAUSE_WORDS) == set(CAUSES)
    assert len(CAUSES) == len(set(CAUSES)) == 33
    for kind, usual in advice.USUAL_CAUSES.items():
        assert usual and all(name in CAUSES and 0 < confidence < 1 for name, confidence in usual), kind
        assert [c for _, c in usual] == sorted((c for _, c in usual), reverse=True), kind
        assert advice.REMEDIES[kind] and all(isinstance(r, str) and r for r in advice.REMEDIES[kind]), kind


@pytest.mark.parametrize("args, error", [
    (("bad_luck", 0.5), "`cause` must be one of CAUSES"),
    (("learning_rate_too_high", -0.1), "`confidence`"),
    (("learning_rate_too_high", 1.5), "`confidence`"),
    (("learning_rate_too_high", math.nan), "`confidence`"),
    (("learning_rate_too_high", math.inf), "`confidence`"),
    (("learning_rate_too_high", True), "`confidence`"),
    (("learning_rate_too_high", "0.5"), "`confidence`"),
    (("learning_rate_too_high", 0.5, [1, 2]), "`evidence`"),
])
def test_cause_validation(args, error):
    with pytest.raises(ValueError, match=error):
        Cause(*args)


@pytest.mark.parametrize("confidence", [0, 0.0, 0.25, 1])
def test_cause_accepts_the_closed_unit_interval(confidence):
    cause = Cause("label_noise", confidence, {"n": 3})
    assert cause.confidence == float(confidence) and isinstance(cause.confidence, float)
    assert Cause.from_dict(cause.to_dict()) == cause


def test_causes_are_ranked_most_likely_first_and_ties_keep_their_order():
    ranked = as_causes([{"cause": "label_noise", "confidence": 0.2},
                        Cause("learning_rate_too_low", 0.6),
                        Cause("too_little_data", 0.2)])
    assert [c.cause for c in ranked] == ["learning_rate_too_low", "label_noise", "too_little_data"]


@pytest.mark.parametrize("kwargs, error", [
    ({"kind": "explode"}, "`kind`"),
    ({"severity": "fatal"}, "`severity`"),
    ({"observation": None}, "`observation`"),
    ({"causes": [{"cause": "gremlins", "confidence": 0.5}]}, "`cause`"),
    ({"causes": [Cause("learning_rate_too_high", 0.5)], "remedies": "one string"}, "`remedies`"),
])
def test_finding_validation(kwargs, error):
    args = {"kind": "plateau", "severity": "warning", "observation": "Flat."} | kwargs
    with pytest.raises(ValueError, match=error):
        Finding(**args)


@pytest.mark.parametrize("kind", DIAGNOSIS_KINDS)
@pytest.mark.parametrize("severity", SEVERITIES)
def test_every_kind_gets_its_usual_causes_and_remedies(kind, severity):
    finding = Finding(kind, severity, "Seen: 3.")
    assert finding.causes == default_causes(kind) and finding.causes
    assert finding.remedies == advice.REMEDIES[kind]
    assert finding.top_cause == finding.causes[0]
    assert finding.message.startswith("Seen: 3. Likely causes: " + advice.CAUSE_WORDS[finding.causes[0].cause])


def test_a_warning_without_any_cause_is_refused(monkeypatch):
    monkeypatch.setitem(advice.USUAL_CAUSES, "plateau", ())
    assert Finding("plateau", "info", "Flat.").causes == ()
    with pytest.raises(ValueError, match="at least one cause"):
        Finding("plateau", "warning", "Flat.")


@pytest.mark.parametrize("observation, causes, remedies, message", [
    ("Flat.", [], [], "Flat."),
    ("Flat.", ["learning_rate_too_low"], [],
     "Flat. Likely causes: a learning rate that is too low (or zero, from a schedule)."),
    ("Flat.", [], ["raise the LR"], "Flat. Try: 1) raise the LR."),
    ("Swings.", ["label_noise", "too_little_data", "unshuffled_data"], ["a", "b"],
     "Swings. Likely causes: noisy or wrong labels, too little training data for the model, or training data "
     "that is not shuffled. Try: 1) a; 2) b."),
])
def test_render_message(observation, causes, remedies, message):
    assert advice.render_message(observation, causes, remedies) == message


def test_a_rule_with_evidence_passes_its_own_causes_and_remedies():
    own = (Cause("gradient_flow_cut", 0.3), Cause("dead_relu_units", 0.6, {"first_norm": 0.0}))
    finding = Finding("vanishing_gradients", "warning", "No gradient reaches fc0.", causes=own,
                      remedies=("check requires_grad",))
    assert [c.cause for c in finding.causes] == ["dead_relu_units", "gradient_flow_cut"]
    assert finding.remedies == ("check requires_grad",)
    assert finding.message == ("No gradient reaches fc0. Likely causes: ReLU units that died and pass no gradient "
                               "or a part of the model cut off from the loss (no_grad, detach, "
                               "requires_grad=False). Try: 1) check requires_grad.")


@pytest.mark.parametrize("kind, severity, causes", [
    ("divergence", "critical", ()),
    ("invalid_targets", "critical", (Cause("invalid_targets", 0.8, {"max": 10.0}),)),
    ("slow_training", "info", ()),
])
def test_diagnosis_from_finding_keeps_the_parts_and_the_rendered_message(kind, severity, causes):
    finding = Finding(kind, severity, "Seen.", layer="fc1", evidence={"x": 1.0}, step=4, causes=causes)
    d = Diagnosis.from_finding(finding, step=9, epoch=1, source="Test")
    assert (d.step, d.layer, d.evidence) == (4, "fc1", {"x": 1.0})
    assert d.observation == "Seen." and d.message == finding.message
    assert d.causes == [c.to_dict() for c in finding.causes] and d.remedies == list(finding.remedies)
    assert d.top_cause == finding.causes[0].to_dict()
    assert Diagnosis.from_dict(d.to_dict()) == d


@pytest.mark.parametrize("kwargs, error", [
    ({"kind": "explode"}, "`kind`"),
    ({"severity": "fatal"}, "`severity`"),
    ({"causes": [{"cause": "gremlins", "confidence": 0.5}]}, "`cause`"),
    ({"causes": [{"cause": "label_noise", "confidence": 2}]}, "`confidence`"),
])
def test_diagnosis_validation(kwargs, error):
    args = {"kind": "plateau", "severity": "warning", "step": 1, "epoch": 0, "source": "T",
            "observation": "Flat."} | kwargs
    with pytest.raises(ValueError, match=error):
        Diagnosis(**args)


def test_diagnosis_renders_its_message_from_its_parts_when_none_is_given():
    d = Diagnosis("plateau", "warning", 1, 0, "T", observation="Flat.",
                  causes=[{"cause": "learning_rate_too_low", "confidence": 0.5, "evidence": {}}],
                  remedies=["raise the LR"])
    assert d.message == advice.render_message("Flat.", ["learning_rate_too_low"], ["raise the LR"])


def test_causes_no_measurement_tells_apart_are_given_as_an_order_to_check():
    flat = Finding("no_learning", "warning", "Flat.")
    assert "Nothing measured tells these apart: check them in this order." in flat.message
    named = Finding("no_learning", "warning", "Flat.", causes=(Cause("learning_rate_too_low", 0.9, {"lr": 0.0}),
                                                                Cause("labels_mismatched", 0.1)))
    assert "Nothing measured" not in named.message
    assert "Nothing measured" not in Finding("plateau", "info", "Flat.").message
