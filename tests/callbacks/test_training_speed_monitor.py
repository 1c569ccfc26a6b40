"""TrainingSpeedMonitor from Trainer.fit down. Every timing here is on an injected clock that only
the test's model, data and logger move, so the machine's load changes nothing; one test uses real
time with a margin of about 100x (a 0.5 s worker start against steps of milliseconds)."""

from __future__ import annotations

import gc
import math
import time

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger
from torch.utils.data import DataLoader, Dataset

from lightning_convergence import DataLoadingMonitor, TrainingSpeedMonitor, default_callbacks
from lightning_convergence.rules.wall_time import SpeedThresholds
from tests.helpers.models import DigitsMLP, digits_tensors, trainer_kwargs


class FakeClock:
    """Wall and process-CPU seconds that move only when told (by default the process runs the
    whole time: CPU time moves with the wall)."""

    def __init__(self):
        self.wall, self.cpu = 0.0, 0.0

    def advance(self, wall, cpu=None):
        self.wall += wall
        self.cpu += wall if cpu is None else cpu

    def now(self):
        return self.wall

    def cpu_now(self):
        return self.cpu


class TimedDigits(Dataset):
    def __init__(self, clock, n, fetch_s_per_sample, cpu_share=1.0):
        self.x, self.y = digits_tensors(n)
        self.clock, self.fetch_s, self.cpu_share = clock, fetch_s_per_sample, cpu_share

    def __len__(self):
        return len(self.x)

    def __getitem__(self, index):
        self.clock.advance(self.fetch_s, self.cpu_share * self.fetch_s)
        return self.x[index], self.y[index]


class Timed(DigitsMLP):
    """DigitsMLP whose data, steps and validation cost what the test says, on ``clock``."""

    def __init__(self, clock, fetch_s=1e-5, compute_s=0.002, cpu_share=1.0, val_s=0.0, n=512, workers=0,
                 persistent=False, **kwargs):
        super().__init__(n=n, val=val_s > 0, **kwargs)
        self.clock, self.fetch_s, self.compute_s = clock, fetch_s, compute_s
        self.cpu_share, self.val_s = cpu_share, val_s
        self.workers, self.persistent = workers, persistent

    def training_step(self, batch, batch_idx):
        self.clock.advance(self.compute_s, self.cpu_share * self.compute_s)
        return super().training_step(batch, batch_idx)

    def validation_step(self, batch, batch_idx):
        self.clock.advance(self.val_s)
        return super().validation_step(batch, batch_idx)

    def train_dataloader(self):
        return DataLoader(TimedDigits(self.clock, self.n, self.fetch_s), batch_size=32, num_workers=self.workers,
                          persistent_workers=self.persistent)


def monitor_on(clock, **kwargs):
    return TrainingSpeedMonitor(clock=clock.now, cpu_clock=clock.cpu_now, **kwargs)


def fit(tmp_path, model, callbacks, **kwargs):
    L.seed_everything(0, verbose=False)
    trainer = L.Trainer(callbacks=callbacks, **trainer_kwargs(tmp_path, **{"logger": False, **kwargs}))
    trainer.fit(model)
    return trainer


def found(monitor, least="warning"):
    order = ["info", "warning", "critical"]
    return [d for d in monitor.records()["diagnoses"] if order.index(d["severity"]) >= order.index(least)]


def test_a_slow_loader_in_a_40_step_run_is_slow_data_loading(tmp_path):
    # The run: 128 ms waiting per batch, no logging window ever closes in 40 steps.
    clock = FakeClock()
    monitor = monitor_on(clock)
    fit(tmp_path, Timed(clock, fetch_s=0.004, n=1280), [monitor], log_every_n_steps=50)
    (d,) = found(monitor)
    assert d["kind"] == "slow_data_loading" and d["causes"][0]["cause"] == "data_loader_bottleneck"
    assert d["step"] == 39 and d["evidence"]["steps"] == 39  # the epoch's first batch is the loader starting
    assert d["evidence"]["fetch_ms"] == pytest.approx(128.0) and d["evidence"]["compute_ms"] == pytest.approx(2.0)
    assert d["evidence"]["num_workers"] == 0 and d["evidence"]["suggested_num_workers"] >= 2
    assert "num_workers" in d["message"]
    assert monitor.breakdown()["shares"]["fetch"] > 0.9


