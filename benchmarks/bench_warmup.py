"""Benchmark: does WarmupScheduler rescue a post-LN transformer trained with Adam at a high learning rate?

Run::

    python benchmarks/bench_warmup.py [--seeds 5] [--epochs 8] [--lr 6e-3] [--out benchmarks/results]

The model. A small post-LN transformer (``torch.nn.TransformerEncoder`` with ``norm_first=False``,
as written in the original Transformer and in most tutorials): ``--layers`` layers, d_model
``--d-model``, ``--heads`` heads, feed-forward width ``--ff``, dropout ``--dropout``. The sequence
task is built from the bundled digits (``lightning_convergence.demo.data.DigitsDataModule``, 1500
train / 297 validation 8x8 images): each image is a sequence of its 8 rows (8 features each); a
linear embedding plus a learned positional embedding, the encoder, a mean over the 8 positions and
a linear head classify the 10 digits. ``TransformerEncoder`` deep-copies its layer, so every layer
starts from the same weights: this is what the plain ``nn.TransformerEncoder(layer, n)`` gives, and
it is kept as users write it.

Post-LN transformers are the textbook case for warmup (Liu et al. 2020, "On the variance of the
adaptive learning rate and beyond"; Xiong et al. 2020, "On layer normalization in the transformer
architecture"): in the first steps Adam's second-moment estimate rests on a few gradients, so every
weight moves by about the full learning rate at once, and the residual-then-normalise layers
amplify that. The optimizer here is Adam with betas ``--betas`` (default 0.9, 0.98, the Transformer
paper's), at a learning rate ``--lr`` chosen so that the run without warmup goes wrong in most seeds.

How the default lr was chosen (when the script was written, 8 epochs, seeds 0-2): with 4 layers, at
lr 1e-3 and 3e-3 the run without warmup trained as well as with untuned warmup (val acc 0.93 to 0.98
either way): no effect to show. With 6 layers at 3e-3, one seed of five stayed at chance without
warmup (the others were fine). With 4 layers at 6e-3 every seed without warmup ended clearly worse
(val acc 0.54 to 0.64 on seeds 0-2), with untuned warmup 0.91 to 0.93; at 1e-2 the run without
warmup stayed at chance. So the default is 4 layers at lr 6e-3; a beta2 of 0.999 was not used
because its untuned warmup (2 / (1 - 0.999), about 2000 steps) is longer than the whole run (376 steps).

Variants, each trained on the same seeds (same init, split and batch order per seed):

- ``none``: constant ``--lr``, no warmup;
- ``linear N``: ``WarmupScheduler(warmup_steps=N)`` (``--warmup-steps``), linear;
- ``untuned``: ``WarmupScheduler(warmup_steps="untuned")``: linear over ``2 / (1 - beta2)`` optimizer
  steps, the callback's default (Ma & Yarats 2021). For beta2 0.98 that is 99 steps, not 100: the
  library truncates ``2 / (1 - 0.98)`` = 99.99999999999991 in floating point with ``int()``;
- ``cosine``: the user's own ``CosineAnnealingLR`` over the whole run (``interval="step"``), no warmup;
- ``cosine+untuned``: the same scheduler with ``WarmupScheduler("untuned")`` on top: the warmup is a
  factor on the scheduler's LR, so the two compose;
- ``none lr/10``: a reference, constant ``--lr`` / 10 and no warmup: what the model reaches when the
  learning rate is not a problem.

Per run: the training loss of every step (``on_train_batch_end``), the effective learning rate of
every optimizer step (read by an optimizer step pre-hook registered after the suite's LR control,
so it sees ``param_group["lr"]`` while the warmup factor is applied; WarmupScheduler restores the
scheduler's LR right after the step), the final validation loss and accuracy (after the last
epoch), whether the training loss ever went NaN/Inf, and the worst loss spike: the largest rise of
the 5-step mean training loss above its running minimum (0 for a run whose smoothed loss only went
down; about 2 for a run that got to 0.3 and fell back to chance, ln 10 = 2.30; batch-to-batch noise
alone gives 0.2 to 0.3, see the ``none lr/10`` reference), and the best 5-step mean training loss
(how far the run got at all).

Writes ``warmup.md`` (the tables, the command, machine and versions) and ``warmup.png`` (training
loss and effective LR of every variant on the first seed) into ``--out``, and prints the tables.
About 3 minutes on 2 CPU cores with the defaults (one torch thread).
"""

