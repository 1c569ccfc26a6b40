"""Benchmark: what GradientNormMonitor, AutoClip, DeadNeuronTracker and the suite add to a training
step, and how close the monitor's statistics pass is to the floor.

Run::

    python benchmarks/bench_gradient_monitor.py [--steps N] [--repeats R] [--quick] [--json OUT]

Method. Everything runs in one process, on CPU, with paired, alternating repeats: each repeat runs
every variant once, in an order rotated per repeat (ABC, BCA, CAB, ...), so slow drift of the
machine hits every variant alike. A warm-up round of every variant (short fits) runs first and
is discarded.
Figures are medians over repeats; a ratio is the median of the per-repeat paired ratios (variant /
baseline of the same repeat), printed as "+x.x%".

1. Training step. A real ``lightning.Trainer.fit`` on CPU with a ``TensorBoardLogger`` in a temporary
   directory, ``log_every_n_steps=50``, no progress bar, checkpointing or model summary. The model:
   an MLP of 50 ``Linear(507, 507)`` layers (100 parameter tensors, 12.9M parameters) with ReLU and
   He (Kaiming) initialisation, cross-entropy on random data, Adam, batch 64. (With PyTorch's
   default init this deep MLP's first-layer gradients vanish to ~1e-19, whose squares are
   subnormal floats; that makes every sum of squares on CPU several times slower; ``--init
   default`` runs that case.) Variants: ``bare`` (the model alone); ``floor`` (plus a callback
   that reads every gradient once per step, ``g.sum()`` in ``on_before_optimizer_step``: what any
   per-step statistics pass must cost at least); ``monitor`` (plus ``GradientNormMonitor()`` at
   defaults); ``recipe`` (Lightning's documented recipe instead,
   ``on_before_optimizer_step: self.log_dict(grad_norm(self, norm_type=2))``); ``autoclip`` (plus
   ``AutoClip()`` at defaults, alone: percentile mode); ``tracker`` (plus ``DeadNeuronTracker()``
   at defaults: forward hooks on the 49 ReLU modules feed per-unit sums on one training step in
   10, steps 0, 10, 20, ...; the window is read and judged on logging steps); ``tracker_every_step``
   (plus ``DeadNeuronTracker(sample_every_n_steps=1)``: every step sampled, the most it can cost);
   ``suite`` (plus ``default_callbacks(auto_remediate=True)``, whatever it holds: at the time of
   writing GradientNormMonitor, DeadNeuronTracker, PlateauAdvisor and ``AutoClip(mode="zscore")``,
   which reuses the monitor's gradient pass; the script stops if the monitor, the tracker or
   AutoClip is missing). Both AutoClip modes multiply every gradient by the clip coefficient on
   every step once active (by 1 when nothing is clipped): no host read, but one more read and
   write of all gradients. The tracker's first sampled step (step 0, in the dropped warm-up) also
   records the wiring on the autograd graph once; ReDo needs two judged windows (step 99 at the
   earliest), after the last step of a default fit (81 steps), so the suite's ReDo does not act.

   Step time is the interval between consecutive ``on_train_batch_start`` calls. Start-to-start
   is used rather than start-to-end because Lightning sends logged metrics to the logger after
   ``on_train_batch_end``, so an interval ending there would miss the recipe's logger writes.
   Each fit runs ``warmup + N + 1`` steps: the first ``warmup`` are dropped (Adam state, the
   monitor's first-step setup, and the 25 steps in which ``AutoClip(mode="zscore")`` only
   collects norms and does not clip yet), the last one only closes the last interval. With the
   defaults (warm-up 30, N 50) the timed steps 30..79 are exactly one 50-step logging cycle,
   holding the logging step 49 (where the monitor, AutoClip and Lightning's logger connector
   write).

   Per fit, the step time is robust to short bursts of CPU from other processes (this machine
   is shared): ``steady`` = median interval of the ordinary steps, plus the logging cycle's extra
   cost, ``sum(interval - steady)`` over the logging step and the one after it (any deferred
   work), spread over the N steps. Without noise
   this equals the plain mean (also recorded in the JSON). The CPU time that other processes used
   during each timed window is measured from ``/proc/stat``. A fit during which they used more than
   ``--max-foreign`` cores is run again (at most ``--max-retries`` times per run), and the table
   shows the load that remained. Fit setup and teardown are not timed. The monitor's histograms
   (every 500 steps at defaults) fall outside the window; section 3 times one and amortises it.

2. Statistics pass alone, on 100 fp32 tensors shaped like the model's gradients (12.9M values):
   ``sum_of_squares(backend="foreach")`` (the monitor's every-step pass), ``tensor_stats(backend=
   "foreach")`` (its logging-step pass), ``torch._foreach_norm`` (for comparison), against the
   floor: one read of every tensor, ``[t.sum() for t in tensors]``; ``tensor_stats(backend=
   "reference")`` for information. "hot": repeated calls (tensors in the CPU caches). "cold":
   each call after streaming a 512 MB buffer (the tensors come from memory, as gradients that
   backward wrote a while ago do). Ratios are to the floor measured the same way.

3. Hook cost in place. In the ``monitor``, ``autoclip`` and ``suite`` fits the callbacks' own
   per-step hooks are wrapped with ``perf_counter`` (same behaviour, about a microsecond added),
   giving their cost on ordinary and on logging steps; the floor's and the recipe's hooks are
   timed the same way. Note that the first read of fresh gradients pays for bringing them into
   the caches, which Adam would otherwise pay right after, so hook time overstates what the
   step loses. In the suite, AutoClip's hook comes after the monitor's and finds the gradient
   statistics already computed. After the last monitor fit, one gradient
   histogram write is timed (the monitor's private ``_write_histograms``; skipped if it changed).
   Every timed callback is timed on each per-step Callback hook its class overrides (the tracker:
   ``on_train_batch_start``, ``on_before_backward``, ``on_train_batch_end``), and so is any
   further callback of the suite (PlateauAdvisor: ``on_train_batch_start``,
   ``on_before_optimizer_step``, ``on_train_batch_end``), reported as its share of the suite's
   window mean. The tracker also spends time outside Lightning's hooks, in its forward hooks on the
   activation modules: each is wrapped the same way (through the tracker's private
   ``_sites._hook``; if that changed, a note is printed and they are left out here, while the
   whole-step ratio of section 1 still holds them) and summed per step. As the tracker works on one
   step in 10, its ordinary steps are split into sampled and unsampled ones (the ordinary median
   alone would be an unsampled step); the window mean (5 sampled steps in the 50 timed ones, plus
   the logging step where it reads and judges the window) is what it costs on average. On CPU the
   sampled steps' per-unit reductions run inside the forward hooks, so the hook time holds them;
   on a GPU they would be queued and paid later in the step, where only section 1 sees them.

The model is in ``_mlp.py``, the paired-repeat machinery in ``_paired.py``, the low-level timers in
``_timing.py``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.loggers import TensorBoardLogger
from torch import Tensor

try:  # run as a script: benchmarks/ is on sys.path
    from _mlp import BATCH, DEPTH, MLP, WIDTH, FloorPass, RecipeMLP, gradient_like_tensors, make_loader
    from _paired import (Disturbance, FitResult, hook_line, hook_summary, measure_candidates, print_stats,
                         print_training, run_paired, special_step_lines, summarise_paired, window_line)
    from _report import quiet_lightning
    from _timing import ForwardHookTimer, StepTimer, environment, median, wrap_timed
except ImportError:  # imported as benchmarks.bench_gradient_monitor
    from benchmarks._mlp import BATCH, DEPTH, MLP, WIDTH, FloorPass, RecipeMLP, gradient_like_tensors, make_loader
    from benchmarks._paired import (Disturbance, FitResult, hook_line, hook_summary, measure_candidates, print_stats,
                                    print_training, run_paired, special_step_lines, summarise_paired, window_line)
    from benchmarks._report import quiet_lightning
    from benchmarks._timing import ForwardHookTimer, StepTimer, environment, median, wrap_timed
from lightning_convergence import (AutoClip, DataLoadingMonitor, DeadNeuronTracker, GradientNormMonitor,  # noqa: E402
                                   InitializationAudit, InputSanityChecker, PlateauAdvisor, default_callbacks)
from lightning_convergence.stats import sum_of_squares, tensor_stats

LOG_EVERY = 50
HISTOGRAM_EVERY = 500  # GradientNormMonitor's default histogram_every_n_steps
ZSCORE_WARMUP = 25  # AutoClip(mode="zscore") collects this many norms before it clips
WARMUP_STEPS = 30  # dropped steps per fit: past that warm-up, and steps 30..79 hold one logging cycle
TRACKER_SAMPLE_EVERY = 10  # DeadNeuronTracker's default sample_every_n_steps
VARIANTS = ("bare", "floor", "monitor", "recipe", "autoclip", "tracker", "tracker_every_step", "advisor", "checks",
            "suite", "fixedclip")
# "fixedclip": Lightning's own `gradient_clip_val=1.0` (torch's clip_grad_norm_: a norm pass and a
# scaling pass), the fair peer of AutoClip's cost.
# The per-step Callback hooks; each timed callback is timed on those its class overrides.
STEP_HOOKS = ("on_train_batch_start", "on_before_backward", "on_after_backward", "on_before_optimizer_step",
              "on_before_zero_grad", "on_train_batch_end")
FORWARD_HOOKS = "forward_hooks"  # DeadNeuronTracker's hooks on the activation modules, summed per step
# Variants whose callbacks' hooks are timed; the timed hooks are the keys of FitResult.hooks, "role.hook".
TIMED_VARIANTS = ("monitor", "autoclip", "tracker", "tracker_every_step", "advisor", "checks", "suite")
ROLES: dict[type, str] = {GradientNormMonitor: "monitor", AutoClip: "autoclip", DeadNeuronTracker: "tracker"}


# --------------------------------------------------------------------------------- section 1: training


class HistogramProbe(Callback):
    """Times one gradient-histogram write at ``on_train_end``, while the logger is still open."""

    def __init__(self, monitor: GradientNormMonitor) -> None:
        self.monitor = monitor
        self.ms: float | None = None

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        try:  # private API of the monitor: skip quietly if it changed
            track = next(iter(self.monitor._tracks.values()))
            start = time.perf_counter()
            self.monitor._write_histograms(trainer, track, trainer.global_step)
            self.ms = (time.perf_counter() - start) * 1e3
        except (AttributeError, StopIteration, TypeError) as error:
            print(f"  (histogram timing skipped: {error!r})")


def role(callback: Callback) -> str:
    return ROLES.get(type(callback), type(callback).__name__.lower())


def own_step_hooks(callback: Callback) -> list[str]:
    """The per-step hooks that the callback's class overrides (the ones that cost anything)."""
    return [h for h in STEP_HOOKS if getattr(type(callback), h) is not getattr(Callback, h)]


