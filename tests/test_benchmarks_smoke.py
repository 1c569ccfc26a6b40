"""The benchmark scripts still run against the current package (tiny settings, outputs to tmp).

The numbers themselves are measured by running the scripts at their defaults; see
benchmarks/README.md. This only guards against a change in the package breaking them.
"""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(args, timeout=240):
    result = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    return result.stdout


@pytest.mark.slow
def test_autoclip_spikes_benchmark_runs(tmp_path):
    out = _run(["benchmarks/bench_autoclip_spikes.py", "--seeds", "1", "--epochs", "1",
                "--variants", "none,percentile,suite", "--out", str(tmp_path)])
    assert "Results over 1 seeds" in out
    assert (tmp_path / "autoclip_spikes.md").exists() and (tmp_path / "autoclip_spikes.png").exists()


@pytest.mark.slow
def test_warmup_benchmark_runs(tmp_path):
    out = _run(["benchmarks/bench_warmup.py", "--seeds", "1", "--epochs", "1", "--layers", "1",
                "--variants", "none,untuned", "--out", str(tmp_path)])
    assert "Results over 1 seeds" in out
    assert (tmp_path / "warmup.md").exists() and (tmp_path / "warmup.png").exists()


@pytest.mark.slow
def test_redo_benchmark_runs(tmp_path):
    # --quick: 1 seed, 3 epochs (141 steps): `neg bias` gets its first revival at step 99.
    out = _run(["benchmarks/bench_redo.py", "--quick", "--hidden", "32", "--scenarios", "healthy,neg bias",
                "--out", str(tmp_path)])
    assert "Results over 1 seeds" in out
    assert "ReDo acted" in out
    assert (tmp_path / "redo.md").exists() and (tmp_path / "redo.png").exists()


@pytest.mark.slow
def test_overhead_benchmark_imports_and_parses_its_arguments():
    out = _run(["benchmarks/bench_gradient_monitor.py", "--help"], timeout=60)
    assert "--quick" in out and "--init" in out


@pytest.mark.slow
def test_plateau_benchmark_runs(tmp_path):
    out = _run(["benchmarks/bench_plateau.py", "--quick", "--out", str(tmp_path)])
    assert "Results over 1 seeds" in out
    assert (tmp_path / "plateau.md").exists()


@pytest.mark.slow
def test_overhead_models_benchmark_runs(tmp_path):
    # One model, a few variants (the tracker's forward hooks, the recipe, the suite), a few steps;
    # one memory subprocess beside the bare one.
    out = _run(["benchmarks/bench_overhead_models.py", "--quick", "--models", "cnn",
                "--variants", "tracker,suite,recipe", "--memory-variants", "suite", "--out", str(tmp_path)],
               timeout=400)
    assert "target suite" in out and "[memory] cnn" in out
    assert (tmp_path / "overhead_models.md").exists() and (tmp_path / "overhead_models.json").exists()
    assert "not yet measured (no GPU available)" in (tmp_path / "overhead_models.md").read_text()
