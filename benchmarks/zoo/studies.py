"""The effect studies: does a remedy help, against the alternatives a user would try?

Each study is a handful of scenarios (``role="study"``), each run under its variants on the study's
seeds, with the zoo's runner. ``python -m benchmarks.zoo --study NAME`` writes
``benchmarks/results/NAME.md`` (the verdict written by hand, kept; the tables generated) and the
records as JSON beside it.

- ``spikes``: does AutoClip save a run from injected gradient spikes (inputs x100 on four steps),
  against no clipping and guessed fixed clip values?
- ``redo``: does ReDo (``DeadNeuronTracker(auto_remediate=True)``) bring back a ReLU MLP whose units
  died (hidden biases at -3; a too-high learning rate)?
- ``warmup``: does WarmupScheduler rescue a post-LN transformer trained with Adam at a high LR,
  alone and on top of the user's cosine schedule?
- ``plateau``: does the suite rescue a far too high LR, do PlateauAdvisor's LR cuts help a stalled
  run, and do healthy runs get warnings?
"""

from __future__ import annotations

import argparse
import math
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from benchmarks.harness import environment, environment_line, finite, markdown_table, spread, write_results
from benchmarks.zoo.data import ZooDigits, scaled_inputs
from benchmarks.zoo.models import CNN, MLP, RowsTransformer
from benchmarks.zoo.scenarios import OBSERVE, REMEDIATE, SCENARIOS, Scenario, Variant
from lightning_convergence import AutoClip, DeadNeuronTracker, PlateauAdvisor, WarmupScheduler, default_callbacks

Record = dict[str, Any]
FAILED_ACC = 0.5  # a seed is lost below this final validation accuracy (chance is 0.1) or with a NaN/Inf loss
SPIKE_STEPS = (60, 110, 160, 210)


# ------------------------------------------------------------------------------ variants


def _fixed(value: float) -> Variant:
    return Variant(f"fixed_{value:g}", lambda s: [], lambda s: f"`Trainer(gradient_clip_val={value:g})`",
                   trainer={"gradient_clip_val": value})


def _autoclip(name: str, **kw: Any) -> Variant:
    text = ", ".join(f"{k}={v!r}" for k, v in kw.items())
    return Variant(name, lambda s: [AutoClip(**kw)], lambda s: f"`AutoClip({text})`")


def _advisor(remediate: bool) -> Variant:
    text = f"PlateauAdvisor(monitor='val_loss', patience=1, auto_remediate={remediate})"
    return Variant(f"advisor_{'remediate' if remediate else 'observe'}",
                   lambda s: [PlateauAdvisor(monitor="val_loss", patience=1, auto_remediate=remediate)],
                   lambda s: f"`{text}`")


STUDY_VARIANTS = [
    Variant("none", lambda s: [], lambda s: "no callbacks"),
    *(_fixed(v) for v in (1.0, 0.1, 10.0, 30.0)),
    _autoclip("percentile", mode="percentile"), _autoclip("zscore", mode="zscore"),
    _autoclip("zscore_w50", mode="zscore", clip_warmup_steps=50), _autoclip("agc", mode="agc"),
    Variant("suite_acting", lambda s: default_callbacks(auto_remediate=True, num_classes=s.num_classes),
            lambda s: f"`default_callbacks(auto_remediate=True, num_classes={s.num_classes})`"),
    Variant("tracker", lambda s: [DeadNeuronTracker(auto_remediate=False)],
            lambda s: "`DeadNeuronTracker(auto_remediate=False)` (measures only)"),
    Variant("redo", lambda s: [DeadNeuronTracker(auto_remediate=True)], lambda s: "`DeadNeuronTracker(auto_remediate=True)`"),
    Variant("linear_50", lambda s: [WarmupScheduler(warmup_steps=50)], lambda s: "`WarmupScheduler(warmup_steps=50)`"),
    Variant("untuned", lambda s: [WarmupScheduler(warmup_steps="untuned")],
            lambda s: '`WarmupScheduler(warmup_steps="untuned")` (2 / (1 - beta2) steps)'),
    _advisor(False), _advisor(True),
]
VARIANTS: dict[str, Variant] = {v.name: v for v in (OBSERVE, REMEDIATE, *STUDY_VARIANTS)}