def suite_callbacks() -> dict[str, Callback]:
    """``default_callbacks(auto_remediate=True)``, by role, in its order (whatever else it holds is
    kept, and timed like the rest under its class name)."""
    callbacks = default_callbacks(auto_remediate=True)
    by_role = {role(c): c for c in callbacks}
    missing = {"monitor", "autoclip", "tracker"} - set(by_role)
    if missing or len(by_role) != len(callbacks):
        raise RuntimeError(f"default_callbacks changed: {[type(c).__name__ for c in callbacks]}")
    return by_role


def run_fit(variant: str, steps: int, warmup: int, root: str, init: str, probe_histogram: bool) -> FitResult:
    max_steps = warmup + steps + 1
    torch.manual_seed(0)
    model = RecipeMLP(init) if variant == "recipe" else MLP(init)
    callbacks: list[Callback] = []
    hooks: dict[str, list[float]] = {}
    probe: HistogramProbe | None = None
    floor: FloorPass | None = None
    if variant == "floor":
        floor = FloorPass()
        callbacks.append(floor)
    timed: dict[str, Callback] = {}
    if variant == "monitor":
        timed = {"monitor": GradientNormMonitor()}
    elif variant == "autoclip":
        timed = {"autoclip": AutoClip()}
    elif variant == "tracker":
        timed = {"tracker": DeadNeuronTracker()}
    elif variant == "tracker_every_step":
        timed = {"tracker": DeadNeuronTracker(sample_every_n_steps=1)}
    elif variant == "advisor":
        timed = {"plateauadvisor": PlateauAdvisor()}
    elif variant == "checks":
        timed = {"inputsanitychecker": InputSanityChecker(), "initializationaudit": InitializationAudit(),
                 "dataloadingmonitor": DataLoadingMonitor()}
    elif variant == "suite":
        timed = suite_callbacks()
    for name_of_role, callback in timed.items():
        for name in own_step_hooks(callback):
            wrap_timed(callback, name, hooks.setdefault(f"{name_of_role}.{name}", []))
        if isinstance(callback, DeadNeuronTracker):
            forward = ForwardHookTimer(hooks.setdefault(f"{name_of_role}.{FORWARD_HOOKS}", []))
            if forward.wrap(callback):
                callbacks.append(forward)
            else:
                del hooks[f"{name_of_role}.{FORWARD_HOOKS}"]
                print("  (tracker forward hooks not timed: DeadNeuronTracker's private `_sites._hook` changed)")
        callbacks.append(callback)
    if variant == "monitor" and probe_histogram:
        probe = HistogramProbe(timed["monitor"])
        callbacks.append(probe)
    timer = StepTimer(warmup)
    callbacks.append(timer)  # last: its stamp follows every other batch-start hook
    trainer = Trainer(
        accelerator="cpu",
        devices=1,
        max_steps=max_steps,
        max_epochs=1,
        logger=TensorBoardLogger(root, name=variant),
        log_every_n_steps=LOG_EVERY,
        gradient_clip_val=1.0 if variant == "fixedclip" else None,
        enable_progress_bar=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        callbacks=callbacks,
    )
    trainer.fit(model, make_loader(max_steps))
    if trainer.global_step != max_steps:
        raise RuntimeError(f"{variant}: fit ran {trainer.global_step} steps, expected {max_steps}.")
    if variant == "recipe":
        hooks["recipe.on_before_optimizer_step"] = model.hook_seconds
    if floor is not None:
        hooks["floor.on_before_optimizer_step"] = floor.hook_seconds
    return FitResult(timer.intervals(), warmup, timer.foreign.cores, hooks, probe.ms if probe else None, LOG_EVERY)


