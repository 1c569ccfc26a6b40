"""Figures are real PNGs, drawn only from what exists."""

import matplotlib.image

from lightning_convergence.readback import Run, load_run
from lightning_convergence.readback.plots import write_figure


def _image(path):
    image = matplotlib.image.imread(path)
    assert image.ndim == 3 and image.shape[0] > 200 and image.shape[1] > 500
    assert image.std() > 0.05  # not a blank canvas
    return image


def test_one_panel_per_kind_of_data(watched_run, unwatched_run, tmp_path):
    path = write_figure(load_run(str(watched_run)), str(tmp_path / "figures" / "run.png"))
    assert path == str(tmp_path / "figures" / "run.png")
    watched = _image(path)
    unwatched = _image(write_figure(load_run(str(unwatched_run)), str(tmp_path / "losses.png")))
    # four panels (loss, gradient norm, clipping, learning rate) against the loss alone
    assert 3 < watched.shape[0] / unwatched.shape[0] < 5


def test_non_finite_and_single_point_series_are_drawn(tmp_path):
    report = {"diagnoses": [{"kind": "nonfinite_loss", "severity": "critical", "step": 2, "message": "NaN."}],
              "interventions": [{"action": "stop", "step": 3, "detail": {}}], "summary": {"headline": "bad"}}
    run = Run("/x", "x", report, {"train_loss": [(0, 2.0), (1, 1.0), (2, float("nan")), (3, float("inf"))],
                                  "convergence/autoclip/threshold": [(1, 0.8)],
                                  "convergence/grad_norm/total": [(0, 0.0), (1, 1.0)]})
    _image(write_figure(run, str(tmp_path / "x.png")))


def test_nothing_to_plot_writes_nothing(tmp_path):
    run = Run("/x", "x", {"diagnoses": [], "interventions": [], "summary": {"headline": "h"}}, {})
    assert write_figure(run, str(tmp_path / "x.png")) is None
    assert not (tmp_path / "x.png").exists()
