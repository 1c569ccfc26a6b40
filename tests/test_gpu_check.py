"""benchmarks/gpu_check.py: its argument handling and its CPU fallback (the CUDA parts cannot run
here; they are reported as skipped with the reason, which is what these tests check)."""

import json

import pytest
import torch

from benchmarks import gpu_check


@pytest.mark.parametrize("argv, message", [
    (["--parts", "a,z"], "--parts must be a comma-separated subset"),
    (["--parts", ""], "--parts must be a comma-separated subset"),
    (["--time-limit", "0"], "--time-limit must be > 0"),
    (["--device", "tpu"], "invalid choice"),
])
def test_bad_arguments_are_named(argv, message, capsys):
    with pytest.raises(SystemExit):
        gpu_check.parse(argv)
    assert message in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal where there is no CUDA device")
def test_asking_for_cuda_without_one_is_refused(capsys):
    with pytest.raises(SystemExit):
        gpu_check.parse(["--device", "cuda"])
    assert "no CUDA device" in capsys.readouterr().err


def test_cpu_fallback_writes_json_and_markdown(tmp_path):
    results = gpu_check.main(["--device", "cpu", "--quick", "--parts", "a,b,c,e", "--out", str(tmp_path)])
    parts = results["parts"]
    assert parts["a"]["status"] == parts["c"]["status"] == "skipped"
    assert parts["a"]["reason"] == "needs a CUDA device"
    assert parts["b"]["status"] == "ok" and parts["b"]["worst_relative_error"] <= 1e-3
    assert parts["e"]["kinds"] == ["dead_units", "nonfinite_inputs"]
    assert json.load(open(tmp_path / "gpu_check.json"))["parts"].keys() == parts.keys()
    assert "| b | ok |" in (tmp_path / "gpu_check.md").read_text()


def test_a_part_that_fails_keeps_the_others(tmp_path, monkeypatch):
    def broken(device, quick):
        raise RuntimeError("out of memory")

    monkeypatch.setitem(gpu_check.RUNNERS, "b", broken)
    results = gpu_check.main(["--device", "cpu", "--quick", "--parts", "b,e", "--out", str(tmp_path)])
    assert results["parts"]["b"] == {"status": "error", "reason": "RuntimeError: out of memory",
                                     "seconds": results["parts"]["b"]["seconds"]}
    assert results["parts"]["e"]["status"] == "ok"


def test_the_gpt_has_about_125m_parameters():
    with torch.device("meta"):  # no memory
        model = gpu_check.GPT()
    assert 120e6 < sum(p.numel() for p in model.parameters()) < 130e6