def test_a_healthy_run_gets_no_warning_and_its_time_is_accounted(tmp_path):
    clock = FakeClock()
    callbacks = default_callbacks(num_classes=10, TrainingSpeedMonitor={"clock": clock.now, "cpu_clock": clock.cpu_now})
    monitor = next(c for c in callbacks if isinstance(c, TrainingSpeedMonitor))
    fit(tmp_path, Timed(clock, compute_s=0.005, val_s=0.001, n=1024), callbacks, max_epochs=3)
    assert [d for c in callbacks for d in found(c)] == []
    breakdown = monitor.breakdown()
    assert breakdown["steps"] == 96 and breakdown["validations"] == 3
    # Every fake second is charged once: 96 steps of 5 ms, 1024 x 3 fetches of 10 us, 2 x 3 validation batches.
    wall = monitor.run_times().wall_s
    assert wall == pytest.approx(96 * 0.005 + 3 * 1024 * 1e-5 + 6 * 0.001)
    assert breakdown["shares"]["forward"] == pytest.approx(96 * 0.005 / wall, abs=1e-4)


def test_a_gc_pause_is_charged_to_gc_not_to_the_loader(tmp_path):
    # One 215 ms collection among 2 ms steps, inside 10-step windows (the false alarm).
    clock = FakeClock()

    def pause(phase, info):  # registered before the monitor's, so it runs first: the pause is seen
        if phase == "stop" and paused["now"]:
            clock.advance(0.215)

    paused = {"now": False}

    class Collecting(Timed):
        def train_dataloader(self):
            return DataLoader(Collected(self.clock, self.n, self.fetch_s), batch_size=32)

    class Collected(TimedDigits):
        def __getitem__(self, index):
            if index == 7 * 32 + 5:  # while fetching the batch of step 7
                paused["now"] = True
                gc.collect()
                paused["now"] = False
            return super().__getitem__(index)

    monitor = monitor_on(clock)
    gc.callbacks.insert(0, pause)
    try:
        fit(tmp_path, Collecting(clock, n=1280), [monitor], log_every_n_steps=10)
    finally:
        gc.callbacks.remove(pause)
    assert found(monitor, "info") == []
    assert monitor.breakdown()["shares"]["gc"] > 0.5 and monitor.breakdown()["shares"]["fetch"] < 0.05
    assert monitor._timeline.gc_callback not in gc.callbacks


def test_a_descheduled_process_is_not_blamed_on_the_loader(tmp_path):
    # Everything is slow and the process runs a fifth of the time: a busy machine, not a slow loader.
    clock = FakeClock()
    monitor = monitor_on(clock)
    fit(tmp_path, Timed(clock, fetch_s=0.002, compute_s=0.020, cpu_share=0.2, n=1280), [monitor],
        log_every_n_steps=50)
    assert found(monitor, "info") == []


def test_a_short_last_window_is_not_judged_alone(tmp_path):
    # Windows of 5 steps (the README's test cadence): a slow patch in the last 4 steps joins the
    # window before it, whose median it does not move.
    clock = FakeClock()

    class SlowAtTheEnd(TimedDigits):
        def __getitem__(self, index):
            if index >= 36 * 32:
                self.clock.advance(0.004)  # the last 4 batches: 128 ms more each
            return super().__getitem__(index)

    class Model(Timed):
        def train_dataloader(self):
            return DataLoader(SlowAtTheEnd(self.clock, self.n, self.fetch_s), batch_size=32)

    monitor = monitor_on(clock)
    fit(tmp_path, Model(clock, n=1280), [monitor], log_every_n_steps=5)
    assert found(monitor, "info") == []


