"""Tables, sentences, figure and markdown of ``bench_redo.py``, all derived from the runs' numbers."""

from __future__ import annotations

import argparse
import math
import os
from collections import Counter
from typing import TYPE_CHECKING, Any

try:  # run as a script: benchmarks/ is on sys.path
    from _report import finite_mean, markdown_table, spread
except ImportError:  # imported as benchmarks._redo_report
    from benchmarks._report import finite_mean, markdown_table, spread

if TYPE_CHECKING:
    from bench_redo import RunResult

Results = dict[tuple[str, str], list["RunResult"]]
MODES = ("observe", "redo")  # bench_redo.MODES

# --------------------------------------------------------------------------------- tables and sentences


def _per_layer(runs: list[RunResult], value: Any) -> str:
    """``net.1 0.62 / net.3 0.05``: the mean over seeds of ``value(run, layer)`` per layer."""
    layers = runs[0].layers
    return " / ".join(f"{layer} {finite_mean([value(r, layer) for r in runs]):.2f}" for layer in layers)


def _revival_steps(runs: list[RunResult]) -> str:
    steps = sorted({int(i["step"]) for r in runs for i in r.interventions})
    return ", ".join(str(s) for s in steps) if steps else "-"


def summary_rows(results: Results) -> list[list[str]]:
    rows = [["scenario", "mode", "seeds", "final val acc mean [min, max]",
             "dead at end, tracker's last window (mean)", "dead at end, whole train set (mean)",
             "max dead during training, whole train set (mean)", "revivals per run mean [min, max]",
             "units revived per run mean [min, max]", "revival steps (any seed)", "non-finite loss"]]
    for (scenario, mode), runs in results.items():
        bad = sum(r.first_nonfinite is not None for r in runs)
        rows.append([
            scenario, mode, str(len(runs)), spread([r.final_acc for r in runs], ".3f"),
            _per_layer(runs, lambda r, layer: r.last_window(layer)),
            _per_layer(runs, lambda r, layer: r.dead[-1][layer]),
            _per_layer(runs, lambda r, layer: max(d[layer] for d in r.dead[1:])),
            spread([float(r.revivals) for r in runs], ".1f"), spread([float(r.units_revived) for r in runs], ".0f"),
            _revival_steps(runs), f"{bad}/{len(runs)} seeds" if bad else "no",
        ])
    return rows


def _interventions_text(run: RunResult) -> str:
    if not run.interventions:
        return "-"
    return ", ".join(f"{i['step']}: {i['detail']['layer']} x{i['detail']['units']}" for i in run.interventions)


def _diagnoses_text(run: RunResult) -> str:
    counts = Counter(f"{d['kind']} {d['severity']}" for d in run.diagnoses)
    return ", ".join(f"{k} x{n}" for k, n in sorted(counts.items())) or "-"


def seed_rows(results: Results) -> list[list[str]]:
    rows = [["scenario", "mode", "seed", "val acc", "val loss", "dead at end, window", "dead at end, train set",
             "revivals (step: layer x units)", "diagnoses shown (kind severity x count)", "fit s"]]
    for (scenario, mode), runs in results.items():
        for r in runs:
            rows.append([
                scenario, mode, str(r.seed), f"{r.final_acc:.3f}", f"{r.val_loss[-1]:.3f}",
                " / ".join(f"{r.last_window(layer):.2f}" for layer in r.layers),
                " / ".join(f"{r.dead[-1][layer]:.2f}" for layer in r.layers),
                _interventions_text(r), _diagnoses_text(r), f"{r.seconds:.1f}",
            ])
    return rows


def _paired_gain(results: Results, scenario: str) -> list[float]:
    """Per seed: final val acc with ReDo minus without (same seed: same init, split and batches)."""
    off, on = results.get((scenario, "observe"), []), results.get((scenario, "redo"), [])
    return [b.final_acc - a.final_acc for a, b in zip(off, on)]