# ------------------------------------------------------------------------------ measures


def dead_fraction(model: nn.Module, data: ZooDigits) -> dict[str, Any]:
    """Per ReLU of the MLP, the share of units not positive for any training input (run layer by
    layer with ``torch.relu``, so the tracker's hooks never see these forwards)."""
    out: dict[str, float] = {}
    with torch.no_grad():
        h = data.train_set.tensors[0].flatten(1)
        for i, module in enumerate(model.net):
            h = torch.relu(h) if isinstance(module, nn.ReLU) else module(h)
            if isinstance(module, nn.ReLU):
                out[f"net.{i}"] = float((h.amax(dim=0) <= 0).float().mean())
    return {"dead_fraction": out}


def _lost(r: Record) -> bool:
    return not math.isfinite(r["val_acc"]) or r["val_acc"] < FAILED_ACC or not all(math.isfinite(v) for v in r["losses"])


def _smoothed(losses: list[float], n: int = 5) -> list[float]:
    return [statistics.fmean(losses[i - n:i]) for i in range(n, len(losses) + 1)]


def _clipped(r: Record) -> float:
    """AutoClip's clipped steps from its "clip" interventions; for Lightning's fixed clip, which keeps
    no record, the steps whose pre-clip norm exceeded the value."""
    clip = VARIANTS[r["variant"]].trainer.get("gradient_clip_val")
    if clip is not None:
        return float(sum(n > clip for n in r["norms"]))
    return float(sum(int(i["detail"].get("clipped_steps", 0)) for i in r["interventions"] if i["action"] == "clip"))


def _col_clipped(runs: list[Record]) -> str:
    if runs[0]["variant"] == "none":
        return "-"
    return spread([_clipped(r) for r in runs], ".1f") + (" *" if runs[0]["variant"].startswith("fixed") else "")


def _col_tail(runs: list[Record]) -> str:
    spikes = set(SPIKE_STEPS)
    return spread([statistics.fmean([v for i, v in enumerate(r["losses"]) if i not in spikes][-20:]) for r in runs])


def _col_dead(runs: list[Record]) -> str:
    layers = runs[0]["extras"].get("dead_fraction", {})
    return " / ".join(f"{k} {statistics.fmean(r['extras']['dead_fraction'][k] for r in runs):.2f}" for k in layers) or "-"


def _col_revivals(runs: list[Record]) -> str:
    revivals = [[i for i in r["interventions"] if i["action"] == "reinit_units"] for r in runs]
    units = [sum(int(i["detail"]["units"]) for i in rs) for rs in revivals]
    steps = sorted({i["step"] for rs in revivals for i in rs})
    return f"{spread([len(rs) for rs in revivals], '.1f')}; units {spread(units, '.0f')}; at {steps or '-'}"


def _col_best(runs: list[Record]) -> str:
    return spread([min(_smoothed(r["losses"]), default=math.nan) for r in runs])


def _col_lr(runs: list[Record]) -> str:
    lrs = runs[0]["lrs"]
    if not lrs:
        return "-"
    peak = max(range(len(lrs)), key=lrs.__getitem__)
    return f"{lrs[0]:.2e} / {lrs[peak]:.2e} ({peak}) / {lrs[-1]:.2e}"


def _col_actions(runs: list[Record]) -> str:
    def one(r: Record) -> str:
        return ", ".join(f"{i['action']}@{i['step']}" for i in r["interventions"]) or "none"
    return " / ".join(f"{r['seed']}: {one(r)}" for r in runs)


# ------------------------------------------------------------------------------ studies


@dataclass(frozen=True)
class Study:
    name: str
    title: str
    setup: str
    seeds: tuple[int, ...]
    scenarios: list[Scenario]
    columns: list[tuple[str, Callable[[list[Record]], str]]] = field(default_factory=list)


def _study(name: str, what: str, model: Callable, data: Callable, epochs: int, variants: tuple[str, ...],
           **kw: Any) -> Scenario:
    return Scenario(name, "study", what, model, data, epochs=epochs, variants=variants, **kw)


