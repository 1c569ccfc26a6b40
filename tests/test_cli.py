"""The main job, ``lightning-convergence demo``, run as a user runs it."""

import json
import logging
import shutil
import subprocess

import pytest

from lightning_convergence.cli import main


@pytest.mark.slow
def test_demo_runs_and_explains(tmp_path, capsys):
    rank_zero = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    level = rank_zero.level
    assert main(["demo", "--out", str(tmp_path), "--epochs", "2"]) == 0
    assert rank_zero.level == level  # quiet while it ran, the caller's logging as it was afterwards
    out = capsys.readouterr().out
    assert "Diagnoses" in out and "Verdict: Without the suite:" in out
    assert f"tensorboard --logdir {tmp_path}" in out
    report = json.loads((tmp_path / "with_suite" / "version_0" / "convergence_report.json").read_text())
    assert report["version"] == 1 and report["summary"]["steps"] == 94
    assert list((tmp_path / "with_suite" / "version_0").glob("events.out.tfevents.*"))
    assert list((tmp_path / "without_suite" / "version_0").glob("events.out.tfevents.*"))
    assert not (tmp_path / "without_suite" / "version_0" / "convergence_report.json").exists()


def test_console_script_is_installed():
    exe = shutil.which("lightning-convergence")
    assert exe, "pip install -e . should put `lightning-convergence` on PATH"
    result = subprocess.run([exe, "demo", "--help"], capture_output=True, text=True, check=True)
    assert "--fault" in result.stdout and "--epochs" in result.stdout


def test_bad_epochs_is_a_clear_error(capsys):
    with pytest.raises(SystemExit):
        main(["demo", "--epochs", "0"])
    assert "--epochs" in capsys.readouterr().err