def test_worker_restarts_at_each_epoch_are_data_loader_restarts(tmp_path):
    # Real workers (2, not persistent); each start of them costs 0.5 s on the injected clock.
    clock = FakeClock()

    class Restarting(DataLoader):
        def _get_iterator(self):
            clock.advance(0.5, 0.0)  # forking and initialising workers: the main process waits
            return super()._get_iterator()

    class Model(Timed):
        def train_dataloader(self):
            return Restarting(TimedDigits(self.clock, self.n, self.fetch_s), batch_size=32, num_workers=2,
                              persistent_workers=self.persistent)

    restarting, persistent = monitor_on(clock), monitor_on(clock)
    fit(tmp_path, Model(clock, n=256), [restarting], max_epochs=4)
    fit(tmp_path, Model(clock, n=256, persistent=True), [persistent], max_epochs=4)
    (d,) = found(restarting)
    assert d["kind"] == "slow_data_loading" and d["causes"][0]["cause"] == "data_loader_restarts"
    assert d["evidence"]["restart_ms_per_epoch"] == pytest.approx(500.0, abs=1.0)
    assert d["evidence"]["persistent_workers"] is False and "persistent_workers=True" in d["message"]
    assert found(persistent, "info") == []


def test_worker_start_up_in_real_time_is_data_loader_restarts(tmp_path):
    # Real time, a huge margin: each worker sleeps 0.5 s when it starts; a step takes milliseconds.
    class Model(DigitsMLP):
        def train_dataloader(self):
            x, y = digits_tensors(64)
            return DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=32, num_workers=2,
                              persistent_workers=False, worker_init_fn=lambda _: time.sleep(0.5))

    monitor = TrainingSpeedMonitor(thresholds=SpeedThresholds(min_steps=4))
    fit(tmp_path, Model(val=False), [monitor], max_epochs=4)
    kinds = [(d["kind"], d["causes"][0]["cause"]) for d in found(monitor)]
    assert ("slow_data_loading", "data_loader_restarts") in kinds
    assert monitor.breakdown()["shares"]["epoch_start"] > 0.5


def test_validation_that_costs_more_than_training_is_validation_too_frequent(tmp_path):
    clock = FakeClock()
    monitor = monitor_on(clock)
    fit(tmp_path, Timed(clock, val_s=0.1, n=256), [monitor], max_epochs=4)
    (d,) = found(monitor)
    assert d["kind"] == "slow_training" and d["causes"][0]["cause"] == "validation_too_frequent"
    # Judged from the second epoch on: said once, when it first showed (after 2 or 3 validations).
    # 100 ms of validation against 16 ms of training: validating ~90x less often would mean never
    # in a 4-epoch run, so the advice is a sample of the validation set.
    assert d["causes"][0]["evidence"]["validations"] >= 2 and "limit_val_batches=0.01" in d["message"]
    assert d["layer"] == "wall_time/overheads"


def test_logging_that_costs_more_than_training_is_logging_overhead(tmp_path):
    clock = FakeClock()

    class SlowLogger(CSVLogger):
        def log_metrics(self, metrics, step=None):
            clock.advance(0.02)
            super().log_metrics(metrics, step)

    monitor = monitor_on(clock, log_every_n_steps=25)
    fit(tmp_path, Timed(clock, n=1280), [monitor], logger=SlowLogger(tmp_path), log_every_n_steps=1)
    (d,) = [d for d in found(monitor) if d["kind"] == "slow_training"]
    assert d["causes"][0]["cause"] == "logging_overhead" and "log_every_n_steps=" in d["message"]


def test_checkpoints_that_cost_more_than_training_are_checkpointing_overhead(tmp_path):
    clock = FakeClock()

    class Saving(Timed):
        def on_save_checkpoint(self, checkpoint):
            clock.advance(0.05)

    monitor = monitor_on(clock)
    saver = ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=2, save_top_k=-1)
    fit(tmp_path, Saving(clock, n=1280), [monitor, saver], enable_checkpointing=True, log_every_n_steps=50)
    (d,) = found(monitor)
    assert d["kind"] == "slow_training" and d["causes"][0]["cause"] == "checkpointing_overhead"
    assert d["causes"][0]["evidence"]["checkpoints"] == 20


