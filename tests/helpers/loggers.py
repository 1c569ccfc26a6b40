"""A logger that keeps what it is sent, for tests that compare logged values."""

from __future__ import annotations

from lightning.pytorch.loggers.logger import Logger


class MemoryLogger(Logger):
    def __init__(self, save_dir: str):
        super().__init__()
        self._save_dir = save_dir
        self.metrics: list[tuple[int, dict[str, float]]] = []

    @property
    def name(self) -> str:
        return "memory"

    @property
    def version(self) -> int:
        return 0

    @property
    def save_dir(self) -> str:
        return self._save_dir

    def log_metrics(self, metrics, step=None):
        self.metrics.append((step, dict(metrics)))

    def log_hyperparams(self, params, *args, **kwargs):
        pass

    def series(self, key: str) -> list[tuple[int, float]]:
        return [(step, m[key]) for step, m in self.metrics if key in m]
