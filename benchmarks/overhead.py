"""What each callback and the whole suite add to a training step, on three models; how close the
gradient statistics pass is to the floor of one read of every gradient; how much memory the suite holds.

Run from the repository root, with the venv active::

    python benchmarks/overhead.py                        # about 15 min on 2 CPU cores
    python benchmarks/overhead.py --repeats 1 --memory-variants ''   # about 5 min: hook times, no memory
    python benchmarks/overhead.py --quick                # a smoke test, not numbers to quote

Writes ``benchmarks/results/overhead.md`` (the verdict written by hand is kept; the tables are
generated) and ``overhead.json`` (every number, per repeat).

Method. A real ``Trainer.fit`` on CPU per (model, variant): ``overhead_models.py``'s MLP (12.9M
parameters in 100 tensors), ResNet-like CNN and pre-LN transformer, Adam, random data, a
``TensorBoardLogger``, ``log_every_n_steps=50``. Variants: ``bare``; ``floor`` (a callback reading
every gradient once per step); each callback alone at its defaults; ``suite``
(``default_callbacks()``), ``suite_acting`` (``auto_remediate=True``), ``suite_log1`` (the suite and
the Trainer logging every step); ``recipe`` (Lightning's ``log_dict(grad_norm(self, 2))``);
``anomaly`` (``detect_anomaly=True``). Paired repeats (the harness's ``run_paired``): every repeat
runs each variant once in a rotated order; a ratio is the median over repeats of ``variant / bare``
within a repeat. Each fit drops its first 5 steps; the next 50 hold one logging cycle and five of
the steps that the sampling callbacks work on (one in 10).

Hook time, the robust measure on a shared machine: each callback's own per-step hooks (those its
class overrides) are wrapped with ``perf_counter``, and so are the forward hooks a callback registers
on the model's modules (found as the hooks that appeared during ``on_train_start``); their sum per
step, averaged over the timed window, is the hook time. The step time is the interval between
consecutive ``on_train_batch_start`` calls: the median unsampled and sampled ordinary steps weighted
9:1, plus the logging steps' extra spread over the window. The statistics pass (``sum_of_squares``,
``torch._foreach_norm``) is also timed alone on tensors shaped like each model's parameters, hot
(repeated calls) and cold (after streaming 512 MB), against the floor ``[t.sum() for t in tensors]``.
Memory: the peak RSS of a fresh subprocess running the same fit (``VmHWM``), per memory variant.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402
from lightning.pytorch import Callback, LightningModule, Trainer  # noqa: E402
from lightning.pytorch.loggers import TensorBoardLogger  # noqa: E402

from benchmarks.harness import (BENCHMARKS, Disturbance, ForeignCpu, add_timing_args, command_line,  # noqa: E402
                                environment, environment_line, median, parser,
                                quiet_lightning, run_paired, wrap_timed, write_results)
from benchmarks.overhead_models import MODELS, FloorPass, make_loader, make_task  # noqa: E402
from benchmarks.overhead_report import (breakdown_table, floor_table, memory_table, model_table,  # noqa: E402
                                        stats_table)
from lightning_convergence import (AutoClip, DeadNeuronTracker, GradientNormMonitor,  # noqa: E402
                                   InitializationAudit, InputSanityChecker, PlateauAdvisor, TrainingSpeedMonitor,
                                   default_callbacks)
from lightning_convergence.callbacks import registry  # noqa: E402
from lightning_convergence.stats import sum_of_squares  # noqa: E402

LOG_EVERY, SAMPLE_EVERY, WARMUP = 50, 10, 5
ONE_OFF_STEPS = frozenset({7, 15, 31})  # GradientNormMonitor's early update-ratio measurements, once per fit
STEP_HOOKS = ("on_train_batch_start", "on_before_backward", "on_after_backward", "on_before_optimizer_step",
              "on_before_zero_grad", "on_train_batch_end")
SINGLES = {"monitor": GradientNormMonitor, "tracker": DeadNeuronTracker, "advisor": PlateauAdvisor,
           "inputs": InputSanityChecker, "init_audit": InitializationAudit, "speed": TrainingSpeedMonitor,
           "autoclip": AutoClip}
ACTING_CLIP = dict(registry.BY_NAME["AutoClip"].suite_args)  # the acting suite's AutoClip (z-score)
SUITES = {"monitor+autoclip": lambda: [GradientNormMonitor(auto_remediate=True), AutoClip(**ACTING_CLIP)],
          "suite": lambda: default_callbacks(), "suite_acting": lambda: default_callbacks(auto_remediate=True),
          "suite_log1": lambda: default_callbacks(log_every_n_steps=1)}
VARIANTS = ("bare", "floor", *SINGLES, *SUITES, "recipe", "anomaly")

def make_callbacks(variant: str) -> list[Callback]:
    if variant in SINGLES:
        return [SINGLES[variant]()]
    if variant in SUITES:
        return SUITES[variant]()
    return [FloorPass()] if variant == "floor" else []


class ForwardHookTimer(Callback):
    """Times the forward hooks that the callbacks before it registered on the model's modules
    (torch keeps them in each module's ``_forward_hooks``), summed per step: those registered in
    ``on_train_start`` and those registered for one batch in ``on_train_batch_start``
    (DeadNeuronTracker's, on sampled batches)."""

    def __init__(self, sink: list[float]) -> None:
        self.sink = sink
        self.before: set[tuple[int, int]] = set()

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        self.before = {(id(m), k) for m in pl_module.modules() for k in m._forward_hooks}

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._wrap_new(pl_module)

    def _wrap_new(self, pl_module: LightningModule) -> None:
        for module in pl_module.modules():
            for key, hook in list(module._forward_hooks.items()):
                if (id(module), key) not in self.before and not getattr(hook, "timed", False):
                    module._forward_hooks[key] = self._timed(hook)

    def _timed(self, hook: Any) -> Any:
        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return hook(*args, **kwargs)
            finally:
                if self.sink:
                    self.sink[-1] += time.perf_counter() - start
        timed.timed = True  # type: ignore[attr-defined]
        return timed

    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int) -> None:
        self.sink.append(0.0)
        self._wrap_new(pl_module)  # after the suite's own batch-start hooks (this callback comes later)


class StepTimer(Callback):
    """Stamps every ``on_train_batch_start``; measures other processes' CPU over the timed steps."""

    def __init__(self) -> None:
        self.starts: list[float] = []
        self.foreign = ForeignCpu()

    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int) -> None:
        self.starts.append(time.perf_counter())
        if len(self.starts) == WARMUP + 1:
            self.foreign.start()

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.foreign.stop()


