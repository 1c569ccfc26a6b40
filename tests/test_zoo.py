"""The convergence zoo (benchmarks/zoo): its scenarios are well formed, its scoring counts what it
says, and on the quick subset the suite detects every fault and leaves the healthy controls alone.

The full zoo is measured by running ``python -m benchmarks.zoo`` (see benchmarks/RESULTS.md).
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # benchmarks/ is a folder of scripts, importable from the repository root
    sys.path.insert(0, str(ROOT))

from benchmarks.zoo.run import select  # noqa: E402
from benchmarks.zoo.scenarios import SCENARIO_LIST, SCENARIOS  # noqa: E402
from benchmarks.zoo.scoring import score  # noqa: E402
from benchmarks.zoo.studies import SCENARIO_BY_NAME, STUDIES, VARIANTS  # noqa: E402
from lightning_convergence.rules.findings import DIAGNOSIS_KINDS  # noqa: E402

QUICK = [s.name for s in SCENARIO_LIST if s.quick and s.role != "reference"]


def test_scenarios_are_well_formed():
    faults = [s for s in SCENARIO_LIST if s.role == "fault"]
    healthy = [s for s in SCENARIO_LIST if s.role == "healthy"]
    assert len(faults) >= 14 and len(healthy) >= 4
    assert len(SCENARIOS) == len(SCENARIO_LIST), "scenario names must be unique"
    for s in faults:
        assert s.expect and set(s.expect) <= set(DIAGNOSIS_KINDS), s.name
        assert isinstance(s.onset, int) and s.onset >= 0, s.name
        assert s.reference is None or SCENARIOS[s.reference].role in ("healthy", "reference"), s.name
    for s in healthy:
        assert not s.expect and s.onset is None, s.name


def test_every_variant_and_study_scenario_is_known():
    for scenario in SCENARIO_BY_NAME.values():
        assert scenario.variant_names and set(scenario.variant_names) <= set(VARIANTS), scenario.name
    for study in STUDIES.values():
        assert study.seeds and all(s.role == "study" and s.name.startswith(f"{study.name}/") for s in study.scenarios)
    assert len(SCENARIO_BY_NAME) == len(SCENARIOS) + sum(len(st.scenarios) for st in STUDIES.values())


def test_quick_subset_has_the_ci_scenarios_and_their_references():
    assert {"nan_batch", "lr_high", "inf_loss"} <= set(QUICK)
    assert sum(SCENARIOS[n].role == "healthy" for n in QUICK) == 2
    chosen = {s.name for s in select(None, quick=True)}
    assert chosen == set(QUICK) | {SCENARIOS[n].reference for n in QUICK if SCENARIOS[n].reference}


def _record(name, variant, seed, diagnoses, val_loss=0.1, interventions=()):
    return {"scenario": name, "variant": variant, "seed": seed, "val_loss": val_loss, "val_acc": 0.9, "steps": 100,
            "seconds": 1.0, "losses": [], "val_losses": [], "diagnoses": list(diagnoses),
            "interventions": list(interventions), "noticed": [d.pop("noticed") for d in diagnoses], "suite": "",
            "error": None, "other_cores": 0.0}


def _d(kind, step, severity="warning", noticed=None):
    return {"kind": kind, "severity": severity, "step": step, "epoch": 0, "source": "X", "message": "m.",
            "layer": None, "evidence": {}, "observation": "o.", "causes": [], "remedies": [],
            "noticed": step if noticed is None else noticed}


def test_scoring_counts_hits_latency_false_alarms_and_recovery():
    records = [
        # nan_batch (onset 30): an info note does not count; the first warning+ of an expected kind does.
        _record("nan_batch", "observe", 0, [_d("nonfinite_gradients", 29, "info"), _d("nonfinite_loss", 31, noticed=39),
                                            _d("dead_units", 79)], val_loss=float("nan")),
        _record("nan_batch", "remediate", 0, [_d("nonfinite_inputs", 30)], val_loss=0.14,
                interventions=[{"action": "clip", "step": 10, "source": "A", "detail": {}},
                               {"action": "skip_step", "step": 30, "source": "G", "detail": {}}]),
        _record("healthy_cnn_sgd", "observe", 0, [_d("exploding_gradients", 5, "info")]),
        _record("healthy_cnn_sgd", "remediate", 0, [_d("slow_data_loading", 49)], val_loss=0.1),
        # lr_high: only kinds that are not expected: a miss.
        _record("lr_high", "observe", 0, [_d("no_learning", 149)], val_loss=2.3),
        _record("lr_high", "remediate", 0, [], val_loss=0.2),
    ]
    s = score(records)
    nan = next(f for f in s.faults if f.scenario.name == "nan_batch")
    assert (nan.hit.kind, nan.hit.latency, nan.hit.noticed_latency) == ("nonfinite_loss", 1, 9)
    assert [d["kind"] for d, _ in nan.others] == ["dead_units"]
    assert nan.action == ("skip_step", 30)
    assert nan.ratio == pytest.approx(1.4) and nan.recovered is True  # 0.14 <= 1.5 x 0.1
    high = next(f for f in s.faults if f.scenario.name == "lr_high")
    assert high.hit is None and high.recovered is False  # 0.2 > 1.5 x 0.1
    assert s.recall() == (1, 2)
    assert s.false_alarm_runs() == (0, 1)  # the info note is not an alarm; the remediated run is reported apart
    assert [d["kind"] for d, _ in s.controls[0].remediate_alarms] == ["slow_data_loading"]


@pytest.fixture(scope="module")
def quick_zoo(tmp_path_factory):
    out = tmp_path_factory.mktemp("zoo")
    result = subprocess.run([sys.executable, "-m", "benchmarks.zoo", "--quick", "--out", str(out)], cwd=ROOT,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return out, score(json.loads((out / "records.json").read_text()))


@pytest.mark.slow
def test_quick_zoo_writes_its_results(quick_zoo):
    out, scores = quick_zoo
    assert (out / "RESULTS.md").read_text().startswith("# Convergence zoo")
    assert (out / "zoo.png").stat().st_size > 10_000
    assert {f.scenario.name for f in scores.faults} | {c.scenario.name for c in scores.controls} == set(QUICK)
    assert not list(ROOT.glob("lightning_logs")) and not (ROOT / "convergence_report.json").exists()


@pytest.mark.slow
@pytest.mark.parametrize("name", [n for n in QUICK if SCENARIOS[n].role == "fault"])
def test_quick_zoo_fault_is_detected(quick_zoo, name):
    _, scores = quick_zoo
    (fault,) = [f for f in scores.faults if f.scenario.name == name]
    seen = [(d["kind"], d["severity"], d["step"]) for d in fault.observe["diagnoses"]]
    if fault.hit is None:
        pytest.fail(f"{name}: expected one of {fault.scenario.expect} at warning+, got {seen}")
    if fault.scenario.prompt and fault.hit.latency > 1:
        pytest.fail(f"{name}: diagnosed at step {fault.hit.step}, onset {fault.scenario.onset}")


@pytest.mark.slow
@pytest.mark.parametrize("name", [n for n in QUICK if SCENARIOS[n].role == "healthy"])
def test_quick_zoo_healthy_control_has_no_warning(quick_zoo, name):
    _, scores = quick_zoo
    (control,) = [c for c in scores.controls if c.scenario.name == name]
    alarms = [(d["kind"], d["severity"], d["step"], d.get("observation")) for d, _ in control.alarms]
    if alarms:
        pytest.fail(f"{name}: warnings on a healthy run: {alarms}")
