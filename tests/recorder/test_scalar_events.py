"""The suite's scalars reach TensorBoard as one event per call, read back as the same scalars."""

import glob
import math
import os

import lightning as L
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

from lightning_convergence.readback import read_scalars
from lightning_convergence.recorder.tensorboard import log_scalars
from tests.helpers.tensorboard import load_events

METRICS = {"convergence/grad_norm/total": 2.5, "convergence/grad_norm/layer/fc1": 1e-30,
           "convergence/autoclip/norm": 3e38, "convergence/lr_factor/plateau_advisor": 0.1,
           "convergence/loss/train_ema": float("nan")}  # non-finite: dropped before any writer


def _written(tmp_path, name, prefix="", write=log_scalars):
    logger = TensorBoardLogger(str(tmp_path), name=name, version=0, prefix=prefix)
    trainer = L.Trainer(logger=[logger, CSVLogger(str(tmp_path), name=f"{name}_csv", version=0)],
                        accelerator="cpu", enable_progress_bar=False, enable_model_summary=False)
    for step in (0, 50):
        write(trainer, {k: v * (step + 1) for k, v in METRICS.items()}, step)
    logger.experiment.flush()
    for each in trainer.loggers:
        each.save()
    return logger.log_dir


def _through_lightning(trainer, metrics, step):
    """What Lightning's own ``log_metrics`` writes: one event per scalar."""
    clean = {k: v for k, v in metrics.items() if math.isfinite(v)}
    for logger in trainer.loggers:
        logger.log_metrics(clean, step=step)


def test_one_event_per_call_reads_back_as_lightnings_scalars(tmp_path):
    ours = read_scalars(_written(tmp_path, "ours"))
    lightnings = read_scalars(_written(tmp_path, "lightning", write=_through_lightning))
    assert ours == lightnings
    assert sorted(ours) == sorted(k for k in METRICS if k != "convergence/loss/train_ema")
    assert ours["convergence/grad_norm/total"] == [(0, 2.5), (50, 2.5 * 51)]


def test_the_scalars_of_a_call_share_one_event_for_tensorboards_reader(tmp_path):
    log_dir = _written(tmp_path, "ours")
    (path,) = glob.glob(os.path.join(log_dir, "events.out.tfevents.*"))
    events = [e for e in EventFileLoader(path).Load() if e.HasField("summary")]
    assert [(e.step, len(e.summary.value)) for e in events] == [(0, 4), (50, 4)]
    accumulator = load_events(log_dir)  # tensorboard's own reader sees every tag of each event
    assert len(accumulator.Tags()["scalars"]) == 4
    assert [e.step for e in accumulator.Scalars("convergence/autoclip/norm")] == [0, 50]


def test_a_logger_with_a_prefix_and_other_loggers_get_lightnings_log_metrics(tmp_path):
    scalars = read_scalars(_written(tmp_path, "prefixed", prefix="run1"))
    assert sorted(scalars) == sorted(f"run1-{k}" for k in METRICS if k != "convergence/loss/train_ema")
    csv = (tmp_path / "ours_csv" / "version_0" / "metrics.csv")
    _written(tmp_path, "ours")
    header = csv.read_text().splitlines()[0].split(",")
    assert "convergence/grad_norm/total" in header and "step" in header


def test_a_series_writes_the_events_of_one_call_per_point(tmp_path):
    # The per-step trace: one event per step, as one log_scalars call per point writes, to
    # TensorBoard and to the other loggers; non-finite points dropped.
    from lightning_convergence.recorder.tensorboard import log_scalar_series

    tag = "convergence/grad_norm/total"
    points = [(3, 1.5), (4, float("nan")), (5, 0.25), (6, float("inf")), (7, 1024.0)]  # float32-exact

    def series(trainer, metrics, step):
        if step == 0:
            log_scalar_series(trainer, tag, points)

    def one_by_one(trainer, metrics, step):
        if step == 0:
            for at, value in points:
                log_scalars(trainer, {tag: value}, at)

    ours, reference = (_written(tmp_path, name, write=write) for name, write in (("series", series),
                                                                                  ("calls", one_by_one)))
    assert read_scalars(ours) == read_scalars(reference) == {tag: [(3, 1.5), (5, 0.25), (7, 1024.0)]}
    for prefix in ("", "p"):
        assert read_scalars(_written(tmp_path, f"series_{prefix or 0}", prefix=prefix, write=series)) == {
            f"{prefix}-{tag}" if prefix else tag: [(3, 1.5), (5, 0.25), (7, 1024.0)]}
    rows = (tmp_path / "series_csv" / "version_0" / "metrics.csv").read_text().splitlines()
    assert len(rows) == 4 and sorted(rows[0].split(",")) == sorted(["step", tag])