@dataclass
class Fit:
    """One timed fit: step intervals from step ``WARMUP`` on, and each timed hook's seconds per step."""

    intervals: list[float]
    foreign_cores: float | None
    log_every: int
    hooks: dict[str, list[float]] = field(default_factory=dict)

    def _special(self, step: int) -> bool:  # a logging step or the step after it
        return self.log_every > 1 and ((step + 1) % self.log_every == 0 or (step > 0 and step % self.log_every == 0))

    def step_ms(self) -> float:
        split: dict[bool, list[float]] = {True: [], False: []}
        for i, t in enumerate(self.intervals):
            if not self._special(WARMUP + i):
                split[(WARMUP + i) % SAMPLE_EVERY == 0].append(t)
        steady = ((SAMPLE_EVERY - 1) * median(split[False]) + median(split[True])) / SAMPLE_EVERY \
            if split[True] and split[False] else median(split[True] + split[False])
        extra = sum(t - steady for i, t in enumerate(self.intervals) if self._special(WARMUP + i))
        return (steady + extra / len(self.intervals)) * 1e3

    def hook_ms(self, names: Sequence[str] | None = None, steady: bool = False) -> float:
        """The timed hooks' seconds per step, window mean, in ms; ``steady`` leaves out the one-off
        steps of the first 32 (the monitor's early update-ratio measurements, once per fit)."""
        names = list(self.hooks) if names is None else names
        steps = [s for s in range(WARMUP, WARMUP + len(self.intervals)) if not (steady and s in ONE_OFF_STEPS)]
        return statistics.fmean(sum(self.hooks[n][s] for n in names) for s in steps) * 1e3

    def every_step_ms(self) -> float:
        """The hooks' median ms on ordinary steps: no logging step or the one after it, no
        sampled step, no one-off step: the every-step path."""
        window = range(WARMUP, WARMUP + len(self.intervals))
        steps = [s for s in window if not self._special(s) and s % SAMPLE_EVERY != 0 and s not in ONE_OFF_STEPS]
        return median([sum(h[s] for h in self.hooks.values()) for s in steps or window]) * 1e3

    def split_ms(self, names: Sequence[str]) -> dict[str, float]:
        """``names``' hook ms per step over the window (the one-off steps left out), in three
        parts: ``every_step``, the median of the ordinary steps; ``sampled`` and ``logging``, what
        the sampled steps (one in ``SAMPLE_EVERY``) and the logging steps (and the steps after
        them) cost above that median, spread over the window. The parts add up to
        ``hook_ms(names, steady=True)`` but for the ordinary steps' mean against their median."""
        steps = [s for s in range(WARMUP, WARMUP + len(self.intervals)) if s not in ONE_OFF_STEPS]
        per_step = {s: sum(self.hooks[n][s] for n in names) for s in steps}
        ordinary = [per_step[s] for s in steps if not self._special(s) and s % SAMPLE_EVERY != 0]
        base = median(ordinary) if ordinary else 0.0
        sampled = sum(per_step[s] - base for s in steps if not self._special(s) and s % SAMPLE_EVERY == 0)
        logging = sum(per_step[s] - base for s in steps if self._special(s))
        return {"every_step": base * 1e3, "sampled": sampled / len(steps) * 1e3, "logging": logging / len(steps) * 1e3}

    def logging_extra_ms(self) -> float:
        """What the logging steps (and the steps after them) cost above the every-step path,
        spread over the window: ms per step."""
        ordinary = self.every_step_ms() / 1e3
        steps = range(WARMUP, WARMUP + len(self.intervals))
        extra = sum(sum(h[s] for h in self.hooks.values()) - ordinary for s in steps if self._special(s))
        return extra / len(self.intervals) * 1e3


