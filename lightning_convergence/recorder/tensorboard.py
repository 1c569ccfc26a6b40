"""Writers for the Trainer's loggers: scalars to every logger, text, histograms and the
custom-scalars layout to TensorBoard only. None of them ever crashes on an empty or non-finite
value: such values are dropped before they reach a writer.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
from lightning.pytorch import Trainer
from lightning.pytorch.loggers import TensorBoardLogger
from tensorboard.compat.proto.summary_pb2 import Summary
from torch.utils.tensorboard import SummaryWriter

from lightning_convergence import tags
from lightning_convergence.recorder.records import Diagnosis


def custom_scalars_layout() -> dict[str, dict[str, list]]:
    """The TensorBoard custom-scalars layout that groups the suite's panels (from ``tags``)."""
    return {
        group: {panel.title: ["Multiline", panel.patterns()] for panel in panels}
        for group, panels in tags.PANEL_GROUPS
    }


def tensorboard_writers(trainer: Trainer) -> list:
    """The ``SummaryWriter`` of every TensorBoardLogger of ``trainer`` (possibly none)."""
    return [logger.experiment for logger in trainer.loggers if isinstance(logger, TensorBoardLogger)]


def finite_metrics(metrics: Mapping[str, float]) -> dict[str, float]:
    """Drop values that are not finite numbers (a logger must never see NaN from us)."""
    return {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and math.isfinite(v)}


def log_scalars(trainer: Trainer, metrics: Mapping[str, float], step: int) -> None:
    """Send scalars to every logger of ``trainer`` in one call each (rank 0 only).

    A TensorBoard logger without a prefix gets them as one event holding every value (one
    ``Summary`` with a value per tag), which TensorBoard reads as the same scalars that
    ``add_scalar`` writes one event each: about 0.15 ms for 207 scalars against 7.5 ms
    (``benchmarks/results/overhead.md``). Other loggers get ``log_metrics``.
    """
    clean = finite_metrics(metrics)
    if not clean or not trainer.is_global_zero:
        return
    for key in clean:
        assert tags.is_suite_tag(key), f"metric key {key!r} is outside {tags.ROOT!r}"
    for logger in trainer.loggers:
        if not _write_one_event(logger, clean, step):
            logger.log_metrics(clean, step=step)


def log_scalar_series(trainer: Trainer, tag: str, points: Sequence[tuple[int, float]]) -> None:
    """Send one scalar at several steps (a per-step trace written on a logging step), rank 0 only.

    The same events as one :func:`log_scalars` call per point, with the checks made once per
    series: a trace of 49 steps spent about a third of its time in them. Non-finite values are
    dropped.
    """
    assert tags.is_suite_tag(tag), f"metric key {tag!r} is outside {tags.ROOT!r}"
    if not trainer.is_global_zero:
        return
    clean = [(step, float(v)) for step, v in points if isinstance(v, (int, float)) and math.isfinite(v)]
    for logger in trainer.loggers if clean else ():
        writer = _event_writer(logger)
        for step, value in clean:
            if writer is None:
                logger.log_metrics({tag: value}, step=step)
            else:
                writer.add_summary(Summary(value=[Summary.Value(tag=tag, simple_value=value)]), step)


def _write_one_event(logger: object, metrics: dict[str, float], step: int) -> bool:
    """Write ``metrics`` as one TensorBoard event; ``False`` (nothing written) when ``logger`` has
    no :func:`_event_writer`."""
    writer = _event_writer(logger)
    if writer is None:
        return False
    writer.add_summary(Summary(value=[Summary.Value(tag=tag, simple_value=value) for tag, value in metrics.items()]),
                       step)
    return True


def _event_writer(logger: object):
    """The file writer of ``logger``'s torch ``SummaryWriter`` (what every ``add_*`` writes
    through), or ``None`` when ``logger`` is not a TensorBoardLogger, has a prefix to add, or
    writes through another writer (tensorboardX's takes its own protos)."""
    if not isinstance(logger, TensorBoardLogger) or getattr(logger, "_prefix", None) != "":
        return None
    experiment = logger.experiment
    file_writer = getattr(experiment, "_get_file_writer", None)
    if not isinstance(experiment, SummaryWriter) or file_writer is None:
        return None
    return file_writer()


def write_layout(trainer: Trainer) -> None:
    """Write the custom-scalars layout to every TensorBoard writer (rank 0 only)."""
    if not trainer.is_global_zero:
        return
    for writer in tensorboard_writers(trainer):
        writer.add_custom_scalars(custom_scalars_layout())


def write_diagnosis_text(trainer: Trainer, diagnosis: Diagnosis) -> None:
    """Write one diagnosis as markdown text to TensorBoard (rank 0 only)."""
    if not trainer.is_global_zero:
        return
    where = f" in `{diagnosis.layer}`" if diagnosis.layer else ""
    text = (
        f"**{diagnosis.severity}: {diagnosis.kind}**{where} (step {diagnosis.step}, "
        f"from {diagnosis.source})\n\n{diagnosis.message}"
    )
    for writer in tensorboard_writers(trainer):
        writer.add_text(tags.DIAGNOSES, text, global_step=diagnosis.step)


def write_text(trainer: Trainer, tag: str, text: str, step: int = 0) -> None:
    """Write markdown ``text`` under the suite's ``tag`` to TensorBoard (rank 0 only)."""
    assert tags.is_suite_tag(tag), f"text tag {tag!r} is outside {tags.ROOT!r}"
    if not trainer.is_global_zero:
        return
    for writer in tensorboard_writers(trainer):
        writer.add_text(tag, text, global_step=step)


def write_histograms(trainer: Trainer, tensors: Mapping[str, torch.Tensor], step: int) -> None:
    """Write value histograms (finite values only; empty ones skipped) to TensorBoard."""
    writers = tensorboard_writers(trainer)
    if not writers or not trainer.is_global_zero:
        return
    for tag, values in tensors.items():
        flat = values.detach().reshape(-1).float().cpu()
        flat = flat[torch.isfinite(flat)]
        if flat.numel() == 0:
            continue
        for writer in writers:
            writer.add_histogram(tag, flat, global_step=step)
