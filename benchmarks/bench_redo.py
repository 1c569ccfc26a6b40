"""Benchmark: does DeadNeuronTracker's ReDo bring dead ReLU units back, and does that help the run?

Run::

    python benchmarks/bench_redo.py [--seeds 3] [--epochs 10] [--out benchmarks/results]
    python benchmarks/bench_redo.py --quick        # tiny settings: a smoke test, not a result

The model. An MLP built like the tests' ``DigitsMLP`` (``tests/helpers/models.py``): ``--depth``
blocks of ``nn.Linear`` then ``nn.ReLU`` (modules, so the tracker can hook them), ``--hidden``
units wide (default 2 x 128), and a ``Linear(hidden, 10)`` head; SGD with momentum 0.9, batch 32,
on the bundled digits (``lightning_convergence.demo.data.DigitsDataModule``, flat 64-pixel inputs,
1500 train / 297 validation). The two activation sites are ``net.1`` and ``net.3``.

Scenarios, each with the same seeds (same init, split and batch order per seed):

- ``healthy``: PyTorch's default init, lr ``--lr`` (0.05): the reference;
- ``neg bias``: the same, but every hidden layer's bias is set to ``--bias`` (-3) at init. The
  inputs are in [0, 1] and the first layer's default weights within +-1/8, so in practice no
  pre-activation reaches 0 (measured: every hidden unit is dead at init, for every training input
  and seed), no gradient reaches the hidden layers, and only the head's bias can learn;
- ``high lr X``: default init, lr X, one scenario per value of ``--high-lr`` (default 0.2 and 0.3,
  4x and 6x ``--lr``). How these were chosen (this benchmark, 10 epochs, seeds 0-2, dead fractions
  over the whole training set at the end, without ReDo): at 0.2, 54 to 70% of the first layer's
  units die, most in the first 150 steps, while the run still reaches 0.90 to 0.94 validation
  accuracy (healthy: 0.96 to 0.97): many dead units, the net otherwise sane. At 0.3, 87 to 97% of
  the first layer and 43 to 74% of the second die and accuracy suffers (0.36 to 0.74): still
  learning, but hurt. At 0.5 and 1.0 nearly every unit of both layers dies and the run stays at
  chance (ReDo got 2 of 3 seeds to 0.26 at 0.5, none off chance at 1.0): no longer a net that is
  otherwise sane, so left out. Adam at 0.03 (a plain torch loop, the same model) killed 55 to 70%
  of the first layer at 0.96 accuracy, as good as Adam at 1e-3: nothing for ReDo to win there;
  SGD also keeps every scenario on one optimizer.

Modes:

- ``observe``: ``DeadNeuronTracker(auto_remediate=False)``: it only measures (training is the
  same as without it) and gives the dead-fraction series of the run without ReDo;
- ``redo``: ``DeadNeuronTracker(auto_remediate=True)``.

A check besides: on the first seed every scenario also runs without any tracker; its training
loss at every step and its validation accuracy must equal ``observe``'s.

Both modes use the tracker's defaults, nothing changed: one training forward in 10 sampled, a window
judged every logging step (the Trainer's ``log_every_n_steps``, Lightning's default 50) once it
holds 4 sampled batches, a layer reported when at least 10% of its units (the same units) are
dead in 2 consecutive windows, ReDo on those units when at least 25% are (a warning), then 200
steps of cooldown for that layer. So the first revival can come at step 99 and a layer is revived at most every 200
steps: with 10 epochs (470 steps), at most three times.

Per run: the tracker's logged ``convergence/dead_fraction/<layer>`` of every window (captured by an
in-memory logger); independently of the tracker, before training and after every epoch, the
dead fraction per layer over the whole training set (a unit that is not positive for any of the
1500 inputs) and the validation accuracy and loss; the tracker's diagnoses and interventions
(``reinit_units``: step, layer, how many units), from its report records; the training loss of
every step (to catch NaN/Inf). The tracker's window sees 4 to 5 sampled batches of 32, so it calls
a rarely-firing unit dead more readily than the whole-set measure does.

Writes ``redo.md`` (tables, command, machine and versions, sentences generated from the numbers)
and ``redo.png`` (dead fraction and validation accuracy over training, observe against redo) into
``--out``, and prints the tables. About 30 s on 2 CPU cores with the defaults (one torch thread;
28 fits of about a second each).
"""

from __future__ import annotations

