"""The tables, sentences, figure and markdown of ``bench_autoclip_spikes.py``.

Kept apart from the runs so that each file stays short; nothing here runs a fit.
"""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

try:  # run as a script: benchmarks/ is on sys.path
    from _report import finite_mean, finite_median, markdown_table, spread
except ImportError:  # imported as benchmarks._spikes_report
    from benchmarks._report import finite_mean, finite_median, markdown_table, spread


@dataclass
class RunResult:
    variant: str
    seed: int
    spikes: bool  # the spikes were injected
    val_loss: float
    val_acc: float
    losses: list[float]
    norms: list[float]  # pre-clip global norm per step
    applied: list[float]  # the global norm the optimizer got (after AutoClip and Lightning's clip)
    clipped_steps: int | None  # None: no clipping in this variant
    counted_from_norms: bool  # Lightning's clip: counted here, not reported
    seconds: float

    @property
    def first_nonfinite(self) -> int | None:
        return next((i for i, v in enumerate(self.losses) if not math.isfinite(v)), None)



SPIKE_FACTOR = 10.0  # a spike step "spiked" when its pre-clip norm exceeded this times the run's median


def _ordinary(values: Sequence[float], spike_steps: Sequence[int]) -> list[float]:
    spikes = set(spike_steps)
    return [v for i, v in enumerate(values) if i not in spikes]


def _tail_loss(r: RunResult, spike_steps: Sequence[int]) -> float:
    """Mean training loss over the last 20 ordinary steps."""
    return finite_mean(_ordinary(r.losses, spike_steps)[-20:]) if r.first_nonfinite is None else math.nan


def _spiked(r: RunResult, spike_steps: Sequence[int]) -> list[int]:
    """The spike steps whose pre-clip norm really spiked (a saturated softmax can give a zero gradient)."""
    typical = finite_median(_ordinary(r.norms, spike_steps))
    return [s for s in spike_steps if s < len(r.norms) and r.norms[s] > SPIKE_FACTOR * typical] if r.spikes else []


def summary_rows(results: dict[str, list[RunResult]], spike_steps: Sequence[int]) -> list[list[str]]:
    steps = len(next(iter(results.values()))[0].norms)
    rows = [["variant", "val loss mean [min, max]", "val acc mean [min, max]", "non-finite loss",
             f"clipped steps (of {steps}) mean [min, max]", "last-20 train loss mean [min, max]"]]
    for name, runs in results.items():
        bad = sum(r.first_nonfinite is not None for r in runs)
        clipped = "-"
        if runs[0].clipped_steps is not None:
            clipped = spread([float(r.clipped_steps) for r in runs], ".1f")
            clipped += " *" if runs[0].counted_from_norms else ""
        rows.append([name, spread([r.val_loss for r in runs], ".3f"), spread([r.val_acc for r in runs], ".3f"),
                     f"{bad}/{len(runs)} seeds" if bad else "no", clipped,
                     spread([_tail_loss(r, spike_steps) for r in runs], ".3f")])
    return rows


def seed_rows(results: dict[str, list[RunResult]], spike_steps: Sequence[int]) -> list[list[str]]:
    rows = [["variant", "seed", "val loss", "val acc", "first non-finite step", "clipped steps",
             "median norm pre -> applied", "spike steps: norm pre -> applied", "last-20 train loss", "fit s"]]
    for name, runs in results.items():
        for r in runs:
            spikes = [s for s in spike_steps if s < len(r.norms)] if r.spikes else []
            pre = finite_median(_ordinary(r.norms, spike_steps))
            applied = finite_median(_ordinary(r.applied, spike_steps))
            rows.append([
                name, str(r.seed), f"{r.val_loss:.3f}", f"{r.val_acc:.3f}",
                "-" if r.first_nonfinite is None else str(r.first_nonfinite),
                "-" if r.clipped_steps is None else str(r.clipped_steps), f"{pre:.3g} -> {applied:.3g}",
                ", ".join(f"{r.norms[s]:.3g} -> {r.applied[s]:.3g}" for s in spikes) or "-",
                f"{_tail_loss(r, spike_steps):.3f}", f"{r.seconds:.1f}",
            ])
    return rows


