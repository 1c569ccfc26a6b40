"""Where the wall time goes, judged from made-up phase timings (no Trainer, no real time)."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lightning_convergence.rules.device_speed import DeviceReadings, judge_device, model_flops_utilization
from lightning_convergence.rules.phase_timeline import PHASES, PhaseTimeline
from lightning_convergence.rules.wall_time import (LoaderSettings, RunSettings, RunTimes, SpeedThresholds, StepWindow,
                                                   WallTimeRule, suggest_num_workers)


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def window(steps, fetch_ms, compute_ms, cpu_share=1.0, other_ms=0.5, samples=32, outliers=()):
    """``steps`` steps of the given medians; ``outliers``: (index, extra fetch ms) pairs."""
    w = StepWindow()
    extra = dict(outliers)
    for i in range(steps):
        fetch = (fetch_ms + extra.get(i, 0.0)) / 1000
        compute = compute_ms / 1000
        busy = compute + 0.0002
        w.add(fetch, compute, cpu_share * busy, busy, fetch + busy + other_ms / 1000, samples)
    return w


CPU = LoaderSettings(num_workers=0, persistent_workers=False, cpu_count=8)


@pytest.mark.parametrize("name,w,expected", [
    ("loader-bound", window(20, fetch_ms=30, compute_ms=10), "data_loader_bottleneck"),
    ("compute-bound", window(20, fetch_ms=3, compute_ms=10), None),
    ("even, but a wait too small to matter", window(40, fetch_ms=3.8, compute_ms=3.6), None),
    # The case: one 215 ms pause (a GC, the process descheduled) in 10 steps of 2 ms: the
    # median does not move, and 10 steps are too few to judge anyway.
    ("one long pause among 2 ms steps", window(20, fetch_ms=0.2, compute_ms=2, outliers=[(7, 215.0)]), None),
    ("too few steps", window(10, fetch_ms=30, compute_ms=10), None),
    ("a busy machine: the process got 20% of the CPU", window(40, fetch_ms=30, compute_ms=10, cpu_share=0.2), None),
    ("the 128 ms loader of a 40-step run", window(39, fetch_ms=128, compute_ms=2), "data_loader_bottleneck"),
])
def test_the_steady_loader_table(name, w, expected):
    finding = WallTimeRule().judge_loader(w, CPU, 0, len(w) - 1)
    assert (finding.causes[0].cause if finding else None) == expected, name
    if finding is not None:
        assert (finding.kind, finding.severity, finding.layer) == ("slow_data_loading", "warning", "wall_time/fetch")
        assert finding.evidence["suggested_num_workers"] >= 2 and "num_workers" in finding.remedies[0]


def test_a_busy_machine_is_judged_on_a_gpu_where_cpu_time_means_nothing():
    w = window(40, fetch_ms=30, compute_ms=10, cpu_share=0.2)
    gpu = LoaderSettings(num_workers=0, cpu_count=8, on_cpu=False)
    finding = WallTimeRule().judge_loader(w, gpu, 0, 39)
    assert finding is not None and "pin_memory=True" in finding.remedies


@pytest.mark.parametrize("fetch,compute,workers,cores,expected", [
    (0.030, 0.010, 0, 16, 4),  # 3 batches' worth of loading per step of compute, plus one
    (0.030, 0.010, 2, 16, 9),  # 2 workers each take 2 * 40 ms per batch
    (0.030, 0.010, 2, 4, 4),  # never more than the cores
    (0.001, 0.010, 0, 16, 2),
    (0.030, 0.0, 0, 6, 6),
])
def test_num_workers_suggestion_from_measured_costs(fetch, compute, workers, cores, expected):
    assert suggest_num_workers(fetch, compute, workers, cores) == expected


def run(steps=100, **seconds):
    phases = dict.fromkeys(PHASES, 0.0)
    phases.update(forward=0.4, backward=0.4, optimizer=0.1, fetch=0.05)
    phases.update(seconds)
    return phases, steps


def test_restart_cost_at_epoch_start_is_data_loader_restarts():
    phases, steps = run(epoch_start=3.0)
    times = RunTimes(phases, epoch_starts_s=[0.6] * 5, steady_fetch_s=0.001, steps=steps)
    loader = LoaderSettings(num_workers=2, persistent_workers=False, cpu_count=2)
    findings = WallTimeRule().judge_run(times, loader, RunSettings())
    assert [(f.kind, f.causes[0].cause) for f in findings] == [("slow_data_loading", "data_loader_restarts")]
    assert findings[0].evidence["restart_ms_per_epoch"] == pytest.approx(599.0)
    assert "persistent_workers=True" in findings[0].remedies[0]


def test_the_first_epoch_start_is_not_a_restart_and_persistent_workers_are_not_blamed():
    phases, steps = run(epoch_start=0.6)
    times = RunTimes(phases, epoch_starts_s=[0.6], steady_fetch_s=0.001, steps=steps)
    assert WallTimeRule().judge_run(times, LoaderSettings(2, False), RunSettings()) == []
    # Costly epoch starts without workers to restart: the loader's own start, not a restart.
    phases, steps = run(epoch_start=3.0)
    times = RunTimes(phases, epoch_starts_s=[0.6] * 5, steady_fetch_s=0.001, steps=steps)
    findings = WallTimeRule().judge_run(times, LoaderSettings(num_workers=0), RunSettings())
    assert findings[0].causes[0].cause == "data_loader_bottleneck"


@pytest.mark.parametrize("name,seconds,counts,settings,cause,knob", [
    ("validation-heavy", {"validation": 2.0}, {"validations": 4}, RunSettings(check_val_every_n_epoch=1),
     "validation_too_frequent", "check_val_every_n_epoch=19"),  # 500 ms each against 240 ms between
    ("validation several times an epoch", {"validation": 2.0}, {"validations": 4}, RunSettings(val_check_interval=0.25),
     "validation_too_frequent", "val_check_interval=1.0 (now 0.25) with check_val_every_n_epoch=5"),
    ("logging-heavy", {"logging": 0.6}, {}, RunSettings(log_every_n_steps=1), "logging_overhead",
     "log_every_n_steps=4"),
    ("checkpoint-heavy", {"checkpointing": 1.0}, {"checkpoints": 10}, RunSettings(), "checkpointing_overhead",
     "every_n_train_steps"),
])
def test_overheads_table(name, seconds, counts, settings, cause, knob):
    phases, steps = run(**seconds)
    times = RunTimes(phases, steady_fetch_s=0.0005, steps=steps, **counts)
    findings = WallTimeRule().judge_run(times, LoaderSettings(), settings)
    assert [(f.kind, f.causes[0].cause) for f in findings] == [("slow_training", cause)], name
    assert knob in " ".join(findings[0].remedies), findings[0].remedies
    assert set(findings[0].evidence["shares"]) <= set(PHASES)


def test_several_overheads_are_ranked_by_their_share_and_small_ones_are_left_out():
    phases, steps = run(validation=3.0, logging=1.5, checkpointing=0.05)
    times = RunTimes(phases, steps=steps, validations=3, checkpoints=3)
    finding, = WallTimeRule().judge_run(times, LoaderSettings(), RunSettings(log_every_n_steps=50))
    assert [c.cause for c in finding.causes] == ["validation_too_frequent", "logging_overhead"]
    assert finding.message.startswith("Of the run's")


def test_an_overhead_below_the_absolute_minimum_is_not_judged():
    phases, steps = run(validation=0.3)  # 25% of a 1.25 s run: real, but too little to matter
    phases.update(forward=0.4, backward=0.4)
    times = RunTimes(phases, steps=steps, validations=2)
    assert WallTimeRule(SpeedThresholds(validation_share=0.2)).judge_run(times, LoaderSettings(), RunSettings()) == []


def test_a_short_run_is_not_judged():
    phases, _ = run(validation=5.0)
    assert WallTimeRule().judge_run(RunTimes(phases, steps=5, validations=5), LoaderSettings(), RunSettings()) == []


def test_the_timeline_charges_every_second_once_and_takes_gc_pauses_out():
    clock = Clock()
    timeline = PhaseTimeline(clock)
    timeline.start("fetch")
    clock.now = 0.010
    timeline.switch("forward")
    clock.now = 0.012
    timeline.push("callbacks")
    clock.now = 0.013
    timeline.push("checkpointing")
    clock.now = 0.020
    timeline.pop()
    timeline.pop()
    timeline.gc_pause(0.200)  # a 215 ms step, 200 ms of it a GC pause that began in the forward pass
    clock.now = 0.225
    timeline.switch("backward")
    step = timeline.take_step()
    assert step["fetch"] == pytest.approx(0.010) and step["forward"] == pytest.approx(0.007)
    assert step["callbacks"] == pytest.approx(0.001) and step["checkpointing"] == pytest.approx(0.007)
    assert step["gc"] == pytest.approx(0.200)
    assert sum(step.values()) == pytest.approx(clock.now) == pytest.approx(sum(timeline.totals.values()))
    timeline.pop()  # an unmatched pop charges and does nothing else
    with pytest.raises(ValueError, match="phase"):
        timeline.switch("lunch")


def test_a_gc_pause_longer_than_the_interval_is_capped():
    clock = Clock()
    timeline = PhaseTimeline(clock)
    timeline.start("forward")
    timeline.gc_pause(5.0)
    clock.now = 1.0
    assert timeline.take_step()["gc"] == pytest.approx(1.0)


def test_marks_before_start_are_ignored():
    clock = Clock()
    timeline = PhaseTimeline(clock)
    clock.now = 5.0
    timeline.switch("fetch")
    assert not timeline.running and sum(timeline.totals.values()) == 0


@pytest.mark.parametrize("field,value", [
    ("min_steps", 0), ("fetch_share", 1.0), ("min_fetch_ms", -1.0), ("min_cpu_share", math.nan),
    ("validation_share", 0.0), ("min_overhead_s", math.inf), ("min_steps", 2.5),
])
def test_bad_thresholds_raise_naming_the_field(field, value):
    with pytest.raises((ValueError, TypeError), match=field):
        SpeedThresholds(**{field: value})


# ---------------------------------------------------------------- the device (arithmetic only)

def test_mfu_follows_throughput_monitor_arithmetic():
    # 6 * 124M parameters * 1024 tokens * 8 samples FLOPs a step, 0.5 s a step, a 312 TFLOP/s peak.
    flops = 6 * 124e6 * 1024 * 8
    assert model_flops_utilization(flops, batches=10, seconds=5.0, peak_flops=312e12) == pytest.approx(
        flops / 0.5 / 312e12)
    assert model_flops_utilization(flops, batches=0, seconds=5.0, peak_flops=312e12) is None


@pytest.mark.parametrize("readings,causes", [
    (DeviceReadings(utilization=0.95, mfu=0.45, syncs_per_step=1, precision="bf16-mixed", bf16_supported=True,
                    compute_share=0.9), []),
    (DeviceReadings(syncs_per_step=40, precision="bf16-mixed"), ["host_sync_in_step"]),
    (DeviceReadings(utilization=0.2, precision="bf16-mixed"), ["low_device_utilization"]),
    (DeviceReadings(mfu=0.02), ["low_device_utilization"]),
    (DeviceReadings(utilization=0.9, precision="32-true", bf16_supported=True, compute_share=0.8),
     ["fp32_where_bf16_fits"]),
    (DeviceReadings(utilization=0.9, precision="32-true", bf16_supported=False, compute_share=0.8), []),
    (DeviceReadings(utilization=0.9, precision="32-true", bf16_supported=True, compute_share=0.2), []),
])
def test_device_causes_table(readings, causes):
    finding = judge_device(readings, 0, 49)
    assert ([c.cause for c in finding.causes] if finding else []) == causes
    if finding is not None:
        assert finding.kind == "slow_training" and finding.remedies


def test_one_slow_validation_or_epoch_start_among_cheap_ones_is_not_an_overhead():
    # Ten validations of 50 ms and one of 3 s (the process descheduled, a GC pause): at its median
    # cost validation is 0.55 s of a 4.5 s run, under the share that matters.
    phases, steps = run(validation=3.5)
    times = RunTimes(phases, steps=steps, validations=11, validation_s=[0.05] * 10 + [3.0])
    assert WallTimeRule().judge_run(times, LoaderSettings(), RunSettings()) == []
    phases, steps = run(epoch_start=3.2)
    times = RunTimes(phases, epoch_starts_s=[0.05] * 5 + [3.0], steady_fetch_s=0.001, steps=steps)
    assert WallTimeRule().judge_run(times, LoaderSettings(2, False), RunSettings()) == []


@settings(max_examples=100, deadline=None)
@given(st.dictionaries(st.sampled_from(PHASES), st.floats(0, 1e4), min_size=1),
       st.lists(st.floats(0, 100), max_size=5), st.integers(0, 500), st.integers(0, 5), st.integers(0, 5),
       st.one_of(st.none(), st.integers(0, 4)), st.one_of(st.none(), st.booleans()))
def test_any_run_gives_findings_of_the_vocabulary_or_none(phases, starts, steps, validations, checkpoints,
                                                          workers, persistent):
    times = RunTimes(phases, epoch_starts_s=starts, steady_fetch_s=0.001, steps=steps, validations=validations,
                     checkpoints=checkpoints)
    for finding in WallTimeRule().judge_run(times, LoaderSettings(workers, persistent, cpu_count=4), RunSettings()):
        assert finding.kind in {"slow_training", "slow_data_loading"} and finding.severity == "warning"
        assert all(0 <= c.confidence <= 1 for c in finding.causes) and finding.remedies


def test_validation_loader_restarts_are_the_loaders_not_validating_too_often():
    phases, steps = run(validation=2.2)  # 4 runs of 550 ms, 500 ms of each waiting for new workers
    times = RunTimes(phases, steps=steps, validations=4, validation_s=[0.55] * 4, validation_starts_s=[0.5] * 4)
    restarting = LoaderSettings(val_num_workers=2, val_persistent_workers=False)
    findings = WallTimeRule().judge_run(times, restarting, RunSettings())
    assert [(f.kind, f.layer, f.causes[0].cause) for f in findings] == [
        ("slow_data_loading", "wall_time/validation_start", "data_loader_restarts")]
    # Persistent validation workers: the same seconds are validation's own.
    findings = WallTimeRule().judge_run(times, LoaderSettings(val_num_workers=2, val_persistent_workers=True),
                                        RunSettings())
    assert [f.causes[0].cause for f in findings] == ["validation_too_frequent"]


def test_the_gc_callback_times_a_collection_and_takes_it_out_of_the_phase_it_interrupted():
    clock = Clock()
    timeline = PhaseTimeline(clock)
    timeline.start("fetch")
    clock.now = 0.002
    timeline.gc_callback("start", {"generation": 2})
    clock.now = 0.217  # a 215 ms collection while fetching
    timeline.gc_callback("stop", {"generation": 2})
    clock.now = 0.219
    step = timeline.take_step()
    assert step["gc"] == pytest.approx(0.215) and step["fetch"] == pytest.approx(0.004)
    timeline.gc_callback("stop", {})  # a stop without its start (registered mid-collection): nothing
    assert timeline.take_step()["gc"] == 0.0


def test_validating_less_often_than_the_run_is_long_is_not_advised():
    phases, steps = run(validation=2.0)
    times = RunTimes(phases, steps=steps, validations=4, validation_s=[0.5] * 4)
    long_run = WallTimeRule().judge_run(times, LoaderSettings(), RunSettings(check_val_every_n_epoch=1, max_epochs=100))
    short_run = WallTimeRule().judge_run(times, LoaderSettings(), RunSettings(check_val_every_n_epoch=1, max_epochs=4))
    assert long_run[0].remedies[0].startswith("validate 19x less often: check_val_every_n_epoch=19")
    assert short_run[0].remedies == ("validate on a sample: limit_val_batches=0.053 (a fraction of the set)",)
