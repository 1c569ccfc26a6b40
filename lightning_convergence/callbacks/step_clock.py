"""The step clock: where the current batch stands in optimizer steps, the one convention of the suite."""

from __future__ import annotations

from dataclasses import dataclass

@dataclass
class StepClock:
    """Where the current batch stands in optimizer steps: the one convention of the suite.

    Optimizer step ``k`` (0-based, ``trainer.global_step`` before it is taken) closes a logging
    window when ``(k + 1) % cadence == 0``. A batch's step is the optimizer step it fed: under
    ``accumulate_grad_batches`` the batches before the step belong to it too. Each window is
    closed once, however many hooks or batches ask.

    Example:
        >>> clock = StepClock()
        >>> closes = []
        >>> for global_step in range(6):  # one batch per optimizer step
        ...     clock.start_batch()
        ...     clock.stepped()
        ...     closes.append(clock.window_ends(global_step + 1, cadence=3))
        >>> closes
        [False, False, True, False, False, True]
    """

    optimizer_stepped: bool = False
    last_window_end: int = -1

    def start_batch(self) -> None:
        self.optimizer_stepped = False

    def stepped(self) -> None:
        self.optimizer_stepped = True

    @staticmethod
    def closes_window(step: int, cadence: int) -> bool:
        """Does optimizer step ``step`` (0-based) close a window?"""
        return (step + 1) % cadence == 0

    def batch_step(self, global_step: int) -> int:
        """The optimizer step of the batch ending now (``global_step`` read at batch end)."""
        return global_step - 1 if self.optimizer_stepped else global_step

    def window_ends(self, global_step: int, cadence: int) -> bool:
        """At batch end: did this batch's optimizer step close a window not closed yet?"""
        if not self.optimizer_stepped or not self.closes_window(global_step - 1, cadence):
            return False
        if global_step == self.last_window_end:
            return False
        self.last_window_end = global_step
        return True

    def state_dict(self) -> dict[str, int]:
        return {"last_window_end": self.last_window_end}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.last_window_end = int(state.get("last_window_end", -1))
