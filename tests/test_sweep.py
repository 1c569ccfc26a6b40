"""The calibration sweep (benchmarks/sweep): its split and grid are what the results claim, its
labels come from outcomes only, its scores count what they say, and its quick subset runs end to
end (real fits, the suite observing) and writes tables that match its records.

The full sweep is measured by running ``python -m benchmarks.sweep`` (benchmarks/results/sweep.md).
"""

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # benchmarks/ is importable from the repository root
    sys.path.insert(0, str(ROOT))

from benchmarks.sweep.labels import CONVERGED_FACTOR, best_lrs, label, score  # noqa: E402
from benchmarks.sweep.models import ARCHITECTURES, OPTIMIZERS  # noqa: E402
from benchmarks.sweep.setups import ERRORS, HELD_OUT, LR_GRID, TUNING, USUAL_LR, jobs  # noqa: E402
from lightning_convergence.rules.findings import CAUSES  # noqa: E402


def test_the_split_and_the_grid_are_what_the_issue_asks():
    assert set(TUNING) | set(HELD_OUT) == set(ARCHITECTURES) and not set(TUNING) & set(HELD_OUT)
    assert len(ARCHITECTURES) >= 6 and len(OPTIMIZERS) >= 3
    for optimizer, grid in LR_GRID.items():
        assert grid == tuple(sorted(grid)) and grid[-1] / grid[0] >= 1e4 and USUAL_LR[optimizer] in grid
    assert all(cause in CAUSES for cause, _ in ERRORS.values())
    assert all(arch in ARCHITECTURES and optimizer in LR_GRID for _, setups in ERRORS.values() for arch, optimizer in setups)
    everything = jobs()
    assert len({j.name for j in everything}) == len(everything)  # no run twice
    assert sum(j.error is None for j in everything) == len(ARCHITECTURES) * sum(map(len, LR_GRID.values())) * 3


def _record(arch, lr, seed, outcome, error=None, kinds=(), causes=()):
    return {"arch": arch, "optimizer": "sgd", "lr": lr, "seed": seed, "error": error, "outcome": outcome,
            "diagnoses": [{"kind": k, "severity": "warning"} for k in kinds],
            "summary_causes": [{"cause": c} for c in causes]}


def test_labels_come_from_outcomes():
    records = [_record("mlp", 0.01, s, 1.0) for s in range(3)] + [_record("mlp", 0.1, s, 0.2) for s in range(3)]
    records += [_record("mlp", 1.0, 0, math.nan), _record("mlp", 1.0, 1, 0.2 * CONVERGED_FACTOR),
                _record("mlp", 0.1, 3, 0.3), _record("mlp", 0.1, 4, 5.0, error="stale_gradients")]
    best = best_lrs(records)
    assert best[("mlp", "sgd")] == (0.1, 0.2)
    assert [label(r, best).status for r in records[-4:]] == ["failed", "converged", "unlucky", "failed"]
    assert label(records[0], best).cause == "learning_rate_too_low"
    assert label(records[-4], best).cause == "learning_rate_too_high"  # NaN: failed, on the high side
    assert label(records[-1], best).cause == "stale_gradients"


def test_scores_count_alarms_recall_and_causes_per_half():
    records = [
        _record("mlp", 0.1, 0, 0.2),  # the best: converged, no alarm
        _record("mlp", 0.1, 1, 0.2, kinds=["plateau"]),  # converged with an alarm: a false alarm
        _record("mlp", 1.0, 0, 3.0, kinds=["divergence"], causes=["learning_rate_too_high"]),  # right
        _record("mlp", 0.01, 0, 1.0, kinds=["no_learning"], causes=["labels_mismatched", "learning_rate_too_low"]),
        _record("mlp", 0.001, 0, 2.0),  # missed
        _record("rescnn", 0.1, 0, 0.1, kinds=["slow_data_loading"]),  # held out: a timing false alarm
    ]
    halves = score(records)
    t, h = halves["tuning"], halves["held_out"]
    assert (t.converged, t.false_alarms, t.failed, t.recalled, t.top_cause, t.top_two) == (2, 1, 3, 2, 1, 2)
    assert t.missed == {"learning_rate_too_low": 1} and t.alarm_kinds == {"plateau": 1}
    assert (h.converged, h.false_alarms, h.false_alarms_no_timing) == (1, 1, 0)


@pytest.mark.slow
def test_the_quick_subset_runs_and_its_tables_match_its_records(tmp_path):
    result = subprocess.run([sys.executable, "-m", "benchmarks.sweep", "--quick", "--out", str(tmp_path)], cwd=ROOT,
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    payload = json.loads((tmp_path / "sweep.json").read_text())
    records = payload["records"]
    assert len(records) == len(jobs(("mlp", "regression"), ("sgdm",), (0,), lrs_per_setup=3))
    assert not [r["crash"] for r in records if r["crash"]]
    assert all(r["update_ratios"] and r["steps"] > 0 for r in records)
    rescored = {h: vars(s) for h, s in score(records).items()}
    for half, numbers in payload["scores"].items():
        assert numbers == {k: v for k, v in rescored[half].items() if k in numbers}
    md = (tmp_path / "sweep.md").read_text()
    t = payload["scores"]["tuning"]
    assert f"| recall: failed runs with a warning+ | {t['recalled']}/{t['failed']}" in md


def test_observed_runs_are_taken_from_a_saved_sweep_only_when_every_one_is_there(tmp_path):
    from benchmarks.sweep.run import observed_records

    work = jobs(archs=("mlp",), optimizers=("sgdm",), seeds=(0,), lrs_per_setup=2, errors=False, remediate=True)
    observed = [j for j in work if not j.remediate]
    saved = [{"arch": j.arch, "optimizer": j.optimizer, "lr": j.lr, "seed": j.seed, "error": j.error,
              "remediate": False, "outcome": 1.0} for j in observed]
    path = tmp_path / "sweep.json"
    path.write_text(json.dumps({"records": saved + [{**saved[0], "remediate": True}]}))
    assert observed_records(path, work) == saved  # the acting record of the file is not taken
    path.write_text(json.dumps({"records": saved[1:]}))
    with pytest.raises(SystemExit, match="1 observed runs missing"):
        observed_records(path, work)