import argparse
import math
import os
import tempfile
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import lightning as L
import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.loggers.logger import Logger
from torch import nn
from torch.nn import functional as F

try:  # run as a script: benchmarks/ is on sys.path
    from _redo_report import cross_checks, plot, reading, seed_rows, summary_rows, verdicts, write_markdown
    from _report import command_line, quiet_lightning, text_table
    from _timing import environment
except ImportError:  # imported as benchmarks.bench_redo
    from benchmarks._redo_report import cross_checks, plot, reading, seed_rows, summary_rows, verdicts, write_markdown
    from benchmarks._report import command_line, quiet_lightning, text_table
    from benchmarks._timing import environment
from lightning_convergence import DeadNeuronTracker
from lightning_convergence.demo.data import DigitsDataModule
from lightning_convergence.recorder.console import ConvergenceWarning

MODES = ("observe", "redo")
DEAD_KEY = "convergence/dead_fraction/"


@dataclass(frozen=True)
class Scenario:
    lr: float
    bias: float | None  # every hidden layer's bias at init, or None for the default init
    text: str


def scenarios(args: argparse.Namespace) -> dict[str, Scenario]:
    return {
        "healthy": Scenario(args.lr, None, f"default init, lr {args.lr:g}"),
        "neg bias": Scenario(args.lr, args.bias, f"hidden biases set to {args.bias:g} at init, lr {args.lr:g}"),
        **{f"high lr {lr:g}": Scenario(lr, None, f"default init, lr {lr:g} ({lr / args.lr:g}x `--lr`)")
           for lr in args.high_lr},
    }


class ReluMLP(LightningModule):
    """``depth`` x (Linear, ReLU) then a Linear head, SGD with momentum 0.9 (like the tests' DigitsMLP)."""

    def __init__(self, lr: float, hidden: int, depth: int, bias: float | None) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = 64
        for _ in range(depth):
            linear = nn.Linear(width, hidden)
            if bias is not None:
                nn.init.constant_(linear.bias, bias)
            layers += [linear, nn.ReLU()]
            width = hidden
        layers.append(nn.Linear(width, 10))
        self.net = nn.Sequential(*layers)
        self.lr = lr

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        return F.cross_entropy(self(x), y)

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        x, y = batch
        logits = self(x)
        self.log("val_loss", F.cross_entropy(logits, y))
        self.log("val_acc", (logits.argmax(-1) == y).float().mean())

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=self.lr, momentum=0.9)

    def relu_names(self) -> list[str]:
        return [f"net.{i}" for i, m in enumerate(self.net) if isinstance(m, nn.ReLU)]


class MemoryLogger(Logger):
    """Keeps every ``log_metrics`` call (the tracker's dead fractions reach the loggers this way)."""

    def __init__(self, save_dir: str) -> None:
        super().__init__()
        self._save_dir = save_dir
        self.metrics: list[tuple[int | None, dict[str, float]]] = []

    @property
    def name(self) -> str:
        return "memory"

    @property
    def version(self) -> int:
        return 0

    @property
    def save_dir(self) -> str:
        return self._save_dir

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        self.metrics.append((step, dict(metrics)))

    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        pass


@torch.no_grad()
def measure(model: ReluMLP, datamodule: DigitsDataModule) -> tuple[dict[str, float], float, float]:
    """Dead fraction per ReLU over the whole training set, validation accuracy and loss.

    Runs the layers one by one with ``torch.relu`` in place of the ReLU modules, so the tracker's
    hooks never see these forwards."""
    out: dict[str, float] = {}
    h = datamodule.train_set.tensors[0].to(model.device)
    for i, module in enumerate(model.net):
        if isinstance(module, nn.ReLU):
            h = torch.relu(h)
            out[f"net.{i}"] = float((h.amax(dim=0) <= 0).float().mean())
        else:
            h = module(h)
    x, y = (t.to(model.device) for t in datamodule.val_set.tensors)
    logits = _plain_forward(model, x)
    return out, float((logits.argmax(-1) == y).float().mean()), float(F.cross_entropy(logits, y))


def _plain_forward(model: ReluMLP, x: torch.Tensor) -> torch.Tensor:
    for module in model.net:
        x = torch.relu(x) if isinstance(module, nn.ReLU) else module(x)
    return x