def test_scalars_go_under_convergence_speed_and_the_profiler_is_given_back(tmp_path):
    clock = FakeClock()
    monitor = monitor_on(clock, sequence_length=8)
    logger = CSVLogger(tmp_path)
    trainer = L.Trainer(callbacks=[monitor], profiler="simple",
                        **trainer_kwargs(tmp_path, logger=logger, max_epochs=1, log_every_n_steps=20))
    profiler = trainer.profiler
    trainer.fit(Timed(clock, n=1280))
    assert trainer.profiler is profiler and "run_training_epoch" in profiler.summary()
    keys = set(logger.experiment.metrics_keys) if hasattr(logger.experiment, "metrics_keys") else set()
    logger.save()
    header = (tmp_path / "lightning_logs" / "version_0" / "metrics.csv").read_text().splitlines()[0].split(",")
    keys |= set(header)
    assert {"convergence/speed/share/fetch", "convergence/speed/samples_per_s", "convergence/speed/tokens_per_s",
            "convergence/speed/cpu_share", "convergence/data/wait_ms", "convergence/speed/run_share/forward",
            "convergence/speed/run_samples_per_s"} <= keys
    breakdown = monitor.breakdown()
    assert breakdown["precision"] == "32-true" and breakdown["device"] == "cpu"
    # 1280 samples in 40 steps of 2 ms compute and 32 x 10 us fetch each, on the injected clock.
    assert breakdown["samples_per_s"] == pytest.approx(1280 / (40 * 0.002 + 1280 * 1e-5), rel=1e-3)
    assert breakdown["tokens_per_s"] == pytest.approx(8 * breakdown["samples_per_s"], rel=1e-3)
    assert all(k.startswith("convergence/") for k in keys if k not in ("step", "epoch", "train_loss"))


def test_the_old_name_is_an_alias():
    assert DataLoadingMonitor is TrainingSpeedMonitor


@pytest.mark.parametrize("kwargs,error,named", [
    ({"thresholds": 0.5}, TypeError, "thresholds"),
    ({"sequence_length": 0}, ValueError, "sequence_length"),
    ({"flops_per_batch": -1.0}, ValueError, "flops_per_batch"),
    ({"flops_per_batch": math.nan}, ValueError, "flops_per_batch"),
    ({"clock": 3.0}, TypeError, "clock"),
    ({"log_every_n_steps": 0}, ValueError, "log_every_n_steps"),
])
def test_bad_arguments_raise_naming_the_argument(kwargs, error, named):
    with pytest.raises(error, match=named):
        TrainingSpeedMonitor(**kwargs)


def test_the_profiler_stand_in_forwards_everything_and_comes_out_of_any_chain():
    from lightning.pytorch.profilers import SimpleProfiler

    from lightning_convergence.callbacks import _phase_profiler

    class Listener:
        def __init__(self):
            self.seen = []

        def times_callback(self, name):
            return name.endswith(".on_train_batch_end")

        def action_started(self, kind, name):
            self.seen.append(("start", kind))

        def action_stopped(self, kind, name):
            self.seen.append(("stop", kind))

    class Holder:
        profiler = SimpleProfiler()

    holder, first, second = Holder(), Listener(), Listener()
    inner = holder.profiler
    ours = _phase_profiler.install(holder, first)
    theirs = _phase_profiler.install(holder, second)  # a second monitor, installed after ours
    for name in ("[Callback]X.on_train_batch_end", "[Callback]X.on_before_backward", "save_checkpoint",
                 "[_TrainingEpochLoop].train_dataloader_next", "run_training_batch"):
        with holder.profiler.profile(name):
            pass
    assert first.seen == second.seen == [("start", "callback"), ("stop", "callback"), ("start", "checkpoint"),
                                         ("stop", "checkpoint"), ("start", "fetch"), ("stop", "fetch")]
    assert "run_training_batch" in inner.summary()  # the user's profiler saw every action
    with pytest.raises(RuntimeError, match="disk full"):  # an action that raises still stops
        with holder.profiler.profile("save_checkpoint"):
            raise RuntimeError("disk full")
    assert first.seen[-2:] == second.seen[-2:] == [("start", "checkpoint"), ("stop", "checkpoint")]
    _phase_profiler.uninstall(holder, ours)
    assert holder.profiler is theirs and theirs.inner is inner
    _phase_profiler.uninstall(holder, theirs)
    assert holder.profiler is inner


