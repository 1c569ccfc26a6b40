"""Ranking causes from evidence: tables of (symptom, evidence) and the cause ranked first."""

import pytest

from lightning_convergence.rules.causes import EVIDENCE_KEYS, SIGNATURES, Evidence, explain, rank_causes
from lightning_convergence.rules.findings import CAUSES, DIAGNOSIS_KINDS, Finding, default_causes

TABLE = [
    # symptom, evidence, the cause ranked first
    ("no_learning", {"learning_rate": 0.0}, "learning_rate_too_low"),
    ("plateau", {"learning_rate": 0.0}, "learning_rate_too_low"),
    ("plateau", {"update_ratio_median": 0.0, "update_ratio_max": 0.0}, "learning_rate_too_low"),
    ("no_learning", {"update_ratio_median": 2e-7, "update_ratio_max": 1e-6}, "learning_rate_too_low"),
    ("no_learning", {"update_ratio_median": 7e-5, "update_ratio_max": 9e-5}, "learning_rate_too_low"),
    # small updates in a vanishing-gradient net are the symptom, not a low learning rate
    ("vanishing_gradients", {"update_ratio_median": 1e-7, "update_ratio_max": 1e-6}, "saturating_activations"),
    # small updates after a collapse that updates far too large caused
    ("divergence", {"update_ratio_median": 1e-7, "update_ratio_peak": 0.5}, "learning_rate_too_high"),
    ("vanishing_gradients", {"update_ratio_median": 0.4, "update_ratio_step": 0}, "learning_rate_too_high"),
    ("vanishing_gradients", {"update_ratio_median": 1e-6, "update_ratio_peak": 0.5, "update_ratio_peak_step": 1},
     "learning_rate_too_high"),
    ("dead_units", {"update_ratio_median": 0.5}, "learning_rate_too_high"),
    # large first steps, then nothing moves: a collapse
    ("no_learning", {"update_ratio_median": 1e-5, "update_ratio_peak": 0.08}, "learning_rate_too_high"),
    # at most the first steps of Adam at a good rate (0.15-0.17), with healthy updates since
    ("no_learning", {"update_ratio_median": 4e-3, "update_ratio_peak": 0.17}, "labels_mismatched"),
    # weights that move less than runs that converge do
    ("no_learning", {"update_ratio_median": 8e-4, "update_ratio_peak": 1e-3}, "learning_rate_too_low"),
    ("nonfinite_gradients", {"nonfinite_gradients_with_finite_loss": 12}, "non_differentiable_operation"),
    ("nonfinite_loss", {"nonfinite_inputs": 64}, "nonfinite_data"),
    ("divergence", {"target_scale": 4e9}, "unnormalized_targets"),
    ("plateau", {"target_scale": 4e9, "update_ratio_median": 1e-3}, "unnormalized_targets"),
    ("no_learning", {"target_scale": 2e-5}, "unnormalized_targets"),
    ("divergence", {"batch_label_share": 0.15, "label_span": 10}, "unshuffled_data"),
    ("oscillation", {"input_scale": 130.0}, "unnormalized_inputs"),
    # healthy numbers name nothing: the usual order stays
    ("divergence", {"update_ratio_median": 5e-3, "target_scale": 3.0, "input_scale": 1.0,
                    "batch_label_share": 0.9, "label_span": 10}, "learning_rate_too_high"),
    ("no_learning", {"learning_rate": 0.01}, "labels_mismatched"),
    # two classes: a batch of one class is common in small shuffled batches
    ("divergence", {"batch_label_share": 0.5, "label_span": 2}, "learning_rate_too_high"),
    # evidence that cannot explain the symptom is not used for it
    ("slow_data_loading", {"learning_rate": 0.0}, "data_loader_bottleneck"),
]


@pytest.mark.parametrize("kind,evidence,first", TABLE, ids=[f"{k}-{sorted(e)}" for k, e, _ in TABLE])
def test_the_first_cause_follows_the_evidence(kind, evidence, first):
    causes, why = rank_causes(kind, evidence)
    assert causes[0].cause == first
    assert [c.confidence for c in causes] == sorted((c.confidence for c in causes), reverse=True)
    if first in why:
        assert causes[0].evidence, "a cause named by evidence carries its numbers"