class Recorder(Callback):
    """Whole-set measures before training and after every epoch, and the loss of every step."""

    def __init__(self, datamodule: DigitsDataModule) -> None:
        self.datamodule = datamodule
        self.dead: list[dict[str, float]] = []  # index 0: before training; i: after epoch i
        self.val_acc: list[float] = []
        self.val_loss: list[float] = []
        self.losses: list[float] = []

    def _measure(self, pl_module: ReluMLP) -> None:
        dead, acc, loss = measure(pl_module, self.datamodule)
        self.dead.append(dead)
        self.val_acc.append(acc)
        self.val_loss.append(loss)

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._measure(pl_module)

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        self.losses.append(float(outputs["loss"]))

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._measure(pl_module)


@dataclass
class RunResult:
    scenario: str
    mode: str
    seed: int
    layers: list[str]
    steps_per_epoch: int
    dead: list[dict[str, float]]  # whole training set: before training, then after each epoch
    val_acc: list[float]  # the same points
    val_loss: list[float]
    tracked: dict[str, list[tuple[int, float]]]  # the tracker's windows: layer -> [(step, dead fraction)]
    interventions: list[dict[str, Any]]
    diagnoses: list[dict[str, Any]]
    losses: list[float]
    seconds: float
    lightning_val_acc: float = math.nan  # what the model's validation_step logged last (a cross-check)
    notes: list[str] = field(default_factory=list)

    @property
    def final_acc(self) -> float:
        return self.val_acc[-1]

    @property
    def revivals(self) -> int:
        return len(self.interventions)

    @property
    def units_revived(self) -> int:
        return sum(int(i["detail"]["units"]) for i in self.interventions)

    @property
    def first_nonfinite(self) -> int | None:
        return next((i for i, v in enumerate(self.losses) if not math.isfinite(v)), None)

    def last_window(self, layer: str) -> float:
        series = self.tracked.get(layer, [])
        return series[-1][1] if series else math.nan


def run_one(scenario_name: str, scenario: Scenario, mode: str, seed: int, args: argparse.Namespace,
            root: str) -> RunResult:
    L.seed_everything(seed, verbose=False)
    model = ReluMLP(scenario.lr, args.hidden, args.depth, scenario.bias)
    datamodule = DigitsDataModule(batch_size=args.batch_size, as_images=False, seed=seed)
    tracker = None if mode == "none" else DeadNeuronTracker(auto_remediate=mode == "redo")
    recorder = Recorder(datamodule)
    directory = os.path.join(root, scenario_name.replace(" ", "_"), mode, f"seed{seed}")
    logger = MemoryLogger(directory)
    trainer = Trainer(
        accelerator="cpu", devices=1, max_epochs=args.epochs, logger=logger, default_root_dir=directory,
        callbacks=[recorder] if tracker is None else [tracker, recorder], enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
    )
    began = time.perf_counter()
    trainer.fit(model, datamodule)
    seconds = time.perf_counter() - began
    layers = model.relu_names()
    tracked: dict[str, list[tuple[int, float]]] = {name: [] for name in layers}
    for step, metrics in logger.metrics:
        for key, value in metrics.items():
            if key.startswith(DEAD_KEY) and key[len(DEAD_KEY):] in tracked:
                tracked[key[len(DEAD_KEY):]].append((int(step), float(value)))
    records = {"diagnoses": [], "interventions": []} if tracker is None else tracker._records_state(trainer)
    interventions = [i for i in records["interventions"] if i["action"] == "reinit_units"]
    steps_per_epoch = math.ceil(len(datamodule.train_set) / args.batch_size)
    return RunResult(scenario_name, mode, seed, layers, steps_per_epoch, recorder.dead, recorder.val_acc,
                     recorder.val_loss, tracked, interventions, records["diagnoses"], recorder.losses, seconds,
                     float(trainer.callback_metrics.get("val_acc", math.nan)))