def verdicts(results: Results) -> list[str]:
    """One paragraph per scenario, derived from the numbers (no claim that the numbers do not make)."""
    lines = []
    for scenario in dict.fromkeys(s for s, _ in results):
        off, on = results.get((scenario, "observe")), results.get((scenario, "redo"))
        if not off or not on:
            continue
        layers = off[0].layers
        acc_off, acc_on = finite_mean([r.final_acc for r in off]), finite_mean([r.final_acc for r in on])
        gains = _paired_gain(results, scenario)
        text = (f"- **{scenario}**: final val acc {acc_off:.3f} without ReDo, {acc_on:.3f} with it "
                f"(per seed {', '.join(f'{g * 100:+.1f}' for g in gains)} points)")
        start = " / ".join(f"{finite_mean([r.dead[0][layer] for r in off]):.2f}" for layer in layers)
        end_off = " / ".join(f"{finite_mean([r.dead[-1][layer] for r in off]):.2f}" for layer in layers)
        end_on = " / ".join(f"{finite_mean([r.dead[-1][layer] for r in on]):.2f}" for layer in layers)
        text += (f"; dead fraction over the whole training set ({' / '.join(layers)}): {start} at init, "
                 f"{end_off} at the end without ReDo, {end_on} with it")
        revived = [r.revivals for r in on]
        if sum(revived):
            first = min(int(i["step"]) for r in on for i in r.interventions)
            units = sum(r.units_revived for r in on)
            text += f"; ReDo acted {sum(revived)} times over {len(on)} runs ({units} units, first at step {first})"
        else:
            text += "; ReDo never acted"
        watched = sum(r.revivals for r in off)
        if watched:
            text += f"; the observe-only tracker recorded {watched} revivals (it must not act: a bug)"
        bad_off = sum(r.first_nonfinite is not None for r in off)
        bad_on = sum(r.first_nonfinite is not None for r in on)
        if bad_off or bad_on:
            text += f"; NaN/Inf training loss in {bad_off} runs without and {bad_on} with ReDo"
        lines.append(text + ".")
    return lines


def reading(results: Results) -> str:
    """A short paragraph on what the runs show, each sentence only where its numbers hold."""
    parts = []
    noise = _paired_gain(results, "healthy")
    healthy = results.get(("healthy", "observe"))
    healthy_floor = min(r.final_acc for r in healthy) if healthy else None
    for scenario in dict.fromkeys(s for s, _ in results):
        off, on = results.get((scenario, "observe")), results.get((scenario, "redo"))
        if not off or not on:
            continue
        gains = _paired_gain(results, scenario)
        acc_off, acc_on = finite_mean([r.final_acc for r in off]), finite_mean([r.final_acc for r in on])
        layers = off[0].layers
        dead_off = max(finite_mean([r.dead[-1][layer] for r in off]) for layer in layers)
        dead_on = max(finite_mean([r.dead[-1][layer] for r in on]) for layer in layers)
        acted = sum(r.revivals > 0 for r in on)
        if scenario == "healthy":
            if acted:
                revived = sorted({i["detail"]["layer"] for r in on for i in r.interventions})
                whole = max(d[layer] for r in off for d in r.dead for layer in revived)
                harm = ("It did no harm here" if min(gains) >= -0.01 else "It cost accuracy in some seeds")
                parts.append(f"In the healthy run ReDo acted in {acted} of {len(on)} seeds, on "
                             f"{sum(r.units_revived for r in on)} units of {', '.join(f'`{x}`' for x in revived)} "
                             "in all. A healthy ReLU layer has a few dead units too (here, without ReDo, up to "
                             f"{whole:.0%} of a revived layer's units over the whole training set, at init or at an "
                             "epoch end), and the tracker's window (4 to 5 batches of 32) counts a little more; ReDo "
                             "acts on a layer with 25% of its units dead in two windows in a row (a warning). "
                             f"{harm}: final accuracy {acc_off:.3f} without, {acc_on:.3f} with (per seed "
                             f"{', '.join(f'{g * 100:+.1f}' for g in gains)} points).")
            else:
                parts.append(f"In the healthy run ReDo never acted; final accuracy {acc_off:.3f} either way.")
            continue
        dead_text = f"up to {dead_off:.0%} of a layer dead at the end without it, {dead_on:.0%} with it"
        if all(g > 0 for g in gains) and min(gains) > 2 * max([abs(g) for g in noise] or [0]) + 0.01:
            if healthy_floor is None or acc_on >= healthy_floor - 0.02:
                text = (f"With `{scenario}`, ReDo is what rescues the run: {acc_off:.3f} accuracy without it, "
                        f"{acc_on:.3f} with it ({dead_text}), {min(gains) * 100:+.1f} to {max(gains) * 100:+.1f} "
                        "points on every seed.")
            else:
                text = (f"With `{scenario}`, ReDo helps on every seed ({min(gains) * 100:+.1f} to "
                        f"{max(gains) * 100:+.1f} points; {acc_off:.3f} without, {acc_on:.3f} with; {dead_text}) "
                        f"but does not make the run healthy: the healthy run's worst seed ends at {healthy_floor:.3f}.")
        elif dead_on < dead_off - 0.1:
            text = (f"With `{scenario}`, ReDo keeps the dead fraction down ({dead_text}), but the accuracy gain is "
                    f"not clear: {acc_off:.3f} against {acc_on:.3f}, per seed "
                    f"{', '.join(f'{g * 100:+.1f}' for g in gains)} points")
            text += (", not positive on every seed." if min(gains) <= 0 else
                     f", against {', '.join(f'{g * 100:+.1f}' for g in noise)} between the modes of the healthy run.")
        else:
            text = (f"With `{scenario}`, ReDo changed little: {dead_text}; accuracy {acc_off:.3f} against "
                    f"{acc_on:.3f}.")
        again = sum(any(n > 1 for n in Counter(i["detail"]["layer"] for i in r.interventions).values()) for r in on)
        if again and scenario.startswith("high lr"):
            text += (f" The cause stays (the learning rate is still too high): in {again} of {len(on)} seeds a "
                     "layer was dead enough again after its 200-step cooldown to be revived once more.")
        parts.append(text)
    return " ".join(parts)


