"""Two real processes on gloo (CPU) under Lightning's ModelParallelStrategy with FSDP2
``fully_shard``: the suite runs, its gradient norms equal a DDP run's, and its decisions are the
same on both ranks.

Each run is a fresh interpreter (``tests/integration/_fsdp2_runs.py``): the strategy launches its
second rank by running the script again, and a subprocess timeout turns a hang into a failure.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.distributed

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TIMEOUT_S = 300  # a run takes about 20 s on 2 busy cores; a hang fails well before CI's limit


def _run(out, run: str, strategy: str) -> list[dict]:
    result = subprocess.run([sys.executable, "-m", "tests.integration._fsdp2_runs", run, strategy, str(out)], cwd=ROOT,
                            capture_output=True, text=True, timeout=TIMEOUT_S, env={**os.environ, "PYTHONPATH": ROOT})
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    tag = f"{run}_{strategy}"
    return [json.load(open(os.path.join(out, f"{tag}_rank{r}.json"))) for r in (0, 1)]


def _relative(a: float, b: float) -> float:
    return abs(a - b) / max(abs(b), 1e-30)


def test_fsdp2_norms_equal_ddp_and_autoclip_clips_alike(tmp_path):
    """The observing suite plus AutoClip at p=10 (clips most steps) and then AGC at a factor of 1e-3
    (nearly every unit clipped: each rank clips the rows it holds, biases merged over the ranks),
    same data and seed: total and per-layer norms under FSDP2 equal DDP's to 1e-5 relative, on both
    ranks; AutoClip's coefficient is the same on both ranks, AGC clips alike, and the final weights
    equal DDP's."""
    fsdp = _run(tmp_path, "norms", "fsdp2")
    ddp = _run(tmp_path, "norms", "ddp")
    assert len(fsdp[0]["steps"]) == len(ddp[0]["steps"]) == 6
    worst = 0.0
    for rank in (0, 1):
        for sharded, whole in zip(fsdp[rank]["steps"], ddp[0]["steps"]):
            worst = max(worst, _relative(sharded["total"], whole["total"]))
            assert sharded["layers"].keys() == whole["layers"].keys()
            for layer, norm in whole["layers"].items():
                worst = max(worst, _relative(sharded["layers"][layer], norm))
    assert worst <= 1e-5, worst
    coefficients = [[s["clip"] for s in rank["steps"]] for rank in fsdp]
    assert coefficients[0] == coefficients[1] and any(c is not None and c < 1 for c in coefficients[0])
    weights_error = max(abs(a - b) for a, b in zip(fsdp[0]["weights"], ddp[0]["weights"]))
    assert weights_error < 1e-4, weights_error
    assert fsdp[0]["records"] == fsdp[1]["records"]
    agc = [[i for i in r["records"]["AutoClip:agc"]["interventions"] if i["action"] == "clip"] for r in (fsdp[0], ddp[0])]
    assert agc[0] and agc[0] == agc[1]


def test_fsdp2_nan_on_one_rank_skips_on_both_without_a_hang(tmp_path):
    ranks = _run(tmp_path, "nan", "fsdp2")
    assert ranks[0]["finite"] and ranks[1]["finite"]
    assert ranks[0]["checksum"] == ranks[1]["checksum"]
    skips = [[i["step"] for i in r["records"]["GradientNormMonitor"]["interventions"] if i["action"] == "skip_step"]
             for r in ranks]
    assert skips == [[2, 3], [2, 3]]
    assert ranks[0]["global_step"] == ranks[1]["global_step"] == 8


def test_fsdp2_acting_suite_agrees_on_both_ranks(tmp_path):
    """The acting suite, a loss blown up on rank 1 only from step 6: both ranks end with the same
    weights and the same records (rollbacks restore each rank's own shard)."""
    ranks = _run(tmp_path, "acting", "fsdp2")
    assert ranks[0]["finite"] and ranks[1]["finite"]
    assert ranks[0]["checksum"] == ranks[1]["checksum"]
    assert ranks[0]["records"] == ranks[1]["records"]
    assert ranks[0]["global_step"] == ranks[1]["global_step"]
    actions = [i["action"] for i in ranks[0]["records"]["PlateauAdvisor"]["interventions"]]
    assert "rollback" in actions  # each rank restored its own shard, and they still agree


def _comms(out, mode: str) -> list[dict]:
    result = subprocess.run([sys.executable, "-m", "tests.integration._fsdp2_runs", "comms", mode, str(out)],
                            cwd=ROOT, capture_output=True, text=True, timeout=TIMEOUT_S,
                            env={**os.environ, "PYTHONPATH": ROOT})
    assert result.returncode == 0, result.stderr[-5000:]
    return json.load(open(os.path.join(out, f"comms_{mode}", "comms_rank0.json")))


@pytest.fixture(scope="module")
def bare_comms(tmp_path_factory) -> list[dict]:
    """FSDP2's own collectives per batch, without the suite: one launch for both suites' tests."""
    return _comms(tmp_path_factory.mktemp("bare"), "bare")


@pytest.mark.parametrize(("suite", "expected"), [("observing", [1, 2, 1, 1]), ("acting", [2, 3, 2, 2])])
def test_all_reduces_the_suite_adds_per_step_under_fsdp2(tmp_path, bare_comms, suite, expected):
    """torch's CommDebugMode, batches 2-5 (no logging step). The gradient pass: one all_reduce per
    step; step 3 (batch 3) measures update ratios: one more. Acting, InputSanityChecker's agreed
    count of non-finite inputs adds one per step (as under DDP)."""
    counts = {suite: _comms(tmp_path, suite), "bare": bare_comms}
    added = [with_suite["total"] - bare["total"] for with_suite, bare in zip(counts[suite], counts["bare"])]
    assert added == expected, added
    assert all(set(c["by_op"]) - set(b["by_op"]) <= {"c10d.allreduce_"} for c, b in zip(counts[suite], counts["bare"]))
