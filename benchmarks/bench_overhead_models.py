"""Benchmark: what each callback and the whole suite add to a training step, on three models, and how
much memory the suite holds.

Run::

    python benchmarks/bench_overhead_models.py            # about 15 min on 2 CPU cores
    python benchmarks/bench_overhead_models.py --quick    # a smoke test, not numbers to quote

Models (``_models_nets.py``): the overhead benchmark's MLP (100 parameter tensors, 12.9M
parameters), a ResNet-like CNN on 3x32x32 random images (2.4M parameters) and a 4-layer pre-LN
causal transformer (d_model 256, sequence 64) on random tokens (3.7M parameters). Adam, random data,
a real ``lightning.Trainer.fit`` on CPU with a ``TensorBoardLogger`` in a temporary directory,
``log_every_n_steps=50`` (Lightning's default), no progress bar, checkpointing or model summary.

Variants, per model: ``bare`` (the model alone); each callback alone at its defaults
(``GradientNormMonitor()``, ``DeadNeuronTracker()``, ``PlateauAdvisor()``, ``InputSanityChecker()``,
``InitializationAudit()``, ``DataLoadingMonitor()``, ``AutoClip()``); ``suite``
(``default_callbacks()``: observing); ``suite_acting`` (``default_callbacks(auto_remediate=True)``,
which adds ``AutoClip(mode="zscore")``); ``suite_log1`` (``default_callbacks(log_every_n_steps=1)``
and ``Trainer(log_every_n_steps=1)``: the suite logs and judges on every step); ``recipe``
(Lightning's documented ``self.log_dict(grad_norm(self, norm_type=2))`` in
``on_before_optimizer_step``); ``anomaly`` (``Trainer(detect_anomaly=True)``).

Method (the paired machinery of ``bench_gradient_monitor.py``, from ``_paired.py``). Everything
runs in one process. A warm-up round of short fits (discarded; before the first model only, to warm
the process up), then per model ``--repeats`` repeats; each repeat runs every variant once, in an
order rotated per repeat, so slow drift of the machine hits every variant alike. A ratio is the
median over repeats of the per-repeat ratio ``variant / bare`` (the per-repeat ratios are printed:
their spread is the noise). Each fit runs ``warmup + N + 1`` steps; the first ``warmup`` (5: Adam's
state, the callbacks' first-step setup, DeadNeuronTracker's wiring probe and InputSanityChecker's
first 3 batches all happen by step 3) are dropped, and with N = 50 the timed steps 5..54 hold
exactly one 50-step logging cycle (the logging step 49 and the step after it) and five of the steps
that DeadNeuronTracker and InputSanityChecker sample (one in 10: 10, 20, 30, 40 and 50, the step
after the logging step). In ``suite_acting``, ``AutoClip(mode="zscore")`` collects norms for its
first 10 steps before it may clip, so timed steps 5..9 do not clip; on CPU it skips the scaling
pass whenever nothing is clipped, which on this healthy random data is nearly every step, so this
changes little. Step time = interval between consecutive ``on_train_batch_start`` calls (so it
holds the logger writes Lightning makes after ``on_train_batch_end``), summarised robustly per fit:
the median unsampled ordinary step and the median sampled one, weighted 9:1, plus the logging
steps' extra spread over the window (see ``_models_hooks.PhaseFit``). The CPU other processes used
in each timed window is measured from ``/proc/stat``; a fit during which they used more than
``--max-foreign`` cores is run again.

Hook time in place: in every fit, each callback's own per-step hooks (those its class overrides)
are wrapped with ``perf_counter`` (same behaviour, about a microsecond added), and so are
DeadNeuronTracker's forward hooks on the activation modules (through its private ``_sites._hook``)
and the recipe's hook; their sum per step, averaged over the timed window, is the hook time. It is
the robust measure on a shared, noisy machine; it leaves out what happens outside the hooks
(Lightning's dispatch of the hook calls, the TensorBoard writer's background thread, and on the
first read of fresh gradients it includes bringing them into the caches, which the optimizer would
otherwise pay). For comparison, GradientNormMonitor's every-step statistics pass is also timed alone
on tensors shaped like each model's parameters, against the floor of one read of every tensor.
Hooks called once per fit (``setup``, ``on_train_start``, ``on_train_end``,
``on_fit_end``, ``teardown``) are timed apart. ``anomaly`` has no hooks: whole-step ratio only.

Memory: each of ``--memory-variants`` runs once per model in a fresh subprocess (the same fit),
which reports (a) its peak resident set size (``VmHWM`` of ``/proc/self/status``: ``ru_maxrss`` is
carried over from the parent across fork and exec on Linux, so a child would report the peak of the
benchmark process that started it), and
(b) the most tensor storage that the callbacks (and the suite's shared run context) held beyond the
model's parameters, gradients, buffers and the optimizer's state, found by walking the callbacks'
attributes at every ``on_train_batch_end`` and at ``on_train_end``, before the callbacks' own hooks
there free anything. (a) includes everything
(allocator slack, Python objects) and is noisy by a few MB; (b) is exact for tensors and blind to
anything else. Both are given as a fraction of the model's parameter memory.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Sequence
from typing import Any

import torch
from lightning.pytorch import Callback, Trainer
from lightning.pytorch.loggers import TensorBoardLogger

try:  # run as a script: benchmarks/ is on sys.path
    from _models_hooks import (FORWARD_HOOKS, ONCE_HOOKS, SAMPLE_EVERY, PhaseFit, RetainedProbe,
                               own_hooks, own_step_hooks, wrap_once)
    from _models_nets import MODELS, make_loader, make_task, parameter_summary
    from _models_report import write_markdown
    from _paired import Disturbance, hook_summary, run_paired, summarise_paired
    from _report import command_line, quiet_lightning
    from _timing import ForwardHookTimer, StepTimer, environment, median, pct, wrap_timed
except ImportError:  # imported as benchmarks.bench_overhead_models
    from benchmarks._models_hooks import (FORWARD_HOOKS, ONCE_HOOKS, SAMPLE_EVERY, PhaseFit,
                                          RetainedProbe, own_hooks, own_step_hooks, wrap_once)
    from benchmarks._models_nets import MODELS, make_loader, make_task, parameter_summary
    from benchmarks._models_report import write_markdown
    from benchmarks._paired import Disturbance, hook_summary, run_paired, summarise_paired
    from benchmarks._report import command_line, quiet_lightning
    from benchmarks._timing import ForwardHookTimer, StepTimer, environment, median, pct, wrap_timed
from lightning_convergence import (AutoClip, DataLoadingMonitor, DeadNeuronTracker, GradientNormMonitor,  # noqa: E402
                                   InitializationAudit, InputSanityChecker, PlateauAdvisor, default_callbacks)
from lightning_convergence.callbacks._context import run_context  # noqa: E402
from lightning_convergence.stats import sum_of_squares  # noqa: E402
from lightning_convergence.recorder.console import ConvergenceWarning  # noqa: E402

LOG_EVERY = 50  # Lightning's default log_every_n_steps
WARMUP_STEPS = 5
SINGLES: dict[str, type[Callback]] = {
    "monitor": GradientNormMonitor, "tracker": DeadNeuronTracker, "advisor": PlateauAdvisor,
    "inputs": InputSanityChecker, "init_audit": InitializationAudit, "data": DataLoadingMonitor, "autoclip": AutoClip,
}
MONITORS = ("monitor", "tracker", "advisor", "inputs", "init_audit", "data")  # held to the 2% target
SUITES = ("suite", "suite_acting", "suite_log1")
VARIANTS = ("bare", *SINGLES, *SUITES, "recipe", "anomaly")
LABELS = {
    "bare": "bare Trainer",
    **{k: f"{cls.__name__}()" for k, cls in SINGLES.items()},
    "suite": "default_callbacks()",
    "suite_acting": "default_callbacks(auto_remediate=True)",
    "suite_log1": "default_callbacks(log_every_n_steps=1), Trainer(log_every_n_steps=1)",
    "recipe": "Lightning recipe: log_dict(grad_norm(self, 2))",
    "anomaly": "Trainer(detect_anomaly=True)",
}
TARGETS = {"suite": 1.03, **{m: 1.02 for m in MONITORS}, "autoclip": 1.02}
MEMORY_VARIANTS = ("bare", "suite", "suite_acting")


def make_callbacks(variant: str) -> list[Callback]:
    if variant in SINGLES:
        return [SINGLES[variant]()]
    if variant == "suite":
        return default_callbacks()
    if variant == "suite_acting":
        return default_callbacks(auto_remediate=True)
    if variant == "suite_log1":
        return default_callbacks(log_every_n_steps=1)
    return []


def make_trainer(variant: str, root: str, max_steps: int, callbacks: list[Callback]) -> Trainer:
    return Trainer(
        accelerator="cpu",
        devices=1,
        max_steps=max_steps,
        max_epochs=1,
        logger=TensorBoardLogger(root, name=variant),
        log_every_n_steps=1 if variant == "suite_log1" else LOG_EVERY,
        detect_anomaly=variant == "anomaly",
        enable_progress_bar=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        callbacks=callbacks,
    )


def run_fit(model: str, variant: str, steps: int, warmup: int, root: str) -> PhaseFit:
    max_steps = warmup + steps + 1
    task = make_task(model, recipe=variant == "recipe")
    callbacks: list[Callback] = []
    hooks: dict[str, list[float]] = {}
    once: dict[str, float] = {}
    for callback in make_callbacks(variant):
        name = type(callback).__name__
        for hook in own_step_hooks(callback):
            wrap_timed(callback, hook, hooks.setdefault(f"{name}.{hook}", []))
        for hook in own_hooks(callback, ONCE_HOOKS):
            wrap_once(callback, hook, once, f"{name}.{hook}")
        if isinstance(callback, DeadNeuronTracker):
            forward = ForwardHookTimer(hooks.setdefault(f"{name}.{FORWARD_HOOKS}", []))
            if forward.wrap(callback):
                callbacks.append(forward)
            else:
                del hooks[f"{name}.{FORWARD_HOOKS}"]
                print("  (tracker forward hooks not timed: DeadNeuronTracker's private `_sites._hook` changed)")
        callbacks.append(callback)
    timer = StepTimer(warmup)
    callbacks.append(timer)  # last: its stamp follows every other batch-start hook
    trainer = make_trainer(variant, root, max_steps, callbacks)
    trainer.fit(task, make_loader(model, max_steps))
    if trainer.global_step != max_steps:
        raise RuntimeError(f"{model}/{variant}: fit ran {trainer.global_step} steps, expected {max_steps}.")
    if variant == "recipe":
        hooks["recipe.on_before_optimizer_step"] = task.hook_seconds
    log_every = 1 if variant == "suite_log1" else LOG_EVERY
    return PhaseFit(timer.intervals(), warmup, timer.foreign.cores, hooks, None, log_every, SAMPLE_EVERY, once)


# --------------------------------------------------------------------------------- summaries


def summarise_model(fits: dict[str, list[PhaseFit]]) -> dict[str, Any]:
    variants = summarise_paired(fits, "bare")
    bare_ms = variants["bare"]["step_ms"]
    for variant, runs in fits.items():
        row = variants[variant]
        row["steady_ms"] = median([f.steady_ms() for f in runs])
        names = list(runs[0].hooks) if runs else []
        if not names:
            continue
        summary = hook_summary(runs, names, bare_ms, sample_every=SAMPLE_EVERY)
        row["hook_ms"] = summary["window_mean_ms"]
        row["hook_fraction_of_bare"] = summary["window_mean_fraction_of_bare"]
        row["hook_ms_per_repeat"] = [hook_summary([f], names, bare_ms)["window_mean_ms"] for f in runs]
        row["hook_sampled_step_ms"] = summary["sampled_step_ms"]
        row["hook_unsampled_step_ms"] = summary["unsampled_step_ms"]
        row["hook_special_steps_ms"] = summary["special_steps_ms"]
        # Window mean per hook and per callback: where the time goes.
        row["per_hook_ms"] = {n: hook_summary(runs, [n], bare_ms)["window_mean_ms"] for n in names}
        per_callback: dict[str, float] = {}
        for n in names:
            owner = n.split(".", 1)[0]
            per_callback[owner] = per_callback.get(owner, 0.0) + row["per_hook_ms"][n]
        row["per_callback_ms"] = per_callback
    for variant, runs in fits.items():
        keys = sorted({k for f in runs for k in f.once})
        if keys:
            variants[variant]["once_ms"] = {k: median([f.once.get(k, 0.0) * 1e3 for f in runs]) for k in keys}
    return variants


def verdicts(variants: dict[str, Any]) -> list[dict[str, Any]]:
    """Each target: met on both measures, met on hook time only (the step ratio's spread reaches
    over the target: noise), or not met."""
    out = []
    for variant, target in TARGETS.items():
        if variant not in variants:
            continue
        row = variants[variant]
        ratio, spread = row["ratio_to_bare"], row["ratio_to_bare_per_repeat"]
        hook = 1.0 + row.get("hook_fraction_of_bare", 0.0)
        if hook > target:
            verdict = "not met"
        elif ratio <= target:
            verdict = "met"
        elif min(spread) <= target:
            verdict = "met on hook time; step ratio above, within its noise"
        else:
            verdict = "met on hook time only; every repeat's step ratio above"
        out.append({"variant": variant, "target": target, "step_ratio": ratio, "step_ratio_per_repeat": spread,
                    "hook_ratio": hook, "verdict": verdict})
    return out


def time_stats_pass(model: str, rounds: int = 5, calls: int = 20) -> dict[str, float]:
    """GradientNormMonitor's every-step statistics pass alone (``sum_of_squares``, backend "auto")
    against the floor of one read of every tensor (``[t.sum() for t in tensors]``), on random
    tensors shaped like the model's parameters; hot (repeated calls), median over rounds, in ms."""
    generator = torch.Generator().manual_seed(1)
    tensors = [torch.randn(p.shape, generator=generator) for p in make_task(model).parameters()]
    candidates = {"floor_ms": lambda: [t.sum() for t in tensors], "sum_of_squares_ms": lambda: sum_of_squares(tensors)}
    samples: dict[str, list[float]] = {k: [] for k in candidates}
    for _ in range(rounds + 1):  # the first round warms up
        for key, call in candidates.items():
            start = time.perf_counter()
            for _ in range(calls):
                call()
            samples[key].append((time.perf_counter() - start) * 1e3 / calls)
    return {k: median(v[1:]) for k, v in samples.items()}