def _kept(runs: list[RunResult], spike_steps: Sequence[int]) -> list[float]:
    """Over the steps that spiked: the fraction of the pre-clip norm that reached the optimizer."""
    return [r.applied[s] / r.norms[s] for r in runs for s in _spiked(r, spike_steps)]


def verdicts(results: dict[str, list[RunResult]], spike_steps: Sequence[int]) -> list[str]:
    """One sentence per variant, derived from the numbers (no claim that the numbers do not make)."""
    clean = finite_mean([r.val_acc for r in results["clean"]]) if "clean" in results else math.nan
    lines = []
    for name, runs in results.items():
        acc = finite_mean([r.val_acc for r in runs])
        text = f"- **{name}**: mean val acc {acc:.3f}"
        if name != "clean" and math.isfinite(clean):
            text += f" ({(acc - clean) * 100:+.1f} points against `clean`)"
        text += f", last-20 train loss {finite_mean([_tail_loss(r, spike_steps) for r in runs]):.3f}"
        bad = sum(r.first_nonfinite is not None for r in runs)
        failed = sum(not r.val_acc >= 0.5 for r in runs)  # a NaN accuracy counts as failed
        if bad:
            text += f"; the training loss went NaN/Inf in {bad} of {len(runs)} seeds"
        if failed:
            text += f"; {failed} of {len(runs)} seeds ended below 50% val acc (chance is 10%)"
        if runs[0].clipped_steps is not None:
            pre = finite_median([finite_median(_ordinary(r.norms, spike_steps)) for r in runs])
            applied = finite_median([finite_median(_ordinary(r.applied, spike_steps)) for r in runs])
            text += (f"; it clipped {finite_mean([r.clipped_steps for r in runs]):.1f} of {len(runs[0].norms)} "
                     f"steps on average; on ordinary steps the norm reaching the optimizer had median "
                     f"{applied:.3g} (pre-clip {pre:.3g})")
            kept = _kept(runs, spike_steps)
            if kept:
                text += (f"; of the {len(kept)} spike steps whose norm exceeded {SPIKE_FACTOR:g}x the run's "
                         f"median, {sum(k < 0.999 for k in kept)} were clipped, to a median "
                         f"{finite_median(kept):.2g} of their norm")
        lines.append(text + ".")
    return lines


def headline(results: dict[str, list[RunResult]]) -> str:
    """Which variants lost seeds to the fault (below 50% val acc or a NaN/Inf loss), and which did not."""
    def lost(runs: list[RunResult]) -> int:
        return sum(not r.val_acc >= 0.5 or r.first_nonfinite is not None for r in runs)

    spiky = {name: runs for name, runs in results.items() if runs[0].spikes}
    failed = [f"`{name}` {lost(runs)}/{len(runs)}" for name, runs in spiky.items() if lost(runs)]
    held = [f"`{name}`" for name, runs in spiky.items() if not lost(runs)]
    return ("Seeds lost to the spikes (val acc below 50% or a NaN/Inf loss): "
            + (", ".join(failed) if failed else "none") + ". No seed lost: " + (", ".join(held) or "none") + ".")


