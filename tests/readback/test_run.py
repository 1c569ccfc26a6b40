"""Runs load with their report and scalars, named relative to the path the user gave."""

import subprocess
import sys

from lightning_convergence.readback import load_run, load_runs
from lightning_convergence.readback.run import NOT_WATCHED, Run


def test_runs_are_named_relative_to_the_logdir(runs_dir, watched_run):
    assert [run.name for run in load_runs(str(runs_dir))] == ["with_suite/version_0", "without_suite/version_0"]
    assert [run.name for run in load_runs(str(watched_run))] == ["version_0"]
    assert [run.path for run in load_runs(str(watched_run))] == [str(watched_run)]


def test_watched_and_unwatched(watched_run, unwatched_run):
    watched, unwatched = load_run(str(watched_run)), load_run(str(unwatched_run))
    assert watched.watched and watched.headline == watched.report["summary"]["headline"]
    assert not unwatched.watched and unwatched.report is None and unwatched.headline == NOT_WATCHED
    assert "train_loss" in unwatched.scalars and "convergence/grad_norm/total" not in unwatched.scalars


def test_last_values_are_the_users_own_scalars():
    run = Run("/r", "r", None, {"train_loss": [(0, 2.0), (4, float("nan"))], "epoch": [(4, 0.0)],
                                "hp_metric": [(0, -1.0)], "convergence/grad_norm/total": [(4, 1.0)],
                                "val_acc": [(3, 0.5)], "empty": []})
    values = run.last_values()
    assert sorted(values) == ["train_loss", "val_acc"] and values["val_acc"] == (3, 0.5)
    assert values["train_loss"][0] == 4  # a final NaN is how the run ended


def test_reading_a_report_needs_neither_lightning_nor_torch():
    code = ("import sys, lightning_convergence.readback.command; "
            "bad = [m for m in sys.modules if m in ('lightning', 'torch') or m.startswith('lightning.')]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)