# --------------------------------------------------------------------------------- memory


PEAK_SOURCE = "/proc/self/status VmHWM"


def peak_rss_bytes() -> int:
    """This process's peak resident set size. ``VmHWM`` belongs to the address space, which ``exec``
    replaces; ``getrusage(RUSAGE_SELF).ru_maxrss`` is not used because Linux carries it over from
    the parent across fork and exec, so a child started by a 1.6 GB benchmark process would report
    the parent's peak. Falls back to ``ru_maxrss`` where ``/proc`` is missing."""
    global PEAK_SOURCE
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    PEAK_SOURCE = "getrusage ru_maxrss"
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def memory_child(model: str, variant: str, steps: int, warmup: int) -> dict[str, Any]:
    """One fit in this (fresh) process: peak RSS and the callbacks' retained tensor bytes."""
    quiet_lightning()
    warnings.filterwarnings("ignore", category=ConvergenceWarning)
    max_steps = warmup + steps + 1
    task = make_task(model, recipe=variant == "recipe")
    loader = make_loader(model, max_steps)
    rss_before = peak_rss_bytes()
    callbacks = make_callbacks(variant)
    probe = RetainedProbe(callbacks, lambda trainer: [vars(run_context(trainer))])
    with tempfile.TemporaryDirectory(prefix="bench_mem_") as root:
        trainer = make_trainer(variant, root, max_steps, [probe, *callbacks])
        trainer.fit(task, loader)
    return {"peak_rss_bytes": peak_rss_bytes(), "peak_rss_source": PEAK_SOURCE,
            "rss_before_fit_bytes": rss_before, "retained_bytes": probe.bytes,
            "retained_at_end_bytes": probe.at_end_bytes, "retained_max_at_step": probe.max_step,
            "retained_by_callback": probe.by_callback, "params": parameter_summary(task)}