def notes(results: dict[str, list[RunResult]], spike_steps: Sequence[int], w50: int) -> list[str]:
    """Why the variants behaved as they did, with this run's numbers."""
    out = []
    if "clean" in results:
        accs = [r.val_acc for r in results["clean"]]
        out.append(f"- Noise: `clean` alone ranges {min(accs):.3f} to {max(accs):.3f} in val acc over the seeds; "
                   "a difference between variants smaller than that is not a result.")
    dead = [r for r in results.get("none", []) if abs(_tail_loss(r, spike_steps) - math.log(10)) < 0.05]
    if dead:
        out.append(f"- `none`: in {len(dead)} of {len(results['none'])} seeds the training loss ended at ln 10 = "
                   "2.303: after a spike step the network predicts the same "
                   "distribution for every input and does not recover.")
    runs = results.get("zscore", [])
    if runs:
        steps = len(runs[0].norms)
        locked = sum(r.clipped_steps > steps / 2 for r in runs)
        warm = finite_median([finite_median(r.norms[:25]) for r in runs])
        later = finite_median([finite_median(_ordinary(r.norms, spike_steps)[25:]) for r in runs])
        out.append(
            f"- `zscore` clipped more than half of all steps in {locked} of {len(runs)} seeds. Its EMA starts "
            f"from the first 25 steps (median pre-clip norm {warm:.3g}); the ordinary norm afterwards had median "
            f"{later:.3g}. A norm with z > z_thresh is clipped to mu + z_thresh^2 sigma / z, close to mu when z "
            "is large, and that clipped value is what enters the EMA (as in the reference `zclip` 1.0.0 "
            "package), so a rise of many sigma after the warm-up is clipped rather than learned: the "
            "threshold can stay near the warm-up level, and the mode then acts as a fixed clip at that level.")
    runs = results.get("zscore w50", [])
    if runs:
        warm = finite_median([finite_median(r.norms[:w50]) for r in runs])
        kept = _kept(runs, spike_steps)
        out.append(
            f"- `zscore w50`: the same rule with its EMA started from the first {w50} steps (median pre-clip "
            f"norm {warm:.3g}); it clipped {finite_mean([r.clipped_steps for r in runs]):.1f} steps per run on "
            f"average, {sum(k < 0.999 for k in kept)} of the {len(kept)} spiking steps among them.")
    runs = results.get("percentile", [])
    if runs:
        window = "holds this whole run" if len(runs[0].norms) <= 1000 else "holds the last 1000 steps"
        out.append(
            "- `percentile` clips every step to the 10th percentile of the last (up to) 1000 norms, the current "
            f"one included: by design about 90% of steps are clipped. The window {window}, so the small "
            "norms of the first steps keep the threshold low.")
    runs = results.get("agc", [])
    if runs:
        out.append(
            "- `agc` scales each output unit's gradient down to 0.01 x its weight norm; a step counts as "
            f"clipped when any unit is: {finite_mean([r.clipped_steps for r in runs]):.1f} of "
            f"{len(runs[0].norms)} steps here. The final layer is left out, as the NFNets paper advises, "
            "so a spike's gradient in the last linear layer is not clipped at all.")
    return out


# --------------------------------------------------------------------------------- outputs


def _smooth(values: list[float], width: int) -> list[float]:
    out = []
    for i in range(len(values)):
        window = [v for v in values[max(0, i - width + 1): i + 1] if math.isfinite(v)]
        out.append(finite_mean(window))
    return out


PALETTE = ("tab:red", "tab:blue", "tab:purple", "tab:brown", "tab:pink", "tab:orange", "tab:green", "tab:cyan",
           "tab:olive", "navy", "magenta", "teal")
REFERENCE_STYLES = ({"color": "black", "linestyle": "--"}, {"color": "grey", "linestyle": ":"})


