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
import os
import tempfile
import time
import warnings
from collections.abc import Sequence

import torch

try:  # run as a script: benchmarks/ is on sys.path
    from _report import command_line, quiet_lightning, text_table
    from _timing import environment
    from _warmup_model import RunResult, run_one, variants
    from _warmup_report import headline, notes, plot, seed_rows, summary_rows, verdicts, write_markdown
except ImportError:  # imported as benchmarks.bench_warmup
    from benchmarks._report import command_line, quiet_lightning, text_table
    from benchmarks._timing import environment
    from benchmarks._warmup_model import RunResult, run_one, variants
    from benchmarks._warmup_report import headline, notes, plot, seed_rows, summary_rows, verdicts, write_markdown
from lightning_convergence.recorder.console import ConvergenceWarning


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