from __future__ import annotations

import argparse
import math
import os
import tempfile
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import lightning as L
import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from torch import nn
from torch.nn import functional as F

try:  # run as a script: benchmarks/ is on sys.path
    from _report import command_line, finite_mean, markdown_table, quiet_lightning, spread, text_table
    from _timing import environment
except ImportError:  # imported as benchmarks.bench_warmup
    from benchmarks._report import command_line, finite_mean, markdown_table, quiet_lightning, spread, text_table
    from benchmarks._timing import environment
from lightning_convergence import WarmupScheduler
from lightning_convergence.demo.data import DigitsDataModule
from lightning_convergence.report.console import ConvergenceWarning

SMOOTH = 5  # steps in the moving mean used for the spike measure and the figure
FAILED_ACC = 0.5  # a seed "failed" below this final val acc (or with a NaN/Inf loss); chance is 0.1


@dataclass(frozen=True)
class Variant:
    warmup: Any  # WarmupScheduler(warmup_steps=...) or None; "N" means --warmup-steps
    cosine: bool  # the user's CosineAnnealingLR, stepped every optimizer step
    text: str
    lr_scale: float = 1.0  # times --lr
    reference: bool = False


def variants(warmup_steps: int) -> dict[str, Variant]:
    return {
        "none": Variant(None, False, "constant lr, no warmup"),
        f"linear {warmup_steps}": Variant(warmup_steps, False,
                                          f"constant lr, `WarmupScheduler(warmup_steps={warmup_steps})` (linear)"),
        "untuned": Variant("untuned", False, 'constant lr, `WarmupScheduler(warmup_steps="untuned")` '
                           "(linear over 2 / (1 - beta2) steps)"),
        "cosine": Variant(None, True, '`CosineAnnealingLR(T_max=total steps)`, `interval="step"`, no warmup'),
        "cosine+untuned": Variant("untuned", True, 'the same cosine schedule with `WarmupScheduler("untuned")` '
                                  "on top"),
        "none lr/10": Variant(None, False, "reference: constant lr / 10, no warmup", lr_scale=0.1, reference=True),
    }


class RowsTransformer(LightningModule):
    """A post-LN transformer encoder that reads an 8x8 digit as a sequence of 8 rows."""

    def __init__(self, lr: float, betas: tuple[float, float], d_model: int, heads: int, layers: int, ff: int,
                 dropout: float, cosine: bool) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.embed = nn.Linear(8, d_model)
        self.position = nn.Parameter(torch.randn(1, 8, d_model) * 0.02)
        layer = nn.TransformerEncoderLayer(d_model, heads, ff, dropout, batch_first=True, norm_first=False)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.head = nn.Linear(d_model, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(-1, 8, 8)
        return self.head(self.encoder(self.embed(rows) + self.position).mean(dim=1))

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        return F.cross_entropy(self(x), y)

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        x, y = batch
        logits = self(x)
        self.log("val_loss", F.cross_entropy(logits, y))
        self.log("val_acc", (logits.argmax(-1) == y).float().mean())

    def configure_optimizers(self) -> Any:
        optimizer = torch.optim.Adam(self.parameters(), lr=self.hparams.lr, betas=self.hparams.betas)
        if not self.hparams.cosine:
            return optimizer
        total = int(self.trainer.estimated_stepping_batches)
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


class Recorder(Callback):
    """The training loss of every step, and the LR the optimizer used on every step.

    The LR hook is registered on the first training batch, after every callback's
    ``on_train_start`` (where WarmupScheduler attaches the shared LR control's hooks), so it runs
    after the control has multiplied ``param_group["lr"]`` by the warmup factor.
    """

    def __init__(self) -> None:
        self.losses: list[float] = []
        self.lrs: list[float] = []
        self._handle: Any = None

    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int) -> None:
        if self._handle is None:
            self._handle = trainer.optimizers[0].register_step_pre_hook(
                lambda optimizer, args, kwargs: self.lrs.append(float(optimizer.param_groups[0]["lr"])))

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        self.losses.append(float(outputs["loss"]))

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self._handle is not None:
            self._handle.remove()