def plot(results: dict[str, list[RunResult]], args: argparse.Namespace, path: str) -> None:
    """Training loss (top) and applied gradient norm (bottom) of every variant on the first seed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(11, 8.5), sharex=True, height_ratios=[3, 2])
    references, spiky = iter(REFERENCE_STYLES), iter(PALETTE)
    for name, runs in results.items():
        run = runs[0]
        style = next(references, {"color": "grey"}) if not run.spikes else {"color": next(spiky, "black")}
        steps = _ordinary(range(len(run.losses)), args.spike_steps)
        losses = [run.losses[i] if math.isfinite(run.losses[i]) else math.nan for i in steps]
        top.plot(steps, _smooth(losses, 5), label=name, linewidth=1.3, **style)
        applied = [n if math.isfinite(n) and n > 0 else math.nan for n in run.applied]
        bottom.plot(range(len(applied)), applied, label=name, linewidth=0.8, **style)
    for ax in (top, bottom):
        ax.set_yscale("log")
        for s in args.spike_steps:
            ax.axvline(s, color="gold", alpha=0.7, linewidth=2, zorder=0)
    top.set_ylim(1e-2, 10.0)  # a run that blew up leaves the axis: ln 10 = 2.3 is chance level
    bottom.set_ylim(1e-3, 1e4)
    top.set_ylabel("training loss (5-step mean;\nspike batches left out; cut at 10)")
    top.set_title(f"Digits CNN, SGD lr {args.lr} momentum {args.momentum}; inputs x{args.spike_scale:g} on steps "
                  f"{list(args.spike_steps)} (gold); seed {args.seed_list[0]}")
    top.legend(ncol=4, fontsize=8)
    bottom.set_ylabel("global grad norm the optimizer got\n(after any clipping; cut at 1e4)")
    bottom.set_xlabel("optimizer step")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_markdown(path: str, args: argparse.Namespace, command: str, env: dict[str, Any],
                   results: dict[str, list[RunResult]], wall_s: float, png: str,
                   descriptions: dict[str, str], w50: int) -> None:
    steps = len(next(iter(results.values()))[0].norms)
    variants = "\n".join(f"- `{v}`: {descriptions[v]}" for v in results)
    text = f"""# AutoClip against injected gradient spikes

Generated by `benchmarks/bench_autoclip_spikes.py`; rerunning it rewrites this file.

```bash
{command}
```

Machine: {env['cpu_model']}, {env['cpu_count']} CPUs, torch threads {env['torch_threads']};
python {env['python']}, torch {env['torch']}, lightning {env['lightning']}. Wall time {wall_s:.0f} s.

## Setup

The digits CNN of `lightning_convergence.demo` (1500 train / 297 validation 8x8 images), SGD with
momentum {args.momentum}, lr {args.lr} (`clean 2x lr` shows how near the edge of stability that is), batch
{args.batch_size}, {args.epochs} epochs ({steps} optimizer steps), validation after each epoch. The fault:
on steps {list(args.spike_steps)} the batch's inputs are multiplied by {args.spike_scale:g}. Seeds
{list(args.seed_list)}: each seed has its own init, split and batch order, the same for every variant.

{variants}

## Results over {len(args.seed_list)} seeds

Final validation loss and accuracy (after the last epoch): mean [min, max] over seeds. Non-finite:
seeds whose training loss was NaN/Inf at some step. Clipped steps: AutoClip's own count, summed from
the "clip" interventions of the run's `convergence_report.json`; rows marked * (Lightning's fixed
clipping, which keeps no record) count the steps whose pre-clip global norm exceeded the value.

{markdown_table(summary_rows(results, args.spike_steps))}

{headline(results)}

What happened (generated from the numbers):

""" + "\n".join(verdicts(results, args.spike_steps)) + """

Why:

""" + "\n".join(notes(results, args.spike_steps, w50)) + f"""

## Per seed

"median norm pre -> applied": over the ordinary (non-spike) steps, the median global gradient norm
before any clipping and the one the optimizer got; "spike steps": the same on each spike step;
"last-20 train loss": mean training loss over the last 20 ordinary steps.

{markdown_table(seed_rows(results, args.spike_steps))}

## Figure

`{os.path.basename(png)}`, seed {args.seed_list[0]}: top, the training loss of every variant (5-step mean,
spike batches left out, log scale); below, the global gradient norm the optimizer got (after any
clipping). Gold lines: spike steps. Both panels are cut (loss at 10, norm at 1e4) so that a run that
blew up does not flatten the others.

![training loss per variant]({os.path.basename(png)})
"""
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(text)