def cross_checks(results: Results, bare: dict[str, RunResult]) -> list[str]:
    """Observing against no tracker, the tracker's last window against the whole-set measure, and
    the val acc logged by the model against ours."""
    out = []
    same, differ = [], []
    for scenario, plain in bare.items():
        watched = next((r for r in results.get((scenario, "observe"), []) if r.seed == plain.seed), None)
        if watched is not None:
            (same if watched.losses == plain.losses and watched.val_acc == plain.val_acc else differ).append(scenario)
    if same or differ:
        seed = next(iter(bare.values())).seed
        text = f"- Observing changes nothing: on seed {seed}, a run without the tracker "
        if same:
            text += (f"had exactly the same training loss at every step and validation accuracy as `observe` in "
                     f"{', '.join(f'`{s}`' for s in same)}")
        if differ:
            text += ("; " if same else "") + f"DIFFERED from `observe` in {', '.join(f'`{s}`' for s in differ)}"
        out.append(text + ".")
    gaps = {mode: [r.last_window(layer) - r.dead[-1][layer] for (_, m), runs in results.items() if m == mode
                   for r in runs for layer in r.layers if math.isfinite(r.last_window(layer))] for mode in MODES}
    if any(gaps.values()):
        last = next(iter(results.values()))[0]
        window = last.tracked[last.layers[0]][-1][0] if last.tracked[last.layers[0]] else None
        ranges = "; ".join(f"`{mode}` runs {min(g):+.2f} to {max(g):+.2f} (mean {finite_mean(g):+.2f})"
                           for mode, g in gaps.items() if g)
        out.append(f"- The tracker's last window (ending at step {window}) minus the whole-set dead fraction after the "
                   f"last step, per run and layer: {ranges}. The window sees only 4 to 5 sampled batches of 32 "
                   "inputs, so a unit that fires for few inputs counts as dead there more readily (differences "
                   "above 0); the weights also move in the steps between the two (units die at a high lr), and in "
                   "`redo` runs a revival right after the last window comes between them.")
    diffs = [abs(r.lightning_val_acc - r.final_acc) for runs in results.values() for r in runs
             if math.isfinite(r.lightning_val_acc)]
    if diffs:
        out.append(f"- Final val acc measured here and as logged by the model's `validation_step` differ by at most "
                   f"{max(diffs):.4f} (both after the last epoch, the same weights).")
    return out


# --------------------------------------------------------------------------------- outputs

COLORS = {"observe": "tab:red", "redo": "tab:blue"}
STYLES = ["-", "--", ":", "-."]