@dataclass
class RunResult:
    variant: str
    seed: int
    val_loss: float
    val_acc: float
    losses: list[float]
    lrs: list[float]
    seconds: float

    @property
    def first_nonfinite(self) -> int | None:
        return next((i for i, v in enumerate(self.losses) if not math.isfinite(v)), None)

    @property
    def failed(self) -> bool:
        return self.first_nonfinite is not None or not self.val_acc >= FAILED_ACC

    @property
    def smoothed(self) -> list[float]:
        return smooth(self.losses, SMOOTH)

    @property
    def spike(self) -> tuple[float, int]:
        """The largest rise of the smoothed loss above its running minimum, and the step it peaked."""
        best, worst, at = math.inf, 0.0, -1
        for i, v in enumerate(self.smoothed):
            if not math.isfinite(v):
                continue
            if v - best > worst:
                worst, at = v - best, i
            best = min(best, v)
        return (math.inf, self.first_nonfinite) if self.first_nonfinite is not None else (worst, at)

    @property
    def best_loss(self) -> float:
        finite = [v for v in self.smoothed if math.isfinite(v)]
        return min(finite) if finite else math.nan

    @property
    def tail_loss(self) -> float:
        return finite_mean(self.losses[-20:]) if self.first_nonfinite is None else math.nan


def smooth(values: Sequence[float], width: int) -> list[float]:
    """Trailing moving mean; NaN/Inf in a window makes that point NaN."""
    out = []
    for i in range(len(values)):
        window = values[max(0, i - width + 1): i + 1]
        out.append(sum(window) / len(window) if all(math.isfinite(v) for v in window) else math.nan)
    return out