def bench_training(args: argparse.Namespace, disturbance: Disturbance) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench_gnm_") as root:
        def fit(variant: str, steps: int, warmup: int, last_repeat: bool) -> FitResult:
            return run_fit(variant, steps, warmup, root, args.init, variant == "monitor" and last_repeat)

        fits = run_paired(VARIANTS, fit, args.repeats, args.warmup_rounds, args.steps, args.warmup_steps,
                          disturbance)
    out: dict[str, Any] = {"timed_steps": args.steps, "warmup_steps": args.warmup_steps,
                           "variants": summarise_paired(fits, "bare")}
    out["hooks"] = summarise_hooks(fits, out["variants"]["bare"]["step_ms"])
    return out


def timed_names(fits: list[FitResult], prefix: str = "") -> list[str]:
    """The timed hooks of a variant's fits ("role.hook"), those of one role with ``prefix="role."``."""
    return [name for name in fits[0].hooks if name.startswith(prefix)] if fits else []


def summarise_hooks(fits: dict[str, list[FitResult]], bare_ms: float) -> dict[str, Any]:
    """Hook milliseconds per step (one optimizer, no accumulation: call i is step i)."""
    out: dict[str, Any] = {v: hook_summary(fits[v], timed_names(fits[v]), bare_ms)
                           for v in TIMED_VARIANTS if fits.get(v)}
    for variant, every in (("tracker", TRACKER_SAMPLE_EVERY), ("tracker_every_step", 1),
                           ("suite", TRACKER_SAMPLE_EVERY)):
        if variant in out:
            names = timed_names(fits[variant], "tracker.")
            tracker = hook_summary(fits[variant], names, bare_ms, sample_every=every)
            out[variant]["tracker"] = tracker
            if variant == "suite":
                out[variant]["roles"] = {
                    r: hook_summary(fits[variant], timed_names(fits[variant], f"{r}."), bare_ms)["window_mean_ms"]
                    for r in dict.fromkeys(n.split(".", 1)[0] for n in timed_names(fits[variant]))}
    if "monitor" in out:
        m = out["monitor"]
        m["obs_ordinary_step_ms"] = m["ordinary_step_ms_per_hook"]["monitor.on_before_optimizer_step"]
        histograms = [f.histogram_ms for f in fits["monitor"] if f.histogram_ms is not None]
        if histograms:
            m["histogram_write_ms"] = histograms[-1]
            m["histogram_amortised_fraction_of_bare"] = histograms[-1] / HISTOGRAM_EVERY / bare_ms
    for variant in ("floor", "recipe"):
        key = f"{variant}.on_before_optimizer_step"
        calls = [t * 1e3 for f in fits[variant] for t in f.hooks[key][f.first_step:]]
        if calls:
            out[variant] = {"obs_ms": median(calls), "obs_fraction_of_bare": median(calls) / bare_ms}
    return out


