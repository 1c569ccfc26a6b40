"""Tables, sentences, figure and markdown of ``bench_warmup.py``, all derived from the runs' numbers."""

from __future__ import annotations

import argparse
import math
import os
from typing import Any

try:  # run as a script: benchmarks/ is on sys.path
    from _report import finite_mean, markdown_table, spread
    from _warmup_model import FAILED_ACC, SMOOTH, RunResult
except ImportError:  # imported as benchmarks._warmup_report
    from benchmarks._report import finite_mean, markdown_table, spread
    from benchmarks._warmup_model import FAILED_ACC, SMOOTH, RunResult

# --------------------------------------------------------------------------------- tables and sentences


def warmup_length(results: dict[str, list[RunResult]], name: str) -> int:
    """Steps until the effective LR first reached its peak (the end of the warmup) on the first seed."""
    lrs = results[name][0].lrs
    peak = max(lrs)
    return next(i for i, v in enumerate(lrs) if v >= peak * (1 - 1e-9))


def summary_rows(results: dict[str, list[RunResult]]) -> list[list[str]]:
    steps = len(next(iter(results.values()))[0].losses)
    rows = [["variant", "val loss mean [min, max]", "val acc mean [min, max]", f"seeds failed (acc < {FAILED_ACC})",
             "non-finite loss", f"worst loss spike ({SMOOTH}-step mean) mean [min, max]",
             f"best train loss ({SMOOTH}-step mean) mean [min, max]", "last-20 train loss mean [min, max]",
             f"effective LR: step 0 / peak (step) / last (of {steps})"]]
    for name, runs in results.items():
        bad = sum(r.first_nonfinite is not None for r in runs)
        lrs = runs[0].lrs
        rows.append([
            name, spread([r.val_loss for r in runs], ".3f"), spread([r.val_acc for r in runs], ".3f"),
            f"{sum(r.failed for r in runs)}/{len(runs)}", f"{bad}/{len(runs)} seeds" if bad else "no",
            spread([r.spike[0] for r in runs], ".2f"), spread([r.best_loss for r in runs], ".3f"),
            spread([r.tail_loss for r in runs], ".3f"),
            f"{lrs[0]:.2e} / {max(lrs):.2e} ({warmup_length(results, name)}) / {lrs[-1]:.2e}",
        ])
    return rows


def seed_rows(results: dict[str, list[RunResult]]) -> list[list[str]]:
    rows = [["variant", "seed", "val loss", "val acc", "first non-finite step", "worst spike (at step)",
             f"best train loss ({SMOOTH}-step mean)", "last-20 train loss", "fit s"]]
    for name, runs in results.items():
        for r in runs:
            spike, at = r.spike
            rows.append([name, str(r.seed), f"{r.val_loss:.3f}", f"{r.val_acc:.3f}",
                         "-" if r.first_nonfinite is None else str(r.first_nonfinite), f"{spike:.2f} ({at})",
                         f"{r.best_loss:.3f}", f"{r.tail_loss:.3f}", f"{r.seconds:.1f}"])
    return rows


def verdicts(results: dict[str, list[RunResult]]) -> list[str]:
    """One sentence per variant, derived from the numbers (no claim that the numbers do not make)."""
    base = results.get("none")
    base_acc = finite_mean([r.val_acc for r in base]) if base else math.nan
    lines = []
    for name, runs in results.items():
        acc = finite_mean([r.val_acc for r in runs])
        loss = finite_mean([r.val_loss for r in runs])
        text = f"- **{name}**: mean val acc {acc:.3f}, mean val loss {loss:.3f}"
        if name != "none" and math.isfinite(base_acc):
            text += f" ({(acc - base_acc) * 100:+.1f} points of accuracy against `none`)"
        failed = sum(r.failed for r in runs)
        bad = sum(r.first_nonfinite is not None for r in runs)
        text += f"; {failed} of {len(runs)} seeds failed (val acc below {FAILED_ACC} or a NaN/Inf loss)"
        if bad:
            text += f", the training loss went NaN/Inf in {bad}"
        spikes = [r.spike[0] for r in runs]
        big = sum(s > 0.5 for s in spikes)
        text += (f"; worst loss spike {max(spikes):.2f} (mean {finite_mean(spikes):.2f}), "
                 f"{big} of {len(runs)} seeds with a rise above 0.5")
        best = [r.best_loss for r in runs]
        text += (f"; best {SMOOTH}-step training loss {min(best):.3f} to {max(best):.3f}, "
                 f"last-20 mean {finite_mean([r.tail_loss for r in runs]):.3f}")
        lines.append(text + ".")
    return lines