def test_only_hooks_a_callback_implements_are_timed():
    monitor, saver = TrainingSpeedMonitor(), ModelCheckpoint()
    monitor._by_key = {saver.state_key: saver, monitor.state_key: monitor}
    assert monitor.times_callback(f"[Callback]{saver.state_key}.on_train_batch_end")  # ModelCheckpoint's own
    assert not monitor.times_callback(f"[Callback]{saver.state_key}.on_before_backward")  # Callback's no-op
    assert monitor.times_callback(f"[Callback]{monitor.state_key}.on_before_backward")
    assert not monitor.times_callback("[Callback]Unknown.on_train_batch_end")
    assert monitor._callback_names[f"[Callback]{monitor.state_key}.on_before_backward"] == (
        "TrainingSpeedMonitor", True)


def test_a_validation_loader_that_restarts_its_workers_is_data_loader_restarts(tmp_path):
    # Each validation run starts 2 new workers, 0.5 s on the injected clock: that is the loader's
    # cost, not validating too often.
    clock = FakeClock()

    class Restarting(DataLoader):
        def _get_iterator(self):
            clock.advance(0.5, 0.0)
            return super()._get_iterator()

    class Model(Timed):
        def val_dataloader(self):
            x, y = digits_tensors(64)
            return Restarting(torch.utils.data.TensorDataset(x, y), batch_size=32, num_workers=2,
                              persistent_workers=False)

    monitor = monitor_on(clock)
    fit(tmp_path, Model(clock, n=256), [monitor], max_epochs=4, num_sanity_val_steps=0)
    (d,) = found(monitor)
    assert d["kind"] == "slow_data_loading" and d["causes"][0]["cause"] == "data_loader_restarts"
    assert d["layer"] == "wall_time/validation_start" and "validation DataLoader" in d["message"]
    assert d["evidence"]["validation_start_ms_each"] == pytest.approx(500.0, abs=1.0)


def test_the_cpu_time_is_read_on_one_step_in_ten_and_gives_the_process_share(tmp_path):
    # A CPU-time clock costs microseconds right after a training step (a system call), so it is
    # read on one step in ten and on each window's first; the share is the same for steps alike.
    from lightning_convergence import tags
    from lightning_convergence.callbacks.training_speed_monitor import CPU_TIME_EVERY
    from tests.helpers.loggers import MemoryLogger

    clock, reads = FakeClock(), []

    def cpu_now():
        reads.append(clock.cpu)
        return clock.cpu

    monitor = TrainingSpeedMonitor(clock=clock.now, cpu_clock=cpu_now)
    logger = MemoryLogger(str(tmp_path))
    fit(tmp_path, Timed(clock, compute_s=0.004, cpu_share=0.3, n=3200), [monitor], logger=logger, log_every_n_steps=25)
    steps = 100  # 3200 samples in batches of 32: four windows of 25 steps
    assert len(reads) <= 2 * (steps // CPU_TIME_EVERY + steps // 25)  # a pair per sampled step
    shares = [share for _, share in logger.series(tags.SPEED_CPU_SHARE)]
    assert len(shares) >= 3 and shares == pytest.approx([0.3] * len(shares), rel=0.02)
