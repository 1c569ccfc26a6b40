"""Benchmark: does AutoClip save a run from injected gradient spikes, and at what cost?

Run::

    python benchmarks/bench_autoclip_spikes.py [--seeds 5] [--epochs 5] [--lr 0.1] [--out benchmarks/results]

The fault. The bundled digits CNN (``lightning_convergence.demo.models.DigitsCNN``: two 3x3 convs,
max-pool, two linear layers; 1500 train / 297 validation images) trained with SGD + momentum 0.9
at a learning rate near the edge of stability, batch 32, ``--epochs`` epochs. On a few training
steps (``--spike-steps``) the batch's inputs are multiplied by ``--spike-scale``: a corrupted
batch whose gradient is about that many times larger than usual, as a badly scaled shard or a
bad sample would give. Everything else is an ordinary run.

Variants, each trained on the same seeds (same init, split and batch order per seed):

- ``clean``: no spikes, no clipping: what the run reaches without the fault;
- ``clean 2x lr``: the same at twice the learning rate, to show how near the edge ``--lr`` is;
- ``none``: spikes, no clipping;
- ``fixed 1.0`` / ``0.1`` / ``10`` / ``30``: spikes, ``Trainer(gradient_clip_val=...)``: four guesses;
- ``percentile``, ``zscore``, ``agc``: spikes, ``AutoClip(mode=...)`` at its defaults;
- ``zscore w50``: spikes, ``AutoClip(mode="zscore", clip_warmup_steps=50)``.

Per run: the final validation loss and accuracy (after the last epoch), whether the training
loss ever went NaN/Inf, and the number of clipped optimizer steps. For AutoClip it is read from
the run's ``convergence_report.json`` (its "clip" interventions; ``logger=False``, so the report
lands in ``default_root_dir``); for Lightning's fixed clipping, which keeps no record, it is
counted from the pre-clip global gradient norms that a callback placed first records (a step is
clipped when its norm exceeds the value). A second callback, placed after AutoClip, records the
norm the optimizer gets (for the fixed clip: ``min(norm, value)``, as Lightning clips after every
callback's ``on_before_optimizer_step``).

Writes ``autoclip_spikes.md`` (the tables, the command, machine and versions) and
``autoclip_spikes.png`` (training loss of every variant on the first seed; the applied gradient
norm below) into ``--out``, and prints the tables. About 50 s on 2 CPU cores with the defaults.
"""

from __future__ import annotations

import argparse
import json
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
from torch.nn import functional as F

try:  # run as a script: benchmarks/ is on sys.path
    from _report import command_line, quiet_lightning, text_table
    from _spikes_report import RunResult, headline, notes, plot, seed_rows, summary_rows, verdicts, write_markdown
    from _timing import environment
except ImportError:  # imported as benchmarks.bench_autoclip_spikes
    from benchmarks._report import command_line, quiet_lightning, text_table
    from benchmarks._spikes_report import (RunResult, headline, notes, plot, seed_rows, summary_rows, verdicts,
                                            write_markdown)
    from benchmarks._timing import environment
from lightning_convergence import AutoClip, default_callbacks
from lightning_convergence.demo.data import DigitsDataModule
from lightning_convergence.demo.models import DigitsCNN
from lightning_convergence.recorder.console import ConvergenceWarning
from lightning_convergence.recorder.run_log import REPORT_FILENAME

ZSCORE_W50 = 50  # a warm-up that spans the norm's early rise (see the md's notes)


@dataclass(frozen=True)
class Variant:
    spikes: bool  # inject the spikes
    clip_val: float | None  # Trainer(gradient_clip_val=...)
    autoclip: dict[str, Any] | None  # AutoClip(**autoclip)
    text: str
    lr_scale: float = 1.0  # times --lr
    suite: bool = False  # default_callbacks(auto_remediate=True) instead of AutoClip alone