def run_one(name: str, variant: Variant, seed: int, args: argparse.Namespace, root: str) -> RunResult:
    L.seed_everything(seed, verbose=False)
    model = RowsTransformer(args.lr * variant.lr_scale, args.betas, args.d_model, args.heads, args.layers, args.ff,
                            args.dropout, variant.cosine)
    recorder = Recorder()
    callbacks: list[Callback] = [recorder]
    if variant.warmup is not None:
        callbacks.append(WarmupScheduler(warmup_steps=variant.warmup))
    directory = os.path.join(root, name.replace(" ", "_").replace("/", "_"), f"seed{seed}")
    trainer = Trainer(
        accelerator="cpu", devices=1, max_epochs=args.epochs, logger=False, default_root_dir=directory,
        callbacks=callbacks, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    began = time.perf_counter()
    trainer.fit(model, DigitsDataModule(batch_size=args.batch_size, as_images=False, seed=seed))
    seconds = time.perf_counter() - began
    metrics = trainer.callback_metrics
    return RunResult(name, seed, float(metrics.get("val_loss", math.nan)), float(metrics.get("val_acc", math.nan)),
                     recorder.losses, recorder.lrs, seconds)


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


# --------------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=5, help="seeds 0..N-1 (default 5)")
    parser.add_argument("--epochs", type=int, default=8, help="epochs per run (default 8; 47 steps each)")
    parser.add_argument("--lr", type=float, default=6e-3, help="Adam learning rate (default 6e-3)")
    parser.add_argument("--betas", type=str, default="0.9,0.98", help="Adam betas (default 0.9,0.98)")
    parser.add_argument("--batch-size", type=int, default=32, help="training batch size (default 32)")
    parser.add_argument("--layers", type=int, default=4, help="encoder layers (default 4)")
    parser.add_argument("--d-model", type=int, default=64, help="model width (default 64)")
    parser.add_argument("--heads", type=int, default=4, help="attention heads (default 4)")
    parser.add_argument("--ff", type=int, default=128, help="feed-forward width (default 128)")
    parser.add_argument("--dropout", type=float, default=0.0, help="dropout (default 0)")
    parser.add_argument("--warmup-steps", type=int, default=50, help="N of the `linear N` variant (default 50)")
    parser.add_argument("--variants", type=str, default=None,
                        help="comma-separated subset of the variants (default all; see the docstring)")
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (default 1)")
    parser.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results"),
                        help="folder for warmup.md and .png (default benchmarks/results)")
    args = parser.parse_args(argv)
    args.betas = tuple(float(b) for b in args.betas.split(","))
    if len(args.betas) != 2 or not all(0 <= b < 1 for b in args.betas):
        parser.error("--betas must be two numbers in [0, 1), e.g. 0.9,0.98")
    args.all_variants = variants(args.warmup_steps)
    names = list(args.all_variants) if args.variants is None else [v.strip() for v in args.variants.split(",")
                                                                     if v.strip()]
    unknown = [v for v in names if v not in args.all_variants]
    if unknown:
        parser.error(f"unknown variants {unknown}; known: {list(args.all_variants)}")
    args.variant_list = names
    if min(args.seeds, args.epochs, args.batch_size, args.layers, args.warmup_steps) < 1:
        parser.error("--seeds, --epochs, --batch-size, --layers and --warmup-steps must be >= 1")
    args.seed_list = list(range(args.seeds))
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    quiet_lightning()
    warnings.filterwarnings("ignore", category=ConvergenceWarning)
    warnings.filterwarnings("ignore", message=".*enable_nested_tensor.*")
    env = environment()
    command = command_line("benchmarks/bench_warmup.py", argv)
    print(command)
    print(f"python {env['python']}, torch {env['torch']}, lightning {env['lightning']}, torch threads "
          f"{env['torch_threads']}, cpus {env['cpu_count']}, cpu: {env['cpu_model']}")
    print(f"post-LN transformer: {args.layers} layers, d_model {args.d_model}, {args.heads} heads, ff {args.ff}, "
          f"dropout {args.dropout:g}; Adam lr {args.lr:g} betas {args.betas}; batch {args.batch_size}, "
          f"{args.epochs} epochs; seeds {args.seed_list}\n", flush=True)
    began = time.perf_counter()
    results: dict[str, list[RunResult]] = {v: [] for v in args.variant_list}
    with tempfile.TemporaryDirectory(prefix="bench_warmup_") as root:
        for seed in args.seed_list:
            for name in args.variant_list:
                r = run_one(name, args.all_variants[name], seed, args, root)
                results[name].append(r)
                spike, at = r.spike
                print(f"  seed {seed} {name:15s} val loss {r.val_loss:7.3f}  val acc {r.val_acc:.3f}  "
                      f"spike {spike:5.2f} (step {at})  non-finite at {r.first_nonfinite}  ({r.seconds:.1f} s)",
                      flush=True)
    wall = time.perf_counter() - began
    print(f"\n== Results over {len(args.seed_list)} seeds (mean [min, max]) ==")
    print(text_table(summary_rows(results)))
    print("\n" + headline(results) + "\n")
    print("\n".join(verdicts(results) + notes(results)))
    print("\n== Per seed ==")
    print(text_table(seed_rows(results)))
    os.makedirs(args.out, exist_ok=True)
    png = os.path.join(args.out, "warmup.png")
    md = os.path.join(args.out, "warmup.md")
    plot(results, args, png)
    descriptions = {v: args.all_variants[v].text for v in results}
    write_markdown(md, args, command, env, results, descriptions, wall, png)
    print(f"\ntotal wall time {wall:.0f} s; wrote {md} and {png}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