# --------------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=None, help="seeds 0..N-1 (default 3; --quick 1)")
    parser.add_argument("--epochs", type=int, default=None,
                        help="epochs per run (default 10, 47 steps each; --quick 3)")
    parser.add_argument("--lr", type=float, default=0.05, help="SGD lr of `healthy` and `neg bias` (default 0.05)")
    parser.add_argument("--high-lr", type=str, default="0.2,0.3",
                        help="comma-separated SGD lrs, one `high lr X` scenario each (default 0.2,0.3)")
    parser.add_argument("--bias", type=float, default=-3.0, help="hidden biases at init in `neg bias` (default -3)")
    parser.add_argument("--hidden", type=int, default=128, help="hidden width (default 128)")
    parser.add_argument("--depth", type=int, default=2, help="hidden Linear+ReLU blocks (default 2)")
    parser.add_argument("--batch-size", type=int, default=32, help="training batch size (default 32)")
    parser.add_argument("--scenarios", type=str, default=None,
                        help="comma-separated subset of the scenarios, e.g. 'healthy,high lr 0.2' (default all)")
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (default 1)")
    parser.add_argument("--quick", action="store_true", help="1 seed, 3 epochs: a smoke test, not a result")
    parser.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results"),
                        help="folder for redo.md and redo.png (default benchmarks/results)")
    args = parser.parse_args(argv)
    for key, full, quick in (("seeds", 3, 1), ("epochs", 10, 3)):
        if getattr(args, key) is None:
            setattr(args, key, quick if args.quick else full)
    if min(args.seeds, args.epochs, args.hidden, args.depth, args.batch_size) < 1:
        parser.error("--seeds, --epochs, --hidden, --depth and --batch-size must be >= 1")
    try:
        args.high_lr = [float(v) for v in args.high_lr.split(",") if v.strip()]
    except ValueError:
        parser.error("--high-lr must be comma-separated numbers, e.g. 0.2,0.3")
    if not (args.lr > 0 and all(lr > 0 for lr in args.high_lr)):
        parser.error("--lr and --high-lr must be > 0")
    args.all_scenarios = scenarios(args)
    names = list(args.all_scenarios) if args.scenarios is None else [s.strip() for s in args.scenarios.split(",")
                                                                      if s.strip()]
    unknown = [s for s in names if s not in args.all_scenarios]
    if unknown:
        parser.error(f"unknown scenarios {unknown}; known: {list(args.all_scenarios)}")
    args.scenario_list = names
    args.seed_list = list(range(args.seeds))
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    quiet_lightning()
    warnings.filterwarnings("ignore", category=ConvergenceWarning)  # the diagnoses are read from the records
    env = environment()
    command = command_line("benchmarks/bench_redo.py", argv)
    print(command)
    print(f"python {env['python']}, torch {env['torch']}, lightning {env['lightning']}, torch threads "
          f"{env['torch_threads']}, cpus {env['cpu_count']}, cpu: {env['cpu_model']}")
    print(f"MLP 64 -> {' -> '.join([str(args.hidden)] * args.depth)} -> 10 (ReLU), SGD momentum 0.9, batch "
          f"{args.batch_size}, {args.epochs} epochs; seeds {args.seed_list}\n", flush=True)
    began = time.perf_counter()
    results: dict[tuple[str, str], list[RunResult]] = {(s, m): [] for s in args.scenario_list for m in MODES}
    bare: dict[str, RunResult] = {}  # no tracker at all, first seed only
    with tempfile.TemporaryDirectory(prefix="bench_redo_") as root:
        for seed in args.seed_list:
            for name in args.scenario_list:
                for mode in MODES:
                    r = run_one(name, args.all_scenarios[name], mode, seed, args, root)
                    results[(name, mode)].append(r)
                    dead = " ".join(f"{layer} {r.dead[-1][layer]:.2f}" for layer in r.layers)
                    print(f"  seed {seed} {name:8s} {mode:7s} val acc {r.final_acc:.3f}  dead (train set) {dead}  "
                          f"revivals {r.revivals} ({r.units_revived} units)  ({r.seconds:.1f} s)", flush=True)
        # A check, not a result: observing must not change training (first seed, every scenario).
        for name in args.scenario_list:
            bare[name] = run_one(name, args.all_scenarios[name], "none", args.seed_list[0], args, root)
    wall = time.perf_counter() - began
    print(f"\n== Results over {len(args.seed_list)} seeds (mean [min, max]) ==")
    print(text_table(summary_rows(results)))
    print("\n" + reading(results) + "\n")
    print("\n".join(verdicts(results) + cross_checks(results, bare)))
    print("\n== Per seed ==")
    print(text_table(seed_rows(results)))
    os.makedirs(args.out, exist_ok=True)
    png = os.path.join(args.out, "redo.png")
    md = os.path.join(args.out, "redo.md")
    plot(results, args, png)
    descriptions = {name: args.all_scenarios[name].text for name in args.scenario_list}
    write_markdown(md, args, command, env, results, bare, descriptions, wall, png)
    print(f"\ntotal wall time {wall:.0f} s; wrote {md} and {png}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
