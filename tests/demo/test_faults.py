"""Every demo fault is diagnosed as it should be by the suite it runs with (the demo's own runs,
with the suite only; the full two-run demo is in tests/test_cli.py)."""

import matplotlib.image
import pytest

from lightning_convergence.demo.faults import FAULTS
from lightning_convergence.demo.run import RunResult, _fit, actions, comparison_figure, verdict

SEVERE = ("warning", "critical")


@pytest.mark.slow
@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_each_fault_is_diagnosed_with_its_kind(tmp_path, fault):
    result = _fit("with_suite", fault, str(tmp_path), FAULTS[fault].get("epochs", 4), 0, with_suite=True)
    kinds = {d["kind"] for d in result.report["diagnoses"] if d["severity"] in SEVERE}
    expected = set(FAULTS[fault]["expect"])
    if expected:
        assert expected <= kinds, f"{fault}: expected {expected}, got {kinds}"
    else:
        assert kinds == set(), f"the healthy run got warnings: {kinds}"


def test_verdict_and_actions_say_what_was_done():
    report = {"diagnoses": [{"kind": "divergence", "severity": "critical", "step": 37}],
              "interventions": [{"action": "rollback", "step": 39}, {"action": "lr_scale", "step": 39},
                                {"action": "reinit_units", "step": 119}, {"action": "reinit_units", "step": 159}]}
    assert actions(report) == ("rolled back (1x from step 39), changed the LR (1x from step 39), "
                               "revived dead units (2x from step 119)")
    without = RunResult("without", "", 0.09, 2.31, 2.31, 188, None)
    with_suite = RunResult("with", "", 0.97, 0.09, 0.1, 188, report)
    line = verdict(without, with_suite)
    assert line.startswith("Without the suite: final val acc 0.09") and "chance level" in line
    assert "flagged divergence (step 37) and rolled back" in line and "final val acc 0.97" in line


def test_comparison_figure_from_two_real_runs(tmp_path):
    without = _fit("without_suite", "none", str(tmp_path), 1, 0, with_suite=False)
    with_suite = _fit("with_suite", "none", str(tmp_path), 1, 0, with_suite=True)
    path = comparison_figure(without.log_dir, with_suite.log_dir, with_suite.report, str(tmp_path / "f.png"), "none")
    image = matplotlib.image.imread(path)
    assert image.shape[0] > 300 and image.shape[1] > 800