def test_unsupported_usual_causes_come_after_the_supported_one_at_half_their_prior():
    prior = {c.cause: c.confidence for c in default_causes("divergence")}
    causes, _ = rank_causes("divergence", {"target_scale": 4e9})
    rest = {c.cause: c.confidence for c in causes[1:]}
    assert rest["learning_rate_too_high"] == pytest.approx(prior["learning_rate_too_high"] / 2)


def test_a_zero_learning_rate_speaks_against_a_learning_rate_too_high():
    causes, _ = rank_causes("exploding_gradients", {"learning_rate": 0.0})
    confidence = {c.cause: c.confidence for c in causes}
    assert confidence["learning_rate_too_high"] < min(v for k, v in confidence.items() if k != "learning_rate_too_high")


def test_every_signature_names_a_known_cause_for_known_kinds():
    for signature in SIGNATURES:
        assert signature.cause in CAUSES
        assert signature.explains <= set(DIAGNOSIS_KINDS)


def test_explain_puts_the_top_causes_remedy_first_and_says_why():
    finding = Finding("plateau", "warning", "The validation loss has not improved for 5 checks.")
    ranked = explain(finding, {"target_scale": 4e9})
    assert ranked.causes[0].cause == "unnormalized_targets"
    assert ranked.remedies[0].startswith("standardise the regression target")
    assert "Evidence: the regression target has a scale of 4e+09" in ranked.message
    assert ranked.remedies[1:] == finding.remedies  # the kind's own advice follows


def test_explain_leaves_info_and_evidence_free_boards_alone():
    info = Finding("plateau", "info", "Plateau, acted on.")
    assert explain(info, {"learning_rate": 0.0}) is info
    warning = Finding("no_learning", "warning", "Flat.")
    assert explain(warning, {}).causes == warning.causes


def test_a_rules_own_evidence_is_kept_unless_the_board_outranks_it():
    own = Finding("invalid_targets", "critical", "Labels 1..10 for 10 classes.",
                  causes=({"cause": "invalid_targets", "confidence": 0.8, "evidence": {"max": 10}},))
    assert explain(own, {"learning_rate": 0.0}) is own


def test_the_board_refuses_unknown_keys_and_forgets_none():
    board = Evidence()
    board.post(learning_rate=0.1, target_scale=3.0)
    board.post(target_scale=None)
    assert board.snapshot() == {"learning_rate": 0.1}
    assert board.snapshot(learning_rate=0.0, input_scale=None) == {"learning_rate": 0.0}
    with pytest.raises(KeyError, match="unknown evidence key 'loss'"):
        board.post(loss=1.0)
    assert set(board.snapshot(learning_rate=1.0)) <= set(EVIDENCE_KEYS)


@pytest.mark.parametrize("evidence,stale", [
    ({"grad_norm_rising_share": 1.0, "grad_norm_growth": 3.0}, True),
    ({"grad_norm_rising_share": 0.95, "grad_norm_growth": 1.25}, True),
    ({"grad_norm_rising_share": 0.6, "grad_norm_growth": 3.0}, False),  # up and down: not stale
    ({"grad_norm_rising_share": 1.0, "grad_norm_growth": 1.05}, False),  # barely moving
    # The loop zeroes the gradients itself (automatic optimisation): a norm that only rises is an
    # explosion (on the sweep: SGD at 100x its best rate, 63,735x in one window), not a sum.
    ({"grad_norm_rising_share": 1.0, "grad_norm_growth": 63735.0, "zeroes_gradients": True}, False),
    ({"grad_norm_rising_share": 1.0, "grad_norm_growth": 3.0, "zeroes_gradients": False}, True),
])
def test_gradients_that_only_ever_rise_are_stale(evidence, stale):
    causes, _ = rank_causes("exploding_gradients", evidence)
    assert (causes[0].cause == "stale_gradients") == stale


def test_large_updates_from_gradients_never_zeroed_do_not_name_the_learning_rate():
    evidence = {"update_ratio_median": 0.5, "grad_norm_rising_share": 1.0, "grad_norm_growth": 1.3}
    causes, _ = rank_causes("plateau", evidence)
    assert [c.cause for c in causes[:2]] == ["stale_gradients", "learning_rate_too_high"]


def test_the_kinds_advice_does_not_repeat_the_causes_remedy():
    finding = Finding("divergence", "critical", "The loss climbed.")
    ranked = explain(finding, {"update_ratio_median": 0.6})
    assert ranked.remedies[0].startswith("lower the learning rate about tenfold (a range test")
    assert "lower the learning rate about tenfold" not in ranked.remedies[1:]
