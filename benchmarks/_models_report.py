"""The markdown of ``bench_overhead_models.py``: tables and sentences generated from the numbers.

Nothing here imports ``lightning_convergence`` or torch.
"""

from __future__ import annotations

from typing import Any

try:  # run as a script: benchmarks/ is on sys.path
    from _report import markdown_table
except ImportError:  # imported as benchmarks._models_report
    from benchmarks._report import markdown_table

MIB = 2**20
GPU_ROW = "GPU, ~100M-parameter model: not yet measured (no GPU available)"


def pct(ratio: float) -> str:
    return f"{(ratio - 1.0) * 100:+.1f}%"


def _spread(ratios: list[float]) -> str:
    return " ".join(pct(r) for r in ratios)


def _load(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def model_table(payload: dict[str, Any], model: str) -> str:
    labels = payload["labels"]
    rows = [["variant", "step ms", "vs bare (median)", "per repeat", "hook ms/step", "hook % of bare step",
             "other cores (max)"]]
    for variant, row in payload["models"][model]["variants"].items():
        hook = f"{row['hook_ms']:.2f}" if "hook_ms" in row else "-"
        frac = f"{row['hook_fraction_of_bare'] * 100:.2f}%" if "hook_ms" in row else "-"
        rows.append([f"`{variant}`: {labels[variant]}", f"{row['step_ms']:.1f}", pct(row["ratio_to_bare"]),
                     _spread(row["ratio_to_bare_per_repeat"]), hook, frac, _load(row["foreign_cores_max"])])
    return markdown_table(rows)


def targets_table(payload: dict[str, Any]) -> str:
    rows = [["model", "variant", "target", "whole step: median (per repeat)", "hook time", "verdict"]]
    for model, result in payload["models"].items():
        for check in result["targets"]:
            rows.append([model, f"`{check['variant']}`", f"<= {check['target']:.2f}x",
                         f"{check['step_ratio']:.3f}x ({' '.join(f'{r:.3f}' for r in check['step_ratio_per_repeat'])})",
                         f"{check['hook_ratio']:.4f}x", check["verdict"]])
    rows.append(["GPU, ~100M parameters", "all", "", "not yet measured (no GPU available)", "", ""])
    return markdown_table(rows)


def breakdown_table(payload: dict[str, Any]) -> str:
    """Hook ms per step (window mean) of each callback in the three suite variants, per model."""
    suites = ("suite", "suite_acting", "suite_log1")
    header = ["model", "callback"] + [f"`{s}` ms/step" for s in suites]
    rows = [header]
    for model, result in payload["models"].items():
        variants = result["variants"]
        owners: list[str] = []
        for s in suites:
            for owner in variants.get(s, {}).get("per_callback_ms", {}):
                if owner not in owners:
                    owners.append(owner)
        for owner in owners:
            cells = []
            for s in suites:
                ms = variants.get(s, {}).get("per_callback_ms", {}).get(owner)
                cells.append("-" if ms is None else f"{ms:.3f}")
            rows.append([model, owner, *cells])
    return markdown_table(rows) if len(rows) > 1 else "(no suite variant run)"


def top_hooks_table(payload: dict[str, Any], threshold: float = 0.005) -> str:
    """Per model and variant whose hooks cost more than ``threshold`` of the bare step: its three
    costliest hooks (window mean), and the hooks on sampled and unsampled ordinary steps."""
    rows = [["model", "variant", "hook ms/step", "costliest hooks (ms/step, window mean)",
             "sampled / unsampled ordinary step (ms)"]]
    for model, result in payload["models"].items():
        for variant, row in result["variants"].items():
            if "hook_ms" not in row or row["hook_fraction_of_bare"] < threshold:
                continue
            top = sorted(((n, ms) for n, ms in row["per_hook_ms"].items() if ms >= 0.01), key=lambda kv: -kv[1])[:3]
            rows.append([model, f"`{variant}`", f"{row['hook_ms']:.2f}",
                         "; ".join(f"{name} {ms:.2f}" for name, ms in top),
                         f"{row['hook_sampled_step_ms']:.2f} / {row['hook_unsampled_step_ms']:.2f}"])
    return markdown_table(rows) if len(rows) > 1 else f"(no variant's hooks above {threshold:.1%} of the bare step)"


def once_table(payload: dict[str, Any]) -> str:
    rows = [["model", "variant", "once-per-fit hooks above 1 ms (ms, median over repeats)"]]
    for model, result in payload["models"].items():
        for variant, row in result["variants"].items():
            big = {k: v for k, v in row.get("once_ms", {}).items() if v >= 1.0}
            if big:
                rows.append([model, f"`{variant}`", "; ".join(f"{k} {v:.1f}" for k, v in
                                                              sorted(big.items(), key=lambda kv: -kv[1]))])
    return markdown_table(rows) if len(rows) > 1 else "(none above 1 ms)"


def memory_table(payload: dict[str, Any]) -> str:
    memory = payload.get("memory") or {}
    rows = [["model", "parameter memory", "variant", "peak RSS", "extra peak RSS vs bare (x params)",
             "callbacks' tensors, most held (x params)", "of which (MiB, each one's most)", "held at the end"]]
    for model, by_variant in memory.items():
        for variant, row in by_variant.items():
            params = row["params"]["bytes"]
            extra = "-" if variant == "bare" or "extra_rss_bytes" not in row else (
                f"{row['extra_rss_bytes'] / MIB:+.1f} MiB ({row['extra_rss_fraction_of_params']:+.2f}x)")
            of_which = "; ".join(f"{k} {v / MIB:.2f}" for k, v in row["retained_by_callback"].items()
                                 if v >= 0.005 * MIB)
            at_end = row.get("retained_at_end_bytes")
            rows.append([model, f"{params / MIB:.1f} MiB", f"`{variant}`", f"{row['peak_rss_bytes'] / MIB:.0f} MiB",
                         extra, f"{row['retained_bytes'] / MIB:.2f} MiB ({row['retained_fraction_of_params']:.3f}x)",
                         of_which or "-", "-" if at_end is None else f"{at_end / MIB:.2f} MiB"])
    return markdown_table(rows) if len(rows) > 1 else "(memory not measured)"


def findings(payload: dict[str, Any]) -> list[str]:
    """Sentences generated from the numbers."""
    out = []
    models = payload["models"]
    loads = [row["foreign_cores_max"] for r in models.values() for row in r["variants"].values()
             if row["foreign_cores_max"] is not None]
    if loads:
        worst = max(loads)
        quality = ("the machine was quiet" if worst <= 0.1 else
                   "other processes used some CPU; compare the ratios with their per-repeat spread" if worst <= 0.3
                   else "**other processes disturbed the run**: the whole-step ratios are not to be trusted; "
                        "the hook times are less affected")
        out.append(f"Other processes used at most {worst:.2f} cores during any kept timed window "
                   f"({payload['reruns']} disturbed fits were rerun, {payload['waited_s']:.0f} s spent waiting for "
                   f"quiet): {quality}.")
    cheap = [(model, v, r) for model, res in models.items() for v, row in res["variants"].items()
             if v != "bare" and "hook_ms" in row and row["hook_fraction_of_bare"] < 0.01
             for r in row["ratio_to_bare_per_repeat"]]
    if cheap:
        low, high = min(c[2] for c in cheap), max(c[2] for c in cheap)
        out.append(f"Whole-step noise: the variants whose hooks cost under 1% of the bare step (so their true cost is "
                   f"under about 1%) had per-repeat step ratios from {pct(low)} to {pct(high)} in this run. That "
                   "spread, not the /proc/stat load, is the noise floor of the whole-step ratio on this machine: a "
                   "step ratio within it says nothing either way, and the hook times decide the targets.")
    for model, result in models.items():
        variants = result["variants"]
        stats = result.get("stats_pass")
        monitor = variants.get("monitor", {})
        if stats and "hook_unsampled_step_ms" in monitor:
            ordinary = monitor["hook_unsampled_step_ms"]
            out.append(f"{model}: GradientNormMonitor's hooks on an ordinary step: {ordinary:.2f} ms; its statistics "
                       f"pass alone (sum_of_squares, hot) {stats['sum_of_squares_ms']:.2f} ms, the floor of one read "
                       "of "
                       f"every gradient {stats['floor_ms']:.2f} ms. The rest, about "
                       f"{max(ordinary - stats['sum_of_squares_ms'], 0.0):.2f} ms, is split between the pass finding "
                       "the fresh gradients in memory rather than in the caches (timed alone, it runs hot) and the "
                       "monitor's per-step bookkeeping kept on the device (norm window, spike detector: a few dozen "
                       "small tensor operations, each with a fixed CPU dispatch cost that does not grow with the "
                       "model).")
        singles = {v: row for v, row in variants.items() if "hook_ms" in row and v not in
                   ("suite", "suite_acting", "suite_log1", "recipe")}
        if singles:
            v, row = max(singles.items(), key=lambda kv: kv[1]["hook_fraction_of_bare"])
            top = max(row["per_hook_ms"].items(), key=lambda kv: kv[1])
            out.append(f"{model}: the costliest callback alone is `{v}` ({row['hook_fraction_of_bare'] * 100:.2f}% "
                       f"of the bare step in hook time, whole step {pct(row['ratio_to_bare'])}); most of it in "
                       f"{top[0]} ({top[1]:.2f} ms/step).")
        if "anomaly" in variants:
            out.append(f"{model}: `Trainer(detect_anomaly=True)` costs {pct(variants['anomaly']['ratio_to_bare'])} "
                       f"of the step (per repeat {_spread(variants['anomaly']['ratio_to_bare_per_repeat'])}).")
        if "recipe" in variants and "monitor" in variants and "hook_ms" in variants["monitor"]:
            r, m = variants["recipe"], variants["monitor"]
            out.append(f"{model}: Lightning's grad_norm recipe: whole step {pct(r['ratio_to_bare'])}, its hook "
                       f"{r.get('hook_ms', float('nan')):.2f} ms/step; GradientNormMonitor: whole step "
                       f"{pct(m['ratio_to_bare'])}, hooks {m['hook_ms']:.2f} ms/step.")
        if "suite_log1" in variants and "suite" in variants and "hook_ms" in variants["suite"]:
            a, b = variants["suite"], variants["suite_log1"]
            out.append(f"{model}: logging every step instead of every 50 takes the suite from "
                       f"{a['hook_ms']:.2f} to {b['hook_ms']:.2f} ms/step in hooks (whole step "
                       f"{pct(a['ratio_to_bare'])} -> {pct(b['ratio_to_bare'])}).")
    for model, by_variant in (payload.get("memory") or {}).items():
        parts = [f"`{v}` {row['retained_fraction_of_params']:.3f}x" for v, row in by_variant.items() if v != "bare"]
        if parts:
            out.append(f"{model}: tensors the callbacks hold, as a multiple of the parameter memory: "
                       + ", ".join(parts) + ".")
        for v, row in by_variant.items():
            held, extra = row["retained_bytes"], row.get("extra_rss_bytes")
            if v == "bare" or extra is None or max(abs(extra), held) < MIB:
                continue
            if abs(extra - held) > 0.5 * max(held, MIB):
                why = ("shows less than that (the allocator reused memory freed earlier, or the peak came where the "
                       "buffer did not yet exist)" if extra < held else
                       "shows more than that (allocator slack, Python objects, other buffers than tensors)")
                out.append(f"{model}: `{v}`'s peak RSS differs from bare by {extra / MIB:+.1f} MiB while its callbacks "
                           f"hold {held / MIB:.1f} MiB of tensors: peak RSS {why}. The tensor count measures the "
                           "buffers; peak RSS, what the whole process needed at its peak.")
    return out


NOTES = """\
- **What the memory is.** `PlateauAdvisor` acting with `rollback=True` (its default) keeps a
  snapshot of the model's state and of the optimizer's state in CPU memory, taken when training
  starts and at each healthy window: with Adam (two moment tensors per parameter) 3x the
  parameters once Adam has state. Observing, it takes none. `GradientNormMonitor` with
  `track_updates=True` (its default) keeps, from a logging step's optimizer step to the end of that
  batch, a strided sample of each weight tensor (at most 4096 values) to estimate the update/weight
  ratio; on a GPU it lives in GPU memory. The rest (windows of per-layer norms, per-unit
  accumulators, the run log) is small.
- **Peak RSS vs tensors held.** The peak RSS difference includes allocator slack and whatever
  Python objects the callbacks create, and the allocator may put a buffer into memory that was
  freed earlier; each memory variant ran once, so its run-to-run noise was not measured. The
  tensor count is exact for tensors and misses everything else.
- **The acting suite here** pays its always-on costs: one host read per step for the non-finite
  skip checks (GradientNormMonitor, InputSanityChecker), AutoClip's z-score test (its scaling pass
  runs only when it clips: on CPU a coefficient of exactly 1 is skipped), PlateauAdvisor's snapshot
  at the start (once per fit) and at the healthy window of step 49 (in the logging step). ReDo needs
  two judged windows (step 99 at the earliest) and a rollback needs a divergence: neither fires in
  these short fits on random data, and both are rare events in a healthy run.
- **Hook time vs whole step.** Hook time leaves out Lightning's dispatch of the hook calls, the
  TensorBoard writer's background thread (which competes for the two cores) and the logger writes
  Lightning itself makes for `self.log` (the recipe's metrics); the whole-step ratio holds all of
  it but is noisy on this 2-core virtual machine even when /proc/stat shows no other process (see
  the noise-floor finding above). A ratio smaller than its per-repeat spread is not a result.
- **CPU only.** On a GPU the callbacks' reductions are queued asynchronously; a GPU measurement is
  still to be made (see the last row of the targets table).
- The bare model logs nothing itself (`self.log` is not called), so the callbacks' logging is
  charged in full; a real training step that logs its loss would make the ratios slightly smaller.
"""


def write_markdown(payload: dict[str, Any]) -> str:
    env, settings = payload["environment"], payload["settings"]
    lines = [
        "# Overhead of the suite on three models (CPU)",
        "",
        "Generated by `benchmarks/bench_overhead_models.py`; every number below comes from this run. "
        "The method is described in the script's docstring.",
        "",
        f"- Command: `{payload['command']}`",
        f"- Date: {payload['date']}; wall time {payload['wall_s']:.0f} s",
        f"- Machine: {env['cpu_model']}, {env['cpu_count']} CPUs, torch threads {env['torch_threads']}; no GPU",
        f"- Versions: python {env['python']}, torch {env['torch']}, lightning {env['lightning']}; "
        f"lightning_convergence at commit {payload['package'].get('commit')} (sources "
        f"{payload['package']['sources_sha256']}"
        + (", with uncommitted changes" if payload["package"].get("package_uncommitted_changes") else "") + ")",
        f"- Settings: {settings['steps']} timed steps per fit after {settings['warmup_steps']} dropped ones, "
        f"{settings['repeats']} paired repeats (rotated order), {settings['warmup_rounds']} warm-up round(s); "
        f"Trainer `log_every_n_steps=50` (1 for `suite_log1`); a fit is rerun when other processes used more "
        f"than {settings['max_foreign']} cores during it (at most {settings['max_retries']} reruns in all).",
        "",
        *([f"**Warning: the package's sources changed during this run** (commit {payload['package'].get('commit')} "
           f"-> {payload['package_at_end'].get('commit')}): the timed fits ran the code imported at the start, the "
           "memory subprocesses the code at the end. Run it again.", ""]
          if payload["package_at_end"]["sources_sha256"] != payload["package"]["sources_sha256"] else []),
        "Columns: **step ms**: robust mean step of a fit (median unsampled and sampled ordinary steps weighted 9:1, "
        "plus the logging step's extra spread over the window), median over repeats. **vs bare**: median of the "
        "per-repeat paired ratios to `bare`; **per repeat**: those ratios (their spread is the noise). **hook "
        "ms/step**: the callbacks' own hooks (and the tracker's forward hooks, the recipe's hook), summed per step "
        "and averaged over the timed window; **hook %**: that over the bare step. **other cores**: CPU that other "
        "processes used during the timed windows.",
        "",
        "## Targets",
        "",
        "Whole suite at defaults (`default_callbacks()`) <= 1.03x bare; each monitor alone <= 1.02x (AutoClip, a "
        "remedy, is held to 1.02x too, for information). Hook time is the robust measure; the whole-step ratio is "
        "given with its per-repeat values.",
        "",
        targets_table(payload),
        "",
        GPU_ROW,
        "",
    ]
    for model, result in payload["models"].items():
        p = result["params"]
        lines += [f"## {model}", "",
                  f"{result['description']}; {p['parameters']:,} parameters in {p['tensors']} tensors "
                  f"({p['bytes'] / MIB:.1f} MiB fp32), batch {result['batch']}, Adam. "
                  f"Measured in {result['wall_s']:.0f} s.", "",
                  model_table(payload, model), ""]
    lines += ["## Where the hook time goes", "",
              "Per suite variant, each callback's hooks (ms per step, window mean):", "", breakdown_table(payload), "",
              "Variants whose hooks cost more than 0.5% of the bare step: the costliest hooks, and the hook total on "
              "sampled (one step in 10: DeadNeuronTracker, InputSanityChecker) and unsampled ordinary steps:", "",
              top_hooks_table(payload), "",
              "Hooks called once per fit (outside the timed window):", "", once_table(payload), "",
              "## Memory", "",
              "Each variant once per model, in a fresh subprocess running the same fit: peak RSS "
              "(`VmHWM` in `/proc/self/status`; `getrusage(RUSAGE_SELF).ru_maxrss` is not used: Linux carries it "
              "over from the parent process across fork and exec, so every child reported the parent's peak), and "
              "the most tensor storage the callbacks (and the suite's "
              "shared run context) held beyond the model's parameters, gradients, buffers and the optimizer's "
              "state, found by walking the callbacks' attributes at every `on_train_batch_end` and at "
              "`on_train_end`, before the callbacks' own hooks there free anything (a buffer made and freed "
              "within one hook is not seen). Both are also given as a multiple of the model's fp32 parameter "
              "memory.", "",
              memory_table(payload), "",
              "## Findings", ""]
    lines += [f"- {s}" for s in findings(payload)]
    lines += ["", "## Notes", "", NOTES]
    return "\n".join(lines)