def headline(results: dict[str, list[RunResult]]) -> str:
    failed = [f"`{n}` {sum(r.failed for r in runs)}/{len(runs)}" for n, runs in results.items()
              if any(r.failed for r in runs)]
    held = [f"`{n}`" for n, runs in results.items() if not any(r.failed for r in runs)]
    text = (f"Seeds failed (final val acc below {FAILED_ACC} or a NaN/Inf training loss): "
            + (", ".join(failed) if failed else "none") + ". No seed failed: " + (", ".join(held) or "none") + ".")
    if "none lr/10" in results:
        floor = min(r.val_acc for r in results["none lr/10"])
        below = [f"`{n}` {sum(not r.val_acc >= floor for r in runs)}/{len(runs)}" for n, runs in results.items()
                 if n != "none lr/10"]
        text += (f" Seeds ending below the worst val acc of the `none lr/10` reference ({floor:.3f}): "
                 + ", ".join(below) + ".")
    return text


def notes(results: dict[str, list[RunResult]]) -> list[str]:
    """How to read the numbers, with this run's values."""
    out = []
    for name, runs in results.items():
        if name in ("none", "cosine"):
            continue
        lrs = runs[0].lrs
        if lrs and lrs[0] < max(lrs) * 0.5:
            out.append(f"- `{name}`: the effective LR started at {lrs[0]:.2e} and reached its peak {max(lrs):.2e} "
                       f"at step {warmup_length(results, name)} (read inside `optimizer.step()`).")
    if "cosine" in results and "cosine+untuned" in results:
        plain, warm = results["cosine"][0].lrs, results["cosine+untuned"][0].lrs
        n = len(plain)
        ratio = [w / p for w, p in zip(warm, plain) if p > 0]
        after = ratio[warmup_length(results, "cosine+untuned") + 1: n - 1]
        if after:
            out.append(f"- Composition: after the warmup, the LR of `cosine+untuned` equals the cosine schedule's "
                       f"(ratio {min(after):.6f} to {max(after):.6f} over the remaining steps); during it the ratio is "
                       "the warmup factor: the scheduler's own trajectory is untouched.")
    for name, runs in results.items():
        best, tail = finite_mean([r.best_loss for r in runs]), finite_mean([r.tail_loss for r in runs])
        if tail > 2 * best and tail > 0.1:
            out.append(f"- `{name}`: the training loss went down to a {SMOOTH}-step mean of {best:.3f} (mean over "
                       f"seeds) and then rose again, to {tail:.3f} over the last 20 steps: it keeps its full lr after "
                       "its best point, and the loss does not settle there (see the figure).")
    if "none lr/10" in results:
        accs = [r.val_acc for r in results["none lr/10"]]
        spikes = [r.spike[0] for r in results["none lr/10"]]
        out.append(f"- Noise: the reference `none lr/10` ranges {min(accs):.3f} to {max(accs):.3f} in val acc over "
                   f"the seeds, and its worst loss spike is {min(spikes):.2f} to {max(spikes):.2f}, which is "
                   "batch-to-batch noise of the 5-step mean: a difference between variants smaller than these "
                   "spreads is not a result.")
    return out


# --------------------------------------------------------------------------------- outputs

PALETTE = {"none": "tab:red", "untuned": "tab:blue", "cosine": "tab:orange", "cosine+untuned": "tab:green",
           "none lr/10": "grey"}