VARIANTS: dict[str, Variant] = {
    "clean": Variant(False, None, None, "no spikes, no clipping (the reference)"),
    "clean 2x lr": Variant(False, None, None, "no spikes, no clipping, twice the lr: is the lr near the edge?",
                           lr_scale=2.0),
    "none": Variant(True, None, None, "spikes, no clipping"),
    "fixed 1.0": Variant(True, 1.0, None, "spikes, `Trainer(gradient_clip_val=1.0)`"),
    "fixed 0.1": Variant(True, 0.1, None, "spikes, `Trainer(gradient_clip_val=0.1)`"),
    "fixed 10": Variant(True, 10.0, None, "spikes, `Trainer(gradient_clip_val=10)`"),
    "fixed 30": Variant(True, 30.0, None, "spikes, `Trainer(gradient_clip_val=30)`"),
    "percentile": Variant(True, None, {"mode": "percentile"},
                          'spikes, `AutoClip(mode="percentile")` (defaults: p=10, window 1000)'),
    "zscore": Variant(True, None, {"mode": "zscore"},
                      'spikes, `AutoClip(mode="zscore")` (defaults: z=2.5, alpha 0.97, warm-up 25 steps)'),
    "zscore w50": Variant(True, None, {"mode": "zscore", "clip_warmup_steps": ZSCORE_W50},
                          f'spikes, `AutoClip(mode="zscore", clip_warmup_steps={ZSCORE_W50})`'),
    "agc": Variant(True, None, {"mode": "agc"},
                   'spikes, `AutoClip(mode="agc")` (defaults: clip_factor 0.01, eps 1e-3, final layer excluded)'),
    "suite": Variant(True, None, None, "spikes, `default_callbacks(auto_remediate=True)` (GradientNormMonitor "
                     "+ AutoClip zscore with z 4, alpha 0.9, warm-up 10)", suite=True),
}


class SpikyDigitsCNN(DigitsCNN):
    """The demo CNN; on the optimizer steps in ``spike_steps`` the inputs are scaled by ``spike_scale``."""

    def __init__(self, lr: float, momentum: float, spike_steps: Sequence[int], spike_scale: float) -> None:
        super().__init__(lr=lr, momentum=momentum)
        self.spike_steps = frozenset(spike_steps)
        self.spike_scale = spike_scale

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        if self.global_step in self.spike_steps:
            x = x * self.spike_scale
        return F.cross_entropy(self(x), y)


def global_norm(pl_module: LightningModule) -> float:
    grads = [p.grad.detach() for p in pl_module.parameters() if p.grad is not None]
    return float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads])))


class NormProbe(Callback):
    """The global gradient norm at ``on_before_optimizer_step``, per optimizer step."""

    def __init__(self) -> None:
        self.norms: list[float] = []

    def on_before_optimizer_step(self, trainer: Trainer, pl_module: LightningModule,
                                 optimizer: torch.optim.Optimizer) -> None:
        self.norms.append(global_norm(pl_module))


class Recorder(NormProbe):
    """First in the callback list: the pre-clip norm, and the training loss of every step."""

    def __init__(self) -> None:
        super().__init__()
        self.losses: list[float] = []

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        self.losses.append(float(outputs["loss"]))


def clipped_from_report(directory: str) -> int:
    """AutoClip's clipped steps, summed over its "clip" interventions in convergence_report.json."""
    with open(os.path.join(directory, REPORT_FILENAME), encoding="utf-8") as handle:
        report = json.load(handle)
    return sum(int(i["detail"]["clipped_steps"]) for i in report["interventions"]
               if i["action"] == "clip" and i["source"] == "AutoClip")


def run_one(name: str, seed: int, args: argparse.Namespace, root: str) -> RunResult:
    variant = VARIANTS[name]
    L.seed_everything(seed, verbose=False)
    spike_steps = args.spike_steps if variant.spikes else ()
    model = SpikyDigitsCNN(args.lr * variant.lr_scale, args.momentum, spike_steps, args.spike_scale)
    recorder, after = Recorder(), NormProbe()
    callbacks: list[Callback] = [recorder]  # first: it sees the gradients before any clipping
    if variant.autoclip is not None:
        callbacks.append(AutoClip(**variant.autoclip))
    if variant.suite:
        callbacks.extend(default_callbacks(auto_remediate=True))
    callbacks.append(after)  # after AutoClip; Lightning's own clip comes after every callback
    directory = os.path.join(root, name.replace(" ", "_"), f"seed{seed}")
    trainer = Trainer(
        accelerator="cpu", devices=1, max_epochs=args.epochs, logger=False, default_root_dir=directory,
        callbacks=callbacks, gradient_clip_val=variant.clip_val, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
    )
    began = time.perf_counter()
    trainer.fit(model, DigitsDataModule(batch_size=args.batch_size, seed=seed))
    seconds = time.perf_counter() - began
    applied = after.norms
    clipped: int | None = None
    if variant.autoclip is not None or variant.suite:
        clipped = clipped_from_report(directory)
    elif variant.clip_val is not None:
        clipped = sum(n > variant.clip_val for n in recorder.norms)
        applied = [min(n, variant.clip_val) for n in applied]
    metrics = trainer.callback_metrics
    return RunResult(name, seed, variant.spikes, float(metrics.get("val_loss", math.nan)),
                     float(metrics.get("val_acc", math.nan)), recorder.losses, recorder.norms, applied, clipped,
                     variant.clip_val is not None, seconds)