def plot(results: Results, args: argparse.Namespace, path: str) -> None:
    """Per scenario (rows): the tracker's dead fraction per window and layer (left), the validation
    accuracy after every epoch (right); observe against redo, means over seeds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scenarios = list(dict.fromkeys(s for s, _ in results))
    fig, axes = plt.subplots(len(scenarios), 2, figsize=(12, 3.2 * len(scenarios) + 0.6), squeeze=False,
                             sharex=True)
    for row, scenario in enumerate(scenarios):
        left, right = axes[row]
        for mode in ("observe", "redo"):
            runs = results.get((scenario, mode))
            if not runs:
                continue
            color = COLORS[mode]
            for k, layer in enumerate(runs[0].layers):
                steps = [s for s, _ in runs[0].tracked[layer]]
                mean = [finite_mean([dict(r.tracked[layer]).get(s, math.nan) for r in runs]) for s in steps]
                left.plot(steps, mean, color=color, linestyle=STYLES[k % len(STYLES)], marker="o", markersize=3,
                          label=f"{mode} {layer}")
            for r in runs:
                for i in r.interventions:
                    left.plot(int(i["step"]), -0.04, marker="^", color=color, markersize=6, clip_on=False)
            per_epoch = runs[0].steps_per_epoch
            xs = [e * per_epoch for e in range(len(runs[0].val_acc))]
            accs = list(zip(*[r.val_acc for r in runs]))
            right.plot(xs, [finite_mean(a) for a in accs], color=color, marker="o", markersize=3, label=mode)
            right.fill_between(xs, [min(a) for a in accs], [max(a) for a in accs], color=color, alpha=0.15)
        left.set_ylim(-0.06, 1.04)
        left.set_ylabel(f"{scenario}\ndead fraction (tracker window)")
        right.set_ylim(0, 1.02)
        right.set_ylabel("val accuracy")
        left.legend(fontsize=7, ncol=2, handlelength=3.5)
        right.legend(fontsize=7, loc="lower right")
        if row == 0:
            left.set_title("dead fraction per layer, mean over seeds (triangles: a revival)")
            right.set_title("validation accuracy, mean and [min, max] over seeds")
    for ax in axes[-1]:
        ax.set_xlabel("optimizer step")
    fig.suptitle(f"DeadNeuronTracker on a ReLU MLP (64-{'-'.join([str(args.hidden)] * args.depth)}-10), digits, "
                 f"SGD momentum 0.9; observe only (red) vs auto_remediate=True (blue); seeds {args.seed_list}",
                 fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.98))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_markdown(path: str, args: argparse.Namespace, command: str, env: dict[str, Any], results: Results,
                   bare: dict[str, RunResult], descriptions: dict[str, str], wall_s: float, png: str) -> None:
    first = next(iter(results.values()))[0]
    steps = first.steps_per_epoch * args.epochs
    listing = "\n".join(f"- `{name}`: {text}" for name, text in descriptions.items())
    layers = " / ".join(first.layers)
    sites = ", ".join(f"`{layer}`" for layer in first.layers)
    text = f"""# ReDo (DeadNeuronTracker with auto_remediate=True) on a ReLU MLP with dead units

Generated by `benchmarks/bench_redo.py`; rerunning it rewrites this file.

```bash
{command}
```

Machine: {env['cpu_model']}, {env['cpu_count']} CPUs, torch threads {env['torch_threads']};
python {env['python']}, torch {env['torch']}, lightning {env['lightning']}. Wall time {wall_s:.0f} s.

## Setup

An MLP built like the tests' `DigitsMLP`: 64 inputs, {args.depth} hidden `Linear` + `nn.ReLU` blocks of
{args.hidden} units (activation sites {sites}), a `Linear` head to 10 classes; SGD with momentum 0.9,
batch {args.batch_size}, {args.epochs} epochs ({steps} optimizer steps) on the bundled digits (1500 train / 297
validation, flat inputs in [0, 1]); a real `Trainer.fit` on CPU, Lightning's default
`log_every_n_steps=50`. Seeds {list(args.seed_list)}: each seed has its own init, split and batch order,
the same for every scenario and mode.

{listing}

Modes: `observe` is `DeadNeuronTracker(auto_remediate=False)` (it only measures, so this is the run
without ReDo, with its dead-fraction series); `redo` is `DeadNeuronTracker(auto_remediate=True)`.
Both at the tracker's defaults, nothing changed: 1 training forward in 10 sampled, a window judged
every 50 steps once it holds 4 sampled batches, a layer reported when at least 10% of its units
(the same units) are dead in 2 windows in a row and revived when at least 25% are (a warning), then
200 steps of cooldown for that layer. The first revival
can therefore come at step 99 (after the window of steps 50-99, once 100 steps have run), and a layer is
revived at most every 200 steps.

## Results over {len(args.seed_list)} seeds

Dead fractions are per layer ({layers}). "Tracker's last window": what the tracker logged as
`convergence/dead_fraction/<layer>` for the last window. "Whole train set": measured by the benchmark,
independently of the tracker, over all 1500 training inputs (a unit is dead when it is not positive
for any of them). Revivals: the tracker's `reinit_units` interventions (one per layer and revival).

{markdown_table(summary_rows(results))}

""" + reading(results) + """

What happened (generated from the numbers; per seed: ReDo minus observe, same seed):

""" + "\n".join(verdicts(results)) + """

Cross-checks:

""" + "\n".join(cross_checks(results, bare)) + f"""

## Per seed

{markdown_table(seed_rows(results))}

## Figure

`{os.path.basename(png)}`: one row per scenario. Left, the tracker's dead fraction per window and layer
(solid {first.layers[0]}, dashed {first.layers[-1]}), mean over seeds; a triangle under the axis marks a
revival (any seed). Right, validation accuracy before training and after every epoch, mean and
[min, max] over seeds. Red: observe only; blue: ReDo.

![dead fraction and validation accuracy, observe vs ReDo]({os.path.basename(png)})
"""
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(text)