def run_fit(model: str, variant: str, steps: int) -> Fit:
    max_steps = WARMUP + steps + 1
    task = make_task(model, recipe=variant == "recipe")
    callbacks: list[Callback] = []
    hooks: dict[str, list[float]] = {}
    for callback in make_callbacks(variant):
        name = type(callback).__name__
        for hook in STEP_HOOKS:
            if getattr(type(callback), hook) is not getattr(Callback, hook):
                wrap_timed(callback, hook, hooks.setdefault(f"{name}.{hook}", []))
        callbacks.append(callback)
    callbacks.append(ForwardHookTimer(hooks.setdefault("forward hooks", [])))
    timer = StepTimer()
    callbacks.append(timer)  # last: its stamp follows every other batch-start hook
    log_every = 1 if variant == "suite_log1" else LOG_EVERY
    with tempfile.TemporaryDirectory(prefix="overhead_") as root:
        trainer = Trainer(accelerator="cpu", devices=1, max_steps=max_steps, max_epochs=1, callbacks=callbacks,
                          logger=TensorBoardLogger(root, name=variant), log_every_n_steps=log_every,
                          detect_anomaly=variant == "anomaly", enable_progress_bar=False, enable_checkpointing=False,
                          enable_model_summary=False)
        trainer.fit(task, make_loader(model, max_steps))
    if trainer.global_step != max_steps:
        raise RuntimeError(f"{model}/{variant}: fit ran {trainer.global_step} steps, expected {max_steps}.")
    if variant == "recipe":
        hooks["recipe.on_before_optimizer_step"] = task.hook_seconds
    if not any(hooks["forward hooks"]):
        del hooks["forward hooks"]
    intervals = [b - a for a, b in zip(timer.starts[WARMUP:], timer.starts[WARMUP + 1:])]
    return Fit(intervals, timer.foreign.cores, log_every, {k: v for k, v in hooks.items() if len(v) >= max_steps - 1})