# --------------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=5, help="seeds 0..N-1 (default 5)")
    parser.add_argument("--epochs", type=int, default=5, help="epochs per run (default 5; 47 steps each)")
    parser.add_argument("--lr", type=float, default=0.1, help="SGD learning rate (default 0.1)")
    parser.add_argument("--momentum", type=float, default=0.9, help="SGD momentum (default 0.9)")
    parser.add_argument("--batch-size", type=int, default=32, help="training batch size (default 32)")
    parser.add_argument("--spike-scale", type=float, default=100.0, help="input scale on spike steps (default 100)")
    parser.add_argument("--spike-steps", type=str, default="60,110,160,210",
                        help="comma-separated optimizer steps with scaled inputs (default 60,110,160,210)")
    parser.add_argument("--variants", type=str, default=",".join(VARIANTS),
                        help=f"comma-separated subset of {', '.join(VARIANTS)}")
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (default 1)")
    parser.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results"),
                        help="folder for autoclip_spikes.md and .png (default benchmarks/results)")
    args = parser.parse_args(argv)
    args.spike_steps = sorted({int(s) for s in args.spike_steps.split(",") if s.strip()})
    args.variant_list = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in args.variant_list if v not in VARIANTS]
    if unknown:
        parser.error(f"unknown variants {unknown}; known: {list(VARIANTS)}")
    if min(args.seeds, args.epochs, args.batch_size) < 1:
        parser.error("--seeds, --epochs and --batch-size must be >= 1")
    args.seed_list = list(range(args.seeds))
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    quiet_lightning()
    env = environment()
    warnings.filterwarnings("ignore", category=ConvergenceWarning)
    command = command_line("benchmarks/bench_autoclip_spikes.py", argv)
    print(command)
    print(f"python {env['python']}, torch {env['torch']}, lightning {env['lightning']}, torch threads "
          f"{env['torch_threads']}, cpus {env['cpu_count']}, cpu: {env['cpu_model']}")
    print(f"lr {args.lr}, momentum {args.momentum}, batch {args.batch_size}, epochs {args.epochs}, "
          f"inputs x{args.spike_scale:g} on steps {args.spike_steps}, seeds {args.seed_list}\n", flush=True)
    began = time.perf_counter()
    results: dict[str, list[RunResult]] = {v: [] for v in args.variant_list}
    with tempfile.TemporaryDirectory(prefix="bench_autoclip_") as root:
        for seed in args.seed_list:
            for variant in args.variant_list:
                r = run_one(variant, seed, args, root)
                results[variant].append(r)
                print(f"  seed {seed} {variant:10s} val loss {r.val_loss:7.3f}  val acc {r.val_acc:.3f}  "
                      f"clipped {'-' if r.clipped_steps is None else r.clipped_steps}  "
                      f"non-finite at {r.first_nonfinite}  ({r.seconds:.1f} s)", flush=True)
    wall = time.perf_counter() - began
    print(f"\n== Results over {len(args.seed_list)} seeds (mean [min, max]; * counted from pre-clip norms) ==")
    print(text_table(summary_rows(results, args.spike_steps)))
    print("\n" + headline(results) + "\n")
    print("\n".join(verdicts(results, args.spike_steps) + notes(results, args.spike_steps, ZSCORE_W50)))
    print("\n== Per seed ==")
    print(text_table(seed_rows(results, args.spike_steps)))
    os.makedirs(args.out, exist_ok=True)
    png = os.path.join(args.out, "autoclip_spikes.png")
    md = os.path.join(args.out, "autoclip_spikes.md")
    plot(results, args, png)
    descriptions = {v: VARIANTS[v].text for v in results}
    write_markdown(md, args, command, env, results, wall, png, descriptions, ZSCORE_W50)
    print(f"\ntotal wall time {wall:.0f} s; wrote {md} and {png}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