def measure_memory(models: Sequence[str], variants: Sequence[str], steps: int, warmup: int,
                   disturbance: Disturbance) -> dict[str, Any]:
    out: dict[str, Any] = {}
    script = os.path.abspath(__file__)
    for model in models:
        out[model] = {}
        for variant in variants:
            disturbance.wait()
            cmd = [sys.executable, script, "--memory-child", model, variant, "--steps", str(steps),
                   "--warmup-steps", str(warmup), "--threads", str(torch.get_num_threads())]
            result = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
            line = next((ln for ln in result.stdout.splitlines() if ln.startswith("MEMORY ")), None)
            if result.returncode != 0 or line is None:
                raise RuntimeError(f"memory run {model}/{variant} failed:\n{result.stdout[-2000:]}\n"
                                   f"{result.stderr[-4000:]}")
            out[model][variant] = json.loads(line[len("MEMORY "):])
            row = out[model][variant]
            print(f"  [memory] {model:12s} {variant:14s} peak RSS {row['peak_rss_bytes'] / 2**20:8.1f} MiB, "
                  f"callbacks' tensors {row['retained_bytes'] / 2**20:7.1f} MiB", flush=True)
        bare = out[model].get("bare")
        for variant, row in out[model].items():
            param_bytes = row["params"]["bytes"]
            row["retained_fraction_of_params"] = row["retained_bytes"] / param_bytes
            if bare is not None:
                row["extra_rss_bytes"] = row["peak_rss_bytes"] - bare["peak_rss_bytes"]
                row["extra_rss_fraction_of_params"] = row["extra_rss_bytes"] / param_bytes
    return out


