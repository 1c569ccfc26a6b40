"""Reading real TensorBoard event files back with tensorboard's own reader."""

from __future__ import annotations

import glob
import os

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator


def load_events(log_dir: str) -> EventAccumulator:
    files = glob.glob(os.path.join(log_dir, "**", "events.out.tfevents.*"), recursive=True)
    assert files, f"no event files under {log_dir}"
    accumulator = EventAccumulator(os.path.dirname(files[0]), size_guidance={"scalars": 0, "tensors": 0,
                                                                             "histograms": 0})
    accumulator.Reload()
    return accumulator


def scalar_tags(accumulator: EventAccumulator) -> list[str]:
    return accumulator.Tags()["scalars"]


def scalar_steps(accumulator: EventAccumulator, tag: str) -> list[int]:
    return [event.step for event in accumulator.Scalars(tag)]