def plot(results: dict[str, list[RunResult]], args: argparse.Namespace, path: str) -> None:
    """Training loss (top) and effective LR (bottom) of every variant on the first seed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(11, 8.5), sharex=True, height_ratios=[3, 2])
    for name, runs in results.items():
        run = runs[0]
        color = PALETTE.get(name, "tab:purple")
        style = {"color": color, "linestyle": "--" if name == "none lr/10" else "-"}
        top.plot(range(len(run.losses)), run.smoothed, label=name, linewidth=1.3, **style)
        if run.first_nonfinite is not None:
            top.axvline(run.first_nonfinite, color=color, linestyle=":", linewidth=1)
        width = 3.0 if name in ("none", "cosine") else 1.3  # drawn under the warmup lines that join them
        bottom.plot(range(len(run.lrs)), run.lrs, label=name, linewidth=width, **style)
    top.set_yscale("log")
    top.set_ylim(1e-2, 10.0)
    top.axhline(math.log(10), color="black", linewidth=0.6, alpha=0.5)
    top.set_ylabel(f"training loss ({SMOOTH}-step mean, log; cut at 10;\nthin line: ln 10, chance)")
    top.set_title(f"Post-LN transformer ({args.layers} layers, d_model {args.d_model}, {args.heads} heads) on digit "
                  f"rows; Adam lr {args.lr:g}, betas {tuple(args.betas)}; seed {args.seed_list[0]}")
    top.legend(ncol=3, fontsize=8)
    bottom.set_ylabel("effective LR\n(inside optimizer.step())")
    bottom.set_xlabel("optimizer step")
    bottom.legend(ncol=3, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_markdown(path: str, args: argparse.Namespace, command: str, env: dict[str, Any],
                   results: dict[str, list[RunResult]], descriptions: dict[str, str], wall_s: float,
                   png: str) -> None:
    steps = len(next(iter(results.values()))[0].losses)
    listing = "\n".join(f"- `{v}`: {descriptions[v]}" for v in results)
    text = f"""# Warmup on a post-LN transformer trained with Adam at a high learning rate

Generated by `benchmarks/bench_warmup.py`; rerunning it rewrites this file.

```bash
{command}
```

Machine: {env['cpu_model']}, {env['cpu_count']} CPUs, torch threads {env['torch_threads']};
python {env['python']}, torch {env['torch']}, lightning {env['lightning']}. Wall time {wall_s:.0f} s.

## Setup

A post-LN `nn.TransformerEncoder` (`norm_first=False`): {args.layers} layers, d_model {args.d_model},
{args.heads} heads, feed-forward {args.ff}, dropout {args.dropout:g}; each 8x8 digit of the bundled
digits data (1500 train / 297 validation) is a sequence of its 8 rows, linear embedding plus learned
positional embedding, mean over positions, linear head. Adam, lr {args.lr:g}, betas {tuple(args.betas)},
batch {args.batch_size}, {args.epochs} epochs ({steps} optimizer steps), validation after each epoch; a real
`Trainer.fit` on CPU. Seeds {list(args.seed_list)}: each seed has its own init, split and batch order,
the same for every variant. How the default lr (6e-3) was chosen, after 1e-3 and 3e-3 showed no
effect of warmup on this model, is in the script's docstring.

{listing}

## Results over {len(args.seed_list)} seeds

Final validation loss and accuracy (after the last epoch): mean [min, max] over seeds. Worst loss
spike: the largest rise of the {SMOOTH}-step mean training loss above its running minimum (inf when the
loss went NaN/Inf). Effective LR: the LR the optimizer used, read inside `optimizer.step()`, on seed
{args.seed_list[0]}.

{markdown_table(summary_rows(results))}

{headline(results)}

What happened (generated from the numbers):

""" + "\n".join(verdicts(results)) + """

Notes:

""" + "\n".join(notes(results)) + f"""

## Per seed

{markdown_table(seed_rows(results))}

## Figure

`{os.path.basename(png)}`, seed {args.seed_list[0]}: top, the training loss of every variant ({SMOOTH}-step mean,
log scale, cut at 10; a dotted vertical line marks a run's first NaN/Inf loss); below, the effective
learning rate of every optimizer step (`none` and `cosine` drawn thicker: the warmup lines join them
after their warmup).

![training loss and effective LR per variant]({os.path.basename(png)})
"""
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(text)