# --------------------------------------------------------------------------------- package version


def package_version() -> dict[str, Any]:
    """The git commit of the checkout and a hash of the package's sources: other people may commit
    while this runs, and a run whose package changed midway mixes versions (the timed fits use the
    code imported at the start, the memory subprocesses the code on disk at the end)."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    package = os.path.join(root, "lightning_convergence")
    digest = hashlib.sha256()
    for folder, _, files in sorted(os.walk(package)):
        for name in sorted(files):
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                digest.update(os.path.relpath(path, root).encode())
                with open(path, "rb") as handle:
                    digest.update(handle.read())
    out: dict[str, Any] = {"sources_sha256": digest.hexdigest()[:16]}
    try:
        out["commit"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True,
                                       text=True, timeout=10).stdout.strip() or None
        status = subprocess.run(["git", "status", "--porcelain", "lightning_convergence"], cwd=root,
                                capture_output=True, text=True, timeout=10).stdout
        out["package_uncommitted_changes"] = bool(status.strip())
    except (OSError, subprocess.SubprocessError):
        out["commit"] = None
    return out


# --------------------------------------------------------------------------------- printing


def print_model(model: str, info: dict[str, Any], variants: dict[str, Any], checks: list[dict[str, Any]]) -> None:
    p = info["params"]
    print(f"\n== {model}: {info['description']}; {p['parameters']:,} parameters in {p['tensors']} tensors, "
          f"batch {info['batch']} ==")
    print(f"{'variant':14s} {'step ms':>8s} {'vs bare':>8s}  {'per repeat':24s} {'hook ms':>8s} {'hook %':>7s} "
          f"{'other cores':>11s}")
    for v, row in variants.items():
        spread = " ".join(pct(r) for r in row["ratio_to_bare_per_repeat"])
        hook = f"{row['hook_ms']:8.2f}" if "hook_ms" in row else f"{'-':>8s}"
        frac = f"{row['hook_fraction_of_bare'] * 100:6.2f}%" if "hook_ms" in row else f"{'-':>7s}"
        load = row["foreign_cores_max"]
        print(f"{v:14s} {row['step_ms']:8.1f} {pct(row['ratio_to_bare']):>8s}  {spread:24s} {hook} {frac} "
              f"{'n/a' if load is None else f'<= {load:.2f}':>11s}")
    print(f"  statistics pass alone (hot): sum_of_squares {info['stats_pass']['sum_of_squares_ms']:.2f} ms, floor "
          f"(one read) {info['stats_pass']['floor_ms']:.2f} ms")
    for c in checks:
        print(f"  target {c['variant']:12s} <= {c['target']:.2f}x: step {c['step_ratio']:.3f}x, hook "
              f"{c['hook_ratio']:.4f}x -> {c['verdict']}")


# --------------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=",".join(MODELS), help=f"comma list of {', '.join(MODELS)}")
    parser.add_argument("--variants", default=",".join(VARIANTS),
                        help="comma list (bare is always run); default: all of " + ", ".join(VARIANTS))
    parser.add_argument("--steps", type=int, default=None, help="timed steps per fit (default 50; --quick 4)")
    parser.add_argument("--warmup-steps", type=int, default=None,
                        help=f"dropped steps per fit (default {WARMUP_STEPS}; --quick 2)")
    parser.add_argument("--repeats", type=int, default=None, help="paired repeats (default 3; --quick 1)")
    parser.add_argument("--memory-variants", default=",".join(MEMORY_VARIANTS),
                        help="variants whose memory is measured, each in a subprocess ('' for none); default: "
                             + ",".join(MEMORY_VARIANTS))
    parser.add_argument("--max-foreign", type=float, default=0.25,
                        help="rerun a fit when other processes used more cores than this (default 0.25)")
    parser.add_argument("--max-retries", type=int, default=None, help="reruns in the whole run at most (default 12)")
    parser.add_argument("--max-wait", type=float, default=10.0,
                        help="before each fit, wait up to this many seconds for other processes to go quiet "
                             "(default 10)")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's own)")
    parser.add_argument("--quick", action="store_true", help="one repeat of a few steps, no warm-up round")
    parser.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results"),
                        help="folder for overhead_models.md and .json (default benchmarks/results)")
    parser.add_argument("--memory-child", nargs=2, metavar=("MODEL", "VARIANT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    quick = {"steps": 4, "warmup_steps": 2, "repeats": 1, "max_retries": 1}
    full = {"steps": 50, "warmup_steps": WARMUP_STEPS, "repeats": 3, "max_retries": 12}
    for key, value in (quick if args.quick else full).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.warmup_rounds = 0 if args.quick else 1
    args.models = [m for m in args.models.split(",") if m]
    args.variants = list(dict.fromkeys(["bare", *[v for v in args.variants.split(",") if v]]))
    args.memory_variants = [v for v in args.memory_variants.split(",") if v]
    unknown = (set(args.models) - set(MODELS)) | (set(args.variants) - set(VARIANTS)) | (
        set(args.memory_variants) - set(VARIANTS))
    if unknown:
        parser.error(f"unknown models or variants: {sorted(unknown)}")
    if args.memory_variants and "bare" not in args.memory_variants:
        args.memory_variants.insert(0, "bare")
    if min(args.steps, args.repeats, args.warmup_steps) < 1 or args.max_retries < 0:
        parser.error("--steps, --repeats and --warmup-steps must be >= 1, --max-retries >= 0")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if args.memory_child:
        model, variant = args.memory_child
        print("MEMORY " + json.dumps(memory_child(model, variant, args.steps, args.warmup_steps)), flush=True)
        return 0
    quiet_lightning()
    warnings.filterwarnings("ignore", category=ConvergenceWarning)  # findings on random data: not the point here
    env = environment()
    command = command_line("benchmarks/bench_overhead_models.py", argv)
    print(command)
    print(f"python {env['python']}, torch {env['torch']}, lightning {env['lightning']}, torch threads "
          f"{env['torch_threads']}, cpus {env['cpu_count']}, cpu: {env['cpu_model']}")
    print(f"settings: timed steps {args.steps}, warm-up steps {args.warmup_steps}, repeats {args.repeats}, "
          f"warm-up rounds {args.warmup_rounds}, rerun above {args.max_foreign} foreign cores "
          f"(at most {args.max_retries} reruns), log_every_n_steps {LOG_EVERY}")
    version = package_version()
    print(f"package: commit {version.get('commit')}, sources {version['sources_sha256']}"
          + (" (uncommitted changes in lightning_convergence/)" if version.get("package_uncommitted_changes") else ""))
    began = time.perf_counter()
    disturbance = Disturbance(args.max_retries, args.max_wait, args.max_foreign)
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench_models_") as root:
        for model in args.models:
            spec = MODELS[model]
            info = {"description": spec.description, "batch": spec.batch,
                    "params": parameter_summary(make_task(model))}
            print(f"\nmodel {model} ({info['params']['parameters']:,} parameters) ...", flush=True)
            model_began = time.perf_counter()

            def fit(variant: str, steps: int, warmup: int, last_repeat: bool, model: str = model) -> PhaseFit:
                return run_fit(model, variant, steps, warmup, root)

            # The warm-up round warms the process (imports, allocator, TensorBoard): the first model's
            # only; every fit still drops its first warm-up steps.
            warmup_rounds = args.warmup_rounds if model == args.models[0] else 0
            fits = run_paired(args.variants, fit, args.repeats, warmup_rounds, args.steps, args.warmup_steps,
                              disturbance)
            variants = summarise_model(fits)
            checks = verdicts(variants)
            disturbance.wait()
            stats_pass = time_stats_pass(model)
            results[model] = {**info, "variants": variants, "targets": checks, "stats_pass": stats_pass,
                              "wall_s": time.perf_counter() - model_began}
            print_model(model, results[model], variants, checks)
    memory: dict[str, Any] = {}
    if args.memory_variants:
        print("\nmemory (one fresh subprocess per model and variant) ...", flush=True)
        memory = measure_memory(args.models, args.memory_variants, args.steps, args.warmup_steps, disturbance)
    wall = time.perf_counter() - began
    version_at_end = package_version()
    if version_at_end["sources_sha256"] != version["sources_sha256"]:
        print(f"WARNING: the package's sources changed during this run (commit {version.get('commit')} -> "
              f"{version_at_end.get('commit')}): the numbers mix two versions; run it again.")
    print(f"\ntotal wall time {wall:.0f} s (of which {disturbance.waited_s:.0f} s waiting for other processes to "
          f"go quiet; {disturbance.reruns} disturbed fits rerun)")
    payload = {"command": command, "environment": env, "settings": {k: v for k, v in vars(args).items()
                                                                     if k != "memory_child"},
               "labels": LABELS, "targets": TARGETS, "models": results, "memory": memory, "wall_s": wall,
               "waited_s": disturbance.waited_s, "reruns": disturbance.reruns,
               "package": version, "package_at_end": version_at_end,
               "date": time.strftime("%Y-%m-%d %H:%M %Z")}
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "overhead_models.json"), "w") as handle:
        json.dump(payload, handle, indent=2)
    with open(os.path.join(args.out, "overhead_models.md"), "w") as handle:
        handle.write(write_markdown(payload))
    print(f"wrote {os.path.join(args.out, 'overhead_models.md')} and overhead_models.json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
