"""``lightning-convergence report`` as a user runs it, through ``cli.main``."""

import json

import matplotlib.image
import pytest

from lightning_convergence.cli import main
from lightning_convergence.readback.formats import NO_PLOT
from lightning_convergence.readback.run import NOT_WATCHED


def _valid_png(path) -> None:
    image = matplotlib.image.imread(str(path))
    assert image.shape[0] > 200 and image.shape[1] > 500 and image.std() > 0.05


def test_one_watched_run_prints_its_timeline_and_writes_its_figure(watched_run, capsys):
    assert main(["report", str(watched_run)]) == 0
    out = capsys.readouterr().out
    report = json.loads((watched_run / "convergence_report.json").read_text())
    assert "severity/action" in out and f"Summary: {report['summary']['headline']}" in out
    assert all(d["kind"] in out for d in report["diagnoses"])
    assert all(f"  {i['action']}  " in out for i in report["interventions"])
    figure = watched_run / "convergence_plots.png"
    assert f"Plot: {figure}" in out
    _valid_png(figure)


def test_a_folder_of_runs_reports_both(runs_dir, capsys):
    assert main(["report", str(runs_dir)]) == 0
    out = capsys.readouterr().out
    assert "== with_suite/version_0" in out and "== without_suite/version_0" in out
    assert out.index("with_suite/version_0") < out.index("without_suite/version_0")
    for name in ("with_suite", "without_suite"):
        _valid_png(runs_dir / name / "version_0" / "convergence_plots.png")


def test_a_run_without_the_suite_says_so_and_still_plots_the_losses(unwatched_run, capsys):
    assert main(["report", str(unwatched_run)]) == 0
    out = capsys.readouterr().out
    assert NOT_WATCHED in out and "Summary:" not in out and "Last values: train_loss" in out
    _valid_png(unwatched_run / "convergence_plots.png")


def test_json_parses_and_matches_the_report(runs_dir, tmp_path, capsys):
    out_dir = tmp_path / "figures"
    assert main(["report", str(runs_dir), "--format", "json", "--out", str(out_dir)]) == 0
    document = json.loads(capsys.readouterr().out)
    watched, unwatched = document["runs"]
    report = json.loads((runs_dir / "with_suite" / "version_0" / "convergence_report.json").read_text())
    assert watched["diagnoses"] == report["diagnoses"] and watched["interventions"] == report["interventions"]
    assert watched["summary"]["headline"] == report["summary"]["headline"]
    assert unwatched["watched"] is False
    assert watched["plot"] == str(out_dir / "with_suite-version_0.png")
    assert unwatched["plot"] == str(out_dir / "without_suite-version_0.png")
    for entry in (watched, unwatched):
        _valid_png(entry["plot"])
    assert not (runs_dir / "with_suite" / "version_0" / "convergence_plots.png").exists()


def test_markdown(watched_run, capsys):
    assert main(["report", str(watched_run), "--format", "markdown"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("# Convergence report") and "|---:|---|---|---|---|" in out


def test_a_report_without_event_files_prints_without_a_figure(watched_run, capsys):
    for events in watched_run.glob("events.out.tfevents.*"):
        events.unlink()
    assert main(["report", str(watched_run)]) == 0
    out = capsys.readouterr().out
    assert "Summary:" in out and f"Plot: {NO_PLOT}" in out
    assert not (watched_run / "convergence_plots.png").exists()


def _error(argv, capsys) -> str:
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""  # nothing half-reported
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("lightning-convergence report: error: ")
    return lines[0]


def test_missing_folder(tmp_path, capsys):
    assert f"{tmp_path / 'nope'}: no such folder" in _error(["report", str(tmp_path / "nope")], capsys)


def test_empty_folder(tmp_path, capsys):
    message = _error(["report", str(tmp_path)], capsys)
    assert str(tmp_path) in message and "no convergence_report.json and no TensorBoard event files" in message


def test_corrupt_report_anywhere_stops_everything(runs_dir, capsys):
    path = runs_dir / "with_suite" / "version_0" / "convergence_report.json"
    path.write_text(path.read_text()[:50])
    message = _error(["report", str(runs_dir)], capsys)
    assert f"{path}: corrupt report, invalid JSON" in message


def test_report_of_another_version(watched_run, capsys):
    path = watched_run / "convergence_report.json"
    report = json.loads(path.read_text())
    path.write_text(json.dumps(report | {"version": 2}))
    message = _error(["report", str(watched_run)], capsys)
    assert f"{path}: report version 2 found; this lightning-convergence reads version 1 only" in message


def test_bad_format_is_an_argparse_error(watched_run, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["report", str(watched_run), "--format", "html"])
    assert exit_.value.code == 2 and "--format" in capsys.readouterr().err