_spiky = lambda seed: ZooDigits(seed, step_faults={s: scaled_inputs(100.0) for s in SPIKE_STEPS})  # noqa: E731
_digits = lambda seed: ZooDigits(seed)  # noqa: E731
_flat = lambda seed: ZooDigits(seed, as_images=False)  # noqa: E731
SPIKE_VARIANTS = ("none", "fixed_1", "fixed_0.1", "fixed_10", "fixed_30", "percentile", "zscore", "zscore_w50", "agc",
                  "suite_acting")
_LOG50 = {"log_every_n_steps": 50}  # Lightning's default: the tracker's windows at its defaults

STUDIES: dict[str, Study] = {s.name: s for s in [
    Study("spikes", "AutoClip against injected gradient spikes",
          "The demo's digits CNN, SGD (momentum 0.9) at lr 0.1, near the edge of stability (`spikes/clean_2x_lr` "
          f"shows a clean run at 0.2), batch 32, 5 epochs (235 steps). The fault: on steps {list(SPIKE_STEPS)} the "
          "batch's inputs are multiplied by 100. Clipped steps: AutoClip's own count from the report's `clip` "
          "interventions; rows marked * (Lightning's fixed clip keeps no record) count the steps whose pre-clip "
          "global norm exceeded the value.", (0, 1, 2, 3, 4), [
              _study("spikes/clean", "no spikes", lambda: CNN(lr=0.1), _digits, 5, ("none",), norms=True),
              _study("spikes/clean_2x_lr", "no spikes, lr 0.2", lambda: CNN(lr=0.2), _digits, 5, ("none",), norms=True),
              _study("spikes/spikes", "inputs x100 on four steps", lambda: CNN(lr=0.1), _spiky, 5, SPIKE_VARIANTS,
                     norms=True)],
          [("clipped steps mean [min, max]", _col_clipped), ("last-20 ordinary train loss", _col_tail)]),
    Study("redo", "ReDo on a ReLU MLP with dead units",
          "A ReLU MLP (64-128-128-10, activation sites `net.1`, `net.3`), SGD (momentum 0.9), batch 32, 10 epochs "
          "(470 steps), Lightning's default `log_every_n_steps=50`; the tracker at its defaults (one forward in 10 "
          "sampled, a layer revived when at least 25% of its units are dead in two windows in a row, then 200 steps "
          "of cooldown). Dead fraction: measured after training over the whole training set (a unit never positive "
          "for any of the 1500 inputs), independently of the tracker.", (0, 1, 2), [
              _study(f"redo/{n}", w, m, _flat, 10, ("tracker", "redo"), trainer=_LOG50, measure=dead_fraction)
              for n, w, m in [("healthy", "default init, lr 0.05", lambda: MLP(lr=0.05)),
                              ("neg_bias", "hidden biases at -3, lr 0.05", lambda: MLP(lr=0.05, bias_init=-3.0)),
                              ("high_lr_0.2", "default init, lr 0.2", lambda: MLP(lr=0.2)),
                              ("high_lr_0.3", "default init, lr 0.3", lambda: MLP(lr=0.3))]],
          [("dead at end, whole train set (mean)", _col_dead), ("revivals per run; units revived; steps", _col_revivals)]),
    Study("warmup", "Warmup on a post-LN transformer trained with Adam at a high learning rate",
          "A post-LN `nn.TransformerEncoder` (4 layers, d_model 64, 4 heads, ff 128, no dropout) reading each digit "
          "as 8 rows; Adam, betas (0.9, 0.98), batch 32, 8 epochs (376 steps). At lr 1e-3 and 3e-3 this model "
          "trained as well without warmup as with it, so the study runs at 6e-3. Effective LR: read inside "
          "`optimizer.step()`, on the first seed: step 0 / peak (step) / last.", (0, 1, 2, 3, 4), [
              _study("warmup/lr_6e-3", "constant lr 6e-3", lambda: RowsTransformer(6e-3), _flat, 8,
                     ("none", "linear_50", "untuned")),
              _study("warmup/lr_6e-3_cosine", "the user's `CosineAnnealingLR` from 6e-3, stepped per step",
                     lambda: RowsTransformer(6e-3, cosine=True), _flat, 8, ("none", "untuned")),
              _study("warmup/lr_6e-4", "reference: constant lr 6e-4", lambda: RowsTransformer(6e-4), _flat, 8, ("none",))],
          [("best 5-step train loss", _col_best), ("effective LR", _col_lr)]),
    Study("plateau", "PlateauAdvisor on the digits CNN",
          "The demo's digits CNN, SGD (momentum 0.9), batch 32, 6 epochs (282 steps). lr 0.5 is the demo's `lr_high` "
          "fault; 0.05 is tuned; 0.15 is too high but mostly stable (chosen on seed 0: 0.2 and 0.3 diverged).",
          (0, 1, 2), [
              _study("plateau/lr_0.5", "lr 0.5", lambda: CNN(lr=0.5), _digits, 6, ("none", "suite_acting")),
              _study("plateau/lr_0.15", "lr 0.15", lambda: CNN(lr=0.15), _digits, 6,
                     ("advisor_observe", "advisor_remediate")),
              _study("plateau/lr_0.05", "lr 0.05 (tuned)", lambda: CNN(lr=0.05), _digits, 6, ("none", "observe")),
              _study("plateau/lr_0.02", "lr 0.02", lambda: CNN(lr=0.02), _digits, 6, ("observe",))],
          [("interventions per seed", _col_actions)]),
]}