def time_stats_pass(model: str, rounds: int = 5, calls: int = 10) -> dict[str, dict[str, float]]:
    """The statistics pass alone against the floor, hot and cold, median over rounds, in ms."""
    g = torch.Generator().manual_seed(1)
    tensors = [torch.randn(p.shape, generator=g) for p in make_task(model).parameters()]
    evict = torch.ones(512 * 2**18)  # 512 MB of float32: streaming it pushes the tensors out of the caches
    candidates = {"floor": lambda: [t.sum() for t in tensors], "sum_of_squares": lambda: sum_of_squares(tensors),
                  "_foreach_norm": lambda: torch._foreach_norm(tensors)}
    samples: dict[str, dict[str, list[float]]] = {k: {"hot": [], "cold": []} for k in candidates}
    for _ in range(rounds + 1):  # the first round warms up
        for key, call in candidates.items():
            for mode in ("hot", "cold"):
                total = 0.0
                for _ in range(calls):
                    if mode == "cold":
                        evict.sum()
                    start = time.perf_counter()
                    call()
                    total += time.perf_counter() - start
                samples[key][mode].append(total * 1e3 / calls)
    return {k: {mode: median(v[1:]) for mode, v in modes.items()} for k, modes in samples.items()}


def peak_rss(model: str, variant: str, steps: int) -> float:
    """Peak RSS (MiB) of a fresh process running the fit: ``VmHWM`` belongs to the address space, which
    ``exec`` replaces (``ru_maxrss`` would carry the parent's peak over)."""
    out = subprocess.run([sys.executable, __file__, "--memory-child", model, variant, str(steps)], capture_output=True,
                         text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1]) / 1024


def memory_child(model: str, variant: str, steps: int) -> None:
    quiet_lightning()
    run_fit(model, variant, steps)
    with open("/proc/self/status") as handle:
        print(next(line.split()[1] for line in handle if line.startswith("VmHWM")))  # kB


# ------------------------------------------------------------------------------ summary and report