# --------------------------------------------------------------------------------- section 2: stats pass


def stats_candidates(tensors: list[Tensor]) -> dict[str, Callable[[], Any]]:
    """The candidates by name; the floor comes first and ratios are to it."""
    return {
        "floor: [t.sum() for t in tensors]": lambda: [t.sum() for t in tensors],
        "torch._foreach_norm(tensors)": lambda: torch._foreach_norm(tensors),
        "sum_of_squares(foreach) [every step]": lambda: sum_of_squares(tensors, backend="foreach"),
        "tensor_stats(foreach) [logging step]": lambda: tensor_stats(tensors, backend="foreach"),
        "tensor_stats(reference) [info]": lambda: tensor_stats(tensors, backend="reference"),
    }


def bench_stats(repeats: int, disturbance: Disturbance) -> dict[str, Any]:
    tensors = gradient_like_tensors()
    candidates = measure_candidates(stats_candidates(tensors), repeats, disturbance,
                                    calls=lambda name: 1 if "reference" in name else 5)
    return {"values": sum(t.numel() for t in tensors), "tensors": len(tensors), "candidates": candidates}


# --------------------------------------------------------------------------------- reporting


def print_hooks(hooks: dict[str, Any]) -> None:
    print("\n== 3. Hook cost in place (medians over the timed steps of all repeats) ==")
    if "monitor" in hooks:
        m = hooks["monitor"]
        hook_line("monitor, all hooks, ordinary step:", m["ordinary_step_ms"])
        hook_line("monitor, on_before_optimizer_step, ordinary:", m["obs_ordinary_step_ms"])
        special_step_lines("monitor, all hooks", m, LOG_EVERY)
        window_line("monitor, all hooks", m)
        if "histogram_write_ms" in m:
            hook_line("monitor, one gradient-histogram write:", m["histogram_write_ms"],
                  f" (every {HISTOGRAM_EVERY} steps: {m['histogram_amortised_fraction_of_bare'] * 100:.2f}% "
                  "of the bare step)", fmt="8.1f")
    if "autoclip" in hooks:
        a = hooks["autoclip"]
        hook_line("autoclip, on_before_optimizer_step, ordinary:", a["ordinary_step_ms"])
        special_step_lines("autoclip", a, LOG_EVERY)
        window_line("autoclip", a)
    for variant in ("tracker", "tracker_every_step"):
        if variant in hooks:
            tracker_lines(variant, hooks[variant]["tracker"])
            special_step_lines(f"{variant}, all hooks", hooks[variant], LOG_EVERY)
            window_line(f"{variant}, all hooks", hooks[variant])
    if "suite" in hooks:
        s = hooks["suite"]
        hook_line("suite, all hooks, ordinary step:", s["ordinary_step_ms"])
        hook_line("suite, of which AutoClip (zscore), ordinary:",
              s["ordinary_step_ms_per_hook"]["autoclip.on_before_optimizer_step"],
              " (reuses the monitor's gradient pass)")
        t = s["tracker"]
        hook_line("suite, of which the tracker, sampled step:", t["sampled_step_ms"],
                  f" (unsampled {t['unsampled_step_ms']:.2f} ms)")
        special_step_lines("suite, all hooks", s, LOG_EVERY)
        window_line("suite, all hooks", s)
        for name_of_role, ms in s["roles"].items():
            hook_line(f"suite, of which {name_of_role}, window mean:", ms)
    if "floor" in hooks:
        r = hooks["floor"]
        hook_line("floor, on_before_optimizer_step (g.sum()):", r["obs_ms"],
              f" ({r['obs_fraction_of_bare'] * 100:.1f}% of the bare step)")
    if "recipe" in hooks:
        r = hooks["recipe"]
        hook_line("recipe, on_before_optimizer_step:", r["obs_ms"],
              f" ({r['obs_fraction_of_bare'] * 100:.1f}% of the bare step, before its logger writes)")


