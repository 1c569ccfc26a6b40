"""Run folders are found at any depth, in order; missing and empty paths are clear errors."""

import pytest

from lightning_convergence.readback import RunFolderError, find_run_folders
from lightning_convergence.readback.discovery import is_run_folder


def test_one_run_folder_is_itself(watched_run):
    assert find_run_folders(str(watched_run)) == [str(watched_run)]


def test_a_folder_of_runs_gives_each_run_sorted(runs_dir, watched_run, unwatched_run):
    assert find_run_folders(str(runs_dir)) == [str(watched_run), str(unwatched_run)]


@pytest.mark.parametrize("marker", ["convergence_report.json", "events.out.tfevents.123.host.1.0"])
def test_either_a_report_or_event_files_make_a_run(tmp_path, marker):
    (tmp_path / "deep" / "run").mkdir(parents=True)
    (tmp_path / "deep" / "run" / marker).write_text("")
    (tmp_path / "deep" / "run" / "checkpoints").mkdir()  # not a run: nothing of ours in it
    assert find_run_folders(str(tmp_path)) == [str(tmp_path / "deep" / "run")]
    assert not is_run_folder(str(tmp_path / "deep"))


def test_missing_folder(tmp_path):
    with pytest.raises(RunFolderError, match=r"nope: no such folder$"):
        find_run_folders(str(tmp_path / "nope"))


def test_a_file_is_not_a_folder(tmp_path):
    (tmp_path / "convergence_report.json").write_text("{}")
    with pytest.raises(RunFolderError, match="not a folder"):
        find_run_folders(str(tmp_path / "convergence_report.json"))


def test_empty_folder_names_what_was_looked_for(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "hparams.yaml").write_text("{}")
    with pytest.raises(RunFolderError) as error:
        find_run_folders(str(tmp_path))
    assert str(error.value).startswith(str(tmp_path))
    assert "convergence_report.json" in str(error.value) and "events.out.tfevents" in str(error.value)
