"""Tensor parallelism (2 processes), HSDP and FSDP+TP (4 processes) on gloo (CPU) under Lightning's
ModelParallelStrategy: the gradient norms GradientNormMonitor reports (total and per layer, every
step, every rank) equal those of the same model trained in one process on the same global batch,
to 1e-5 relative. So each DTensor's local sum of squares is weighted exactly (``Shard``,
``Replicate`` on a mesh dimension, a 1-D sub-mesh of a 2-D mesh, and plain tensors in a sharded
run; see ``lightning_convergence/stats/sharding.py``).

The sharded runs are fresh interpreters (``tests/integration/_mesh_runs.py``) with a subprocess
timeout, so a hang fails; the one-process reference runs here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.distributed

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TIMEOUT_S = 300  # about 20 s (2 processes) and 45 s (4 processes, two fits) on 2 busy cores
TOLERANCE = 1e-5
GRAD_TAGS = ("convergence/grad_norm/", "convergence/grad_max_abs/", "convergence/weight_norm/")


def _launch(out, layouts: str) -> None:
    result = subprocess.run([sys.executable, "-m", "tests.integration._mesh_runs", layouts, str(out)], cwd=ROOT,
                            capture_output=True, text=True, timeout=TIMEOUT_S, env={**os.environ, "PYTHONPATH": ROOT})
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]


def _relative(a: float, b: float) -> float:
    return abs(a - b) / max(abs(b), 1e-30)


def _check_against_unsharded(out, layout: str) -> float:
    """Every rank's per-step total and per-layer norms (the shared pass), rank 0's logged gradient
    norms, max |grad| and weight norms, and the final weights, against one process on the
    layout's global batch. Returns the worst relative error."""
    from tests.integration._mesh_runs import BATCH, LAYOUTS, fit

    processes, data_parallel, _ = LAYOUTS[layout]
    reference_dir = out / f"reference_{layout}"
    reference_dir.mkdir()
    whole = fit(None, str(reference_dir), BATCH * data_parallel)
    ranks = [json.load(open(out / f"{layout}_rank{r}.json")) for r in range(processes)]
    assert all(r["world_size"] == processes and r["global_step"] == whole["global_step"] == 4 for r in ranks)
    worst = 0.0
    for rank in ranks:
        assert len(rank["steps"]) == len(whole["steps"]) == 4
        for sharded, single in zip(rank["steps"], whole["steps"]):
            worst = max(worst, _relative(sharded["total"], single["total"]))
            assert sharded["layers"].keys() == single["layers"].keys() == {"net.0", "net.2", "net.4"}
            for layer, norm in single["layers"].items():
                worst = max(worst, _relative(sharded["layers"][layer], norm))
    logged = [(step, {k: v for k, v in m.items() if k.startswith(GRAD_TAGS)}) for step, m in ranks[0]["logged"]]
    expected = [(step, {k: v for k, v in m.items() if k.startswith(GRAD_TAGS)}) for step, m in whole["logged"]]
    assert [s for s, _ in logged] == [s for s, _ in expected]
    assert sum(len(m) for _, m in expected) >= 4 * 8  # 3 layers + total + max, 3 weight norms, every step
    for (_, got), (_, want) in zip(logged, expected):
        assert got.keys() == want.keys()
        for key, value in want.items():
            worst = max(worst, _relative(got[key], value))
    assert worst <= TOLERANCE, (layout, worst)
    weights_error = max(abs(a - b) for a, b in zip(ranks[0]["weights"], whole["weights"]))
    assert weights_error < 1e-5, weights_error
    assert all(r["records"] == ranks[0]["records"] for r in ranks)
    print(f"{layout}: worst relative error {worst:.2e}, final weights within {weights_error:.2e}")
    return worst


def test_tensor_parallel_norms_equal_one_process(tmp_path):
    """2 processes, 1-D mesh: column-parallel (Shard(0)), row-parallel (weight Shard(1), bias
    Replicate: counted once of 2 copies) and a plain head (a full copy on each rank)."""
    _launch(tmp_path, "tp")
    _check_against_unsharded(tmp_path, "tp")
    layout = json.load(open(tmp_path / "tp_rank0.json"))["layout"]
    assert layout["net.0.weight"]["placements"] == ["Shard(dim=0)"]
    assert layout["net.2.weight"]["placements"] == ["Shard(dim=1)"]
    assert layout["net.2.bias"]["placements"] == ["Replicate()"] and layout["net.2.bias"]["copies"] == 2
    assert layout["net.4.weight"]["placements"] is None and layout["net.4.weight"]["copies"] == 2


@pytest.fixture(scope="module")
def four_process_runs(tmp_path_factory):
    """HSDP then FSDP+TP, one launch of 4 processes (the interpreters start once)."""
    out = tmp_path_factory.mktemp("mesh4")
    _launch(out, "hsdp,fsdp_tp")
    return out


def test_hsdp_norms_equal_one_process(four_process_runs):
    """4 processes, a (replicate=2, shard=2) mesh: every parameter (Replicate(), Shard(0)), 2 copies."""
    _check_against_unsharded(four_process_runs, "hsdp")
    layout = json.load(open(four_process_runs / "hsdp_rank0.json"))["layout"]
    assert all(p["placements"] == ["Replicate()", "Shard(dim=0)"] and p["mesh"] == [2, 2] and p["copies"] == 2
               for p in layout.values()), layout


def test_fsdp_tp_norms_equal_one_process(four_process_runs):
    """4 processes, a (data_parallel=2, tensor_parallel=2) mesh: 2-D placements, the row-parallel
    bias replicated on the tensor-parallel dimension (2 copies), the plain head a DTensor on the
    data-parallel sub-mesh (held once per tensor-parallel rank: 2 copies)."""
    _check_against_unsharded(four_process_runs, "fsdp_tp")
    layout = json.load(open(four_process_runs / "fsdp_tp_rank0.json"))["layout"]
    assert layout["net.2.weight"]["placements"] == ["Shard(dim=0)", "Shard(dim=1)"]
    assert layout["net.2.weight"]["copies"] == 1 and layout["net.0.weight"]["copies"] == 1
    assert layout["net.2.bias"]["placements"] == ["Shard(dim=0)", "Replicate()"] and layout["net.2.bias"]["copies"] == 2
    assert layout["net.4.weight"]["mesh"] == [2] and layout["net.4.weight"]["copies"] == 2