def tracker_lines(label: str, t: dict[str, Any]) -> None:
    """The tracker's hooks on sampled and unsampled ordinary steps, forward hooks apart."""
    forward = f"tracker.{FORWARD_HOOKS}"
    for key in ("sampled", "unsampled"):
        if not t[f"{key}_steps"]:
            continue
        tail = f" ({t[f'{key}_steps']} steps"
        if forward in t[f"{key}_step_ms_per_hook"]:
            tail += f"; of which forward hooks {t[f'{key}_step_ms_per_hook'][forward]:.2f} ms"
        hook_line(f"{label}, all hooks, {key} step:", t[f"{key}_step_ms"], tail + ")")


# --------------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=50,
                        help="timed optimizer steps per fit (default 50; max_steps = warm-up + N + 1)")
    parser.add_argument("--repeats", type=int, default=None, help="paired repeats (default 5; --quick 1)")
    parser.add_argument("--warmup-steps", type=int, default=None,
                        help=f"dropped steps per fit (default {WARMUP_STEPS}: past AutoClip(zscore)'s 25-step warm-up)")
    parser.add_argument("--init", choices=("he", "default"), default="he",
                        help="MLP weight init (default he; 'default' makes the first layers' gradients vanish)")
    parser.add_argument("--max-foreign", type=float, default=0.25,
                        help="rerun a fit when other processes used more cores than this (default 0.25)")
    parser.add_argument("--max-retries", type=int, default=None, help="reruns per run at most (default 6; --quick 1)")
    parser.add_argument("--max-wait", type=float, default=20.0,
                        help="before each measurement, wait up to this many seconds for other processes to "
                             "go quiet (default 20)")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's own)")
    parser.add_argument("--quick", action="store_true", help="one repeat, no warm-up round, fewer stats repeats")
    parser.add_argument("--json", metavar="OUT", default=None, help="also write the numbers as JSON to OUT")
    args = parser.parse_args(argv)
    defaults = {"warmup_steps": WARMUP_STEPS}
    if args.quick:
        defaults.update({"repeats": 1, "warmup_rounds": 0, "stats_repeats": 3, "max_retries": 1})
    else:
        defaults.update({"repeats": 5, "warmup_rounds": 1, "stats_repeats": 11, "max_retries": 6})
    for key, value in defaults.items():
        if getattr(args, key, None) is None:
            setattr(args, key, value)
    if min(args.steps, args.repeats, args.warmup_steps) < 1 or args.max_retries < 0:
        parser.error("--steps, --repeats and --warmup-steps must be >= 1, --max-retries >= 0")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    quiet_lightning()
    env = environment()
    print("bench_gradient_monitor " + " ".join(sys.argv[1:] if argv is None else argv))
    print(f"python {env['python']}, torch {env['torch']}, lightning {env['lightning']}, torch threads "
          f"{env['torch_threads']}, cpus {env['cpu_count']}, cpu: {env['cpu_model']}")
    print(f"model: MLP {DEPTH} x Linear({WIDTH}, {WIDTH}), {2 * DEPTH} parameter tensors, "
          f"{DEPTH * (WIDTH * WIDTH + WIDTH):,} parameters, init {args.init}, Adam, batch {BATCH}, "
          f"log_every_n_steps {LOG_EVERY}")
    print(f"settings: timed steps {args.steps}, warm-up steps {args.warmup_steps}, repeats {args.repeats}, "
          f"warm-up rounds {args.warmup_rounds}, stats repeats {args.stats_repeats}, "
          f"rerun above {args.max_foreign} foreign cores (at most {args.max_retries} reruns)")
    print("(this machine may be shared: the CPU other processes use is measured; see 'other cores')")
    if args.warmup_steps < ZSCORE_WARMUP:
        print(f"note: with fewer than {ZSCORE_WARMUP} warm-up steps the suite's AutoClip(zscore) does not clip in "
              "the first timed steps, so its cost is understated")
    began = time.perf_counter()
    disturbance = Disturbance(args.max_retries, args.max_wait, args.max_foreign)
    print("\nsection 2 (statistics pass) ...", flush=True)
    stats_result = bench_stats(args.stats_repeats, disturbance)
    print("section 1 (training fits) ...", flush=True)
    training_result = bench_training(args, disturbance)

    print_training(training_result, args.repeats)
    print_stats(stats_result, args.stats_repeats)
    print_hooks(training_result["hooks"])
    print(f"\ntotal wall time {time.perf_counter() - began:.0f} s (of which {disturbance.waited_s:.0f} s waiting for "
          f"other processes to go quiet; {disturbance.reruns} disturbed measurements rerun)")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"environment": env, "settings": vars(args), "training": training_result,
                       "stats": stats_result, "waited_s": disturbance.waited_s, "reruns": disturbance.reruns},
                      handle, indent=2)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
