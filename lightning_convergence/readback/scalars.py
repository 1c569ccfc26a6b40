"""Scalars from a run folder's TensorBoard event files, read with tensorboard's own reader."""

from __future__ import annotations

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

Series = list[tuple[int, float]]

# 0 keeps every scalar; the rest is not used here, so keep as little of it as the reader allows.
_SIZE_GUIDANCE = {"scalars": 0, "histograms": 1, "compressedHistograms": 1, "images": 1, "audio": 1,
                  "tensors": 1}


def read_scalars(run_folder: str) -> dict[str, Series]:
    """Every scalar tag of the event files directly in ``run_folder``, as ``(step, value)`` pairs.

    All event files of the folder are read (a resumed run writes a second one). When one step of
    a tag was written more than once (a run restarted into the same folder), the value written
    last wins, so each series has one value per step, sorted by step. Non-finite values are kept:
    a NaN loss is part of the story.

    Args:
        run_folder: a folder holding ``events.out.tfevents.*`` files (none gives ``{}``).

    Example:
        >>> import tempfile
        >>> from torch.utils.tensorboard import SummaryWriter
        >>> with tempfile.TemporaryDirectory() as folder:
        ...     with SummaryWriter(folder) as writer:
        ...         for step, loss in enumerate([2.0, 1.5, 1.0]):
        ...             writer.add_scalar("train_loss", loss, step)
        ...     read_scalars(folder)
        {'train_loss': [(0, 2.0), (1, 1.5), (2, 1.0)]}
    """
    accumulator = EventAccumulator(run_folder, size_guidance=_SIZE_GUIDANCE)
    accumulator.Reload()
    series: dict[str, Series] = {}
    for tag in sorted(accumulator.Tags()["scalars"]):
        latest: dict[int, tuple[float, float]] = {}  # step -> (wall time, value)
        for event in accumulator.Scalars(tag):
            if event.step not in latest or event.wall_time >= latest[event.step][0]:
                latest[event.step] = (event.wall_time, float(event.value))
        series[tag] = [(step, value) for step, (_, value) in sorted(latest.items())]
    return series
