"""The report is read as written; a corrupt, foreign or other-version report is a clear error."""

import json

import pytest

from lightning_convergence.recorder import REPORT_VERSION, ConvergenceLog, Diagnosis, Intervention
from lightning_convergence.readback import RunFolderError, read_report


def _write(tmp_path, content) -> str:
    path = tmp_path / "convergence_report.json"
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return str(path)


def test_reads_what_the_log_writes(tmp_path):
    log = ConvergenceLog()
    log.add_diagnosis(Diagnosis("plateau", "warning", 7, 0, "PlateauAdvisor", "Flat. Try this."))
    log.add_intervention(Intervention("lr_scale", 7, "PlateauAdvisor", {"factor": [0.5]}))
    path = log.write_json(str(tmp_path), steps=10)
    assert read_report(path) == json.loads(open(path).read())


def test_reads_a_real_report(watched_run):
    report = read_report(str(watched_run / "convergence_report.json"))
    assert report["version"] == REPORT_VERSION and report["diagnoses"] and report["interventions"]


def test_invalid_json(tmp_path):
    path = _write(tmp_path, '{"version": 1, "diagnoses": [')
    with pytest.raises(RunFolderError, match="corrupt report, invalid JSON") as error:
        read_report(path)
    assert str(error.value).startswith(path)


@pytest.mark.parametrize("version", [2, 0, "1", None, True])
def test_other_versions_say_found_and_supported(tmp_path, version):
    path = _write(tmp_path, {"version": version, "diagnoses": [], "interventions": [], "summary": {"headline": "x"}})
    with pytest.raises(RunFolderError) as error:
        read_report(path)
    message = str(error.value)
    assert message.startswith(path)
    assert f"version {version!r} found" in message and "reads version 1 only" in message


@pytest.mark.parametrize("content, says", [
    ([1, 2], "expected a JSON object"),
    ({"version": 1, "diagnoses": {}, "interventions": [], "summary": {"headline": "x"}}, "`diagnoses` must be a list"),
    ({"version": 1, "diagnoses": [{"kind": "plateau"}], "interventions": [], "summary": {"headline": "x"}},
     "diagnoses[0] lacks ['severity', 'step', 'message']"),
    ({"version": 1, "diagnoses": [], "interventions": [{"step": 3}], "summary": {"headline": "x"}},
     "interventions[0] lacks ['action']"),
    ({"version": 1, "diagnoses": [], "interventions": []}, "`summary` must be an object"),
])
def test_wrong_shape(tmp_path, content, says):
    with pytest.raises(RunFolderError) as error:
        read_report(_write(tmp_path, content))
    assert says in str(error.value)