SCENARIO_BY_NAME: dict[str, Scenario] = {**SCENARIOS, **{s.name: s for st in STUDIES.values() for s in st.scenarios}}


# ------------------------------------------------------------------------------ the results file


def _kinds(runs: list[Record]) -> str:
    """Each warning+ kind with the number of runs that had it."""
    counts: dict[str, int] = {}
    for r in runs:
        for kind in {d["kind"] for d in r["diagnoses"] if d["severity"] != "info"}:
            counts[kind] = counts.get(kind, 0) + 1
    return ", ".join(f"{k} ({n}/{len(runs)})" for k, n in sorted(counts.items())) or "none"


def study_rows(study: Study, records: list[Record]) -> list[list[str]]:
    rows = [["scenario", "variant", "val loss mean [min, max]", "val acc mean [min, max]", "val acc per seed",
             f"seeds lost (acc < {FAILED_ACC} or NaN/Inf)", "warning+ kinds (runs)", *(h for h, _ in study.columns)]]
    for scenario in study.scenarios:
        for variant in scenario.variant_names:
            runs = sorted((r for r in records if r["scenario"] == scenario.name and r["variant"] == variant),
                          key=lambda r: r["seed"])
            if not runs:
                continue
            rows.append([scenario.name, VARIANTS[variant].describe(scenario), spread([r["val_loss"] for r in runs]),
                         spread([r["val_acc"] for r in runs]), " / ".join(f"{r['val_acc']:.3f}" for r in runs),
                         f"{sum(map(_lost, runs))}/{len(runs)}", _kinds(runs), *(c(runs) for _, c in study.columns)])
    return rows


def write_study(study: Study, records: list[Record], args: argparse.Namespace, wall: float, md: Path) -> None:
    env = environment()
    command = f"python -m benchmarks.zoo --study {study.name}" + "".join(f" {a}" for a in args.argv
                                                                        if a not in ("--study", study.name))
    errors = [f"{r['scenario']} {r['variant']} seed {r['seed']}: {r['error']}" for r in records if r["error"]]
    seconds = finite([r["seconds"] for r in records])
    generated = [
        f"Produced by `{command}` in {wall:.0f} s ({len(records)} runs, {args.jobs} at a time, one torch thread "
        f"each, {statistics.fmean(seconds):.1f} s per run); {environment_line(env)}.", "",
        f"Seeds {', '.join(map(str, sorted({r['seed'] for r in records})))}: each seed has its own init, split and "
        "batch order, the same for every variant.", "", study.setup, "",
        *([f"**Runs that raised:** {'; '.join(errors)}", ""] if errors else []),
        markdown_table(study_rows(study, records)), ""]
    series = ("losses", "lrs", "norms", "val_losses")  # per step: left out of the JSON
    kept = [{k: v for k, v in r.items() if k not in series} for r in records]
    write_results(md, study.title, generated, {"command": command, "environment": env, "records": kept})