def summarise(fits: dict[str, list[Fit]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    bare = fits["bare"]
    bare_ms = median([f.step_ms() for f in bare])
    for variant, runs in fits.items():
        ratios = [f.step_ms() / b.step_ms() for f, b in zip(runs, bare)]
        row: dict[str, Any] = {"step_ms": median([f.step_ms() for f in runs]), "ratio": median(ratios),
                               "ratio_per_repeat": ratios,
                               "foreign_cores_max": max((f.foreign_cores or 0.0) for f in runs)}
        if runs[0].hooks:
            row["hook_ms"] = median([f.hook_ms() for f in runs])
            row["steady_hook_ms"] = median([f.hook_ms(steady=True) for f in runs])
            row["every_step_ms"] = median([f.every_step_ms() for f in runs])
            # Per repeat too: a ratio against the floor is also taken within each repeat (the
            # floor's fit ran in the same repeat), so that its spread shows the run's noise.
            row["every_step_ms_per_repeat"] = [f.every_step_ms() for f in runs]
            row["steady_hook_ms_per_repeat"] = [f.hook_ms(steady=True) for f in runs]
            row["logging_extra_ms"] = median([f.logging_extra_ms() for f in runs])
            row["logging_extra_fraction"] = row["logging_extra_ms"] / bare_ms
            row["hook_fraction"] = row["hook_ms"] / bare_ms
            owners = sorted({n.split(".")[0] for n in runs[0].hooks})
            row["per_callback_ms"] = {o: median([f.hook_ms([n for n in f.hooks if n.split(".")[0] == o]) for f in runs])
                                      for o in owners}
            splits = {o: [f.split_ms([n for n in f.hooks if n.split(".")[0] == o]) for f in runs] for o in owners}
            row["per_callback_split_ms"] = {o: {part: median([s[part] for s in per_run]) for part in per_run[0]}
                                            for o, per_run in splits.items()}
        out[variant] = row
    return out


def main(argv: Sequence[str] | None = None) -> int:
    p = parser(__doc__)
    p.add_argument("--models", default=",".join(MODELS), help="comma list of mlp, cnn, transformer")
    p.add_argument("--variants", default=",".join(VARIANTS), help=f"comma list (bare is always run): {', '.join(VARIANTS)}")
    p.add_argument("--steps", type=int, default=50, help="timed steps per fit (default 50)")
    p.add_argument("--memory-variants", default="bare,suite,suite_acting", help="peak RSS of these ('' for none)")
    p.add_argument("--quick", action="store_true", help="one repeat of 4 steps, no warm-up round, no memory")
    p.add_argument("--out", default=str(BENCHMARKS / "results"), help="folder for overhead.md and .json")
    p.add_argument("--memory-child", nargs=3, help=argparse.SUPPRESS)
    add_timing_args(p, repeats=3)
    args = p.parse_args(argv)
    if args.memory_child:
        memory_child(args.memory_child[0], args.memory_child[1], int(args.memory_child[2]))
        return 0
    if args.quick:
        args.repeats, args.steps, args.memory_variants = 1, 4, ""
    if args.threads:
        torch.set_num_threads(args.threads)
    quiet_lightning()
    models = [m for m in args.models.split(",") if m]
    variants = ["bare", *(v for v in args.variants.split(",") if v and v != "bare")]
    unknown = sorted(set(models) - set(MODELS)) + sorted(set(variants) - set(VARIANTS))
    if unknown:
        p.error(f"unknown models or variants: {unknown}")
    env, command = environment(), command_line("benchmarks/overhead.py", argv)
    print(f"{command}\n{environment_line(env)}", flush=True)
    disturbance = Disturbance(args.max_retries, args.max_wait, args.max_foreign)
    began = time.perf_counter()
    results: dict[str, Any] = {}
    for index, model in enumerate(models):
        print(f"\n== {model}: {MODELS[model][0]}", flush=True)
        steps = args.steps

        def measure(variant: str, warm: bool) -> Fit:
            return run_fit(model, variant, min(steps, 5) if warm else steps)

        fits = run_paired(variants, measure, args.repeats, disturbance, warmup_round=index == 0 and not args.quick)
        params = list(make_task(model).parameters())
        results[model] = {"description": MODELS[model][0], "tensors": len(params),
                          "parameters": sum(t.numel() for t in params), "variants": summarise(fits),
                          "stats_pass": time_stats_pass(model, rounds=2 if args.quick else 5),
                          "hooks_per_repeat": {v: [f.hook_ms() for f in fs] for v, fs in fits.items() if fs[0].hooks}}
        print(model_table(results[model]["variants"]), flush=True)
    memory = {m: {v: peak_rss(m, v, args.steps) for v in args.memory_variants.split(",") if v} for m in models} \
        if args.memory_variants else {}
    wall = time.perf_counter() - began
    generated = [f"Produced by `{command}` in {wall:.0f} s; {environment_line(env)}.", "",
                 f"{args.steps} timed steps per fit after {WARMUP} dropped, {args.repeats} paired repeats; "
                 f"{disturbance.reruns} disturbed fits rerun, {disturbance.waited_s:.0f} s spent waiting for quiet. "
                 "**step ms**: robust mean step; **vs bare**: median of the per-repeat paired ratios (their spread "
                 "is the noise); **hook ms/step**: the callbacks' own hooks and forward hooks, window mean; "
                 "**target**: the suite at defaults <= 1.03x, each monitor alone <= 1.02x.", ""]
    generated += ["## Against the floor", "",
                  "Hook time against the `floor` variant's (one read of every gradient per step, median of its "
                  "ordinary steps). **every step**: median hook ms of ordinary steps (no logging step or the one "
                  "after it, no sampled step, none of the one-off early steps 7, 15, 31); **logging steps, spread**: "
                  "what the logging steps and the steps after them cost above that, per step of the window, and as "
                  "a share of the bare step; **steady**: window mean without the one-off early steps. A ratio is "
                  "the median over repeats against the floor's median; **per repeat**: the same ratio within each "
                  "repeat, against that repeat's floor (the floor's fit ran in the same repeat): its spread is the "
                  "run's noise.", "",
                  floor_table(results), ""]
    for model, result in results.items():
        generated += [f"## {model}", "", f"{result['description']}; {result['parameters']:,} parameters in "
                      f"{result['tensors']} tensors.", "", model_table(result["variants"]), ""]
    generated += ["## Where the suite's hook time goes", "", breakdown_table(results), "",
                  "## The statistics pass alone, against one read of every gradient", "", stats_table(results), "",
                  "## Memory", "", memory_table(memory), ""]
    write_results(Path(args.out) / "overhead.md", "Overhead of the suite on three models (CPU)", generated,
                  {"command": command, "environment": env, "settings": vars(args), "models": results,
                   "memory_mib": memory, "wall_s": wall})
    print(f"\nwall time {wall:.0f} s; wrote {Path(args.out) / 'overhead.md'} and overhead.json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
