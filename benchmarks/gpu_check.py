"""The GPU path proven in one prepared run: one script, one call, at most ``--time-limit`` seconds.

Parts (``--parts``, default all):

- ``a`` no host sync: a real ``Trainer.fit`` on CUDA under ``torch.cuda.set_sync_debug_mode("warn")``;
  the synchronizing calls on steps that do not log are counted per step for a bare run, the
  observing suite and the acting suite; the suite's count is its own minus the bare run's
  (goals: 0 observing, at most the one allowed read per step acting).
- ``b`` agreement: ``tensor_stats`` by the reference, ``foreach`` and Triton backends on CUDA
  tensors (fp32, bf16, fp16; NaN/Inf; empty tensors; one tensor of 1e8 elements).
- ``c`` the statistics pass against a device-to-device copy of the same bytes (goal: at most 1.5x).
- ``d`` whole-step cost on a GPT-style model of about 125M parameters in bf16: bare, observing and
  acting fits alternated, the step time of each from CUDA events (goals: 1.01x observing,
  1.02x acting).
- ``e`` DeadNeuronTracker and InputSanityChecker on CUDA tensors: a layer of dead ReLUs and a NaN
  batch, each named.

Without CUDA (``--device cpu``) each part that needs CUDA is reported as skipped with the reason;
``b`` and ``e`` run on the CPU (Triton only with ``TRITON_INTERPRET=1``), ``d`` with a small model
(``--quick``). Writes ``gpu_check.json`` and ``gpu_check.md`` into ``--out``.

    python -m benchmarks.gpu_check --out benchmarks/results
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable

import lightning as L
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_convergence import DeadNeuronTracker, InputSanityChecker, default_callbacks
from lightning_convergence.stats.backends import triton_unavailable_reason
from lightning_convergence.stats.tensor_stats import tensor_stats

PARTS = ("a", "b", "c", "d", "e")


class GPT(L.LightningModule):
    """A GPT-style causal language model (pre-LN blocks of ``nn.MultiheadAttention`` and a GELU
    MLP, tied embeddings), AdamW. 12 layers of width 768 over a 50,304-token vocabulary: 124M
    parameters; ``small`` for a CPU run."""

    def __init__(self, small: bool = False, seq: int = 256) -> None:
        super().__init__()
        self.vocab, width, layers, heads = (512, 64, 2, 4) if small else (50_304, 768, 12, 12)
        self.seq = seq
        self.embed = nn.Embedding(self.vocab, width)
        self.position = nn.Parameter(torch.zeros(1, seq, width))
        block = nn.TransformerEncoderLayer(width, heads, 4 * width, 0.0, activation="gelu", batch_first=True,
                                           norm_first=True)
        self.blocks = nn.TransformerEncoder(block, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(width)
        mask = torch.triu(torch.full((seq, seq), float("-inf")), diagonal=1)
        self.register_buffer("mask", mask, persistent=False)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.embed(tokens) + self.position[:, :tokens.shape[1]]
        x = self.norm(self.blocks(x, mask=self.mask, is_causal=True))
        return x @ self.embed.weight.T  # [B, T, vocab]

    def training_step(self, batch, batch_idx):
        tokens, targets = batch
        logits = self(tokens)
        return nn.functional.cross_entropy(logits.reshape(-1, self.vocab).float(), targets.reshape(-1))

    def configure_optimizers(self):
        return torch.optim.AdamW(self.parameters(), lr=3e-4, fused=self.device.type == "cuda")


def gpt_loader(model: GPT, batches: int, batch_size: int) -> DataLoader:
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, model.vocab, (batches * batch_size, model.seq + 1), generator=g)
    return DataLoader(TensorDataset(tokens[:, :-1], tokens[:, 1:]), batch_size=batch_size)


def _trainer(device: str, steps: int, callbacks: list, precision: str = "32-true", log_every: int = 50) -> L.Trainer:
    return L.Trainer(accelerator=device, devices=1, max_steps=steps, max_epochs=None, logger=False,
                     enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                     num_sanity_val_steps=0, limit_val_batches=0, precision=precision, callbacks=callbacks,
                     log_every_n_steps=log_every, default_root_dir=tempfile.mkdtemp())


# ----------------------------------------------------------------- a. host syncs


class SyncCounter(L.Callback):
    """Counts CUDA's synchronizing-call warnings on the steps that do not log (every
    ``log_every``-th step logs; the first ``warmup`` steps are left out)."""

    def __init__(self, log_every: int, warmup: int = 3) -> None:
        self.log_every, self.warmup, self.counts = log_every, warmup, []
        self._catcher = None
        self._caught: list = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        step = trainer.global_step
        if step < self.warmup or (step + 1) % self.log_every == 0:
            return
        self._catcher = warnings.catch_warnings(record=True)
        self._caught = self._catcher.__enter__()
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if self._catcher is None:
            return
        torch.cuda.set_sync_debug_mode("default")
        self._catcher.__exit__(None, None, None)
        self.counts.append(sum("synchroniz" in str(w.message) for w in self._caught))
        self._catcher = None


def part_a(device: str, quick: bool) -> dict:
    if device != "cuda":
        return {"status": "skipped", "reason": "needs a CUDA device"}
    steps, log_every = (20, 10) if quick else (60, 20)
    out = {}
    for variant, suite in (("bare", lambda: []), ("observing", lambda: default_callbacks(log_every_n_steps=log_every)),
                           ("acting", lambda: default_callbacks(auto_remediate=True, log_every_n_steps=log_every))):
        L.seed_everything(0, verbose=False)
        model = GPT(small=True)
        counter = SyncCounter(log_every)
        _trainer(device, steps, [*suite(), counter], log_every=log_every).fit(model, gpt_loader(model, steps, 8))
        out[variant] = {"syncs_per_step": statistics.mean(counter.counts) if counter.counts else None,
                        "steps": len(counter.counts)}
    bare = out["bare"]["syncs_per_step"] or 0.0
    out["observing_extra"] = (out["observing"]["syncs_per_step"] or 0.0) - bare
    out["acting_extra"] = (out["acting"]["syncs_per_step"] or 0.0) - bare
    out["status"] = "ok" if out["observing_extra"] == 0 and out["acting_extra"] <= 1 else "goal missed"
    return out


# ----------------------------------------------------------------- b. backends agree


def _cases(device: str, quick: bool) -> dict[str, list[torch.Tensor]]:
    g = torch.Generator(device="cpu").manual_seed(0)
    cases = {}
    for dtype in (torch.float32, torch.bfloat16, torch.float16):
        tensors = [torch.randn(n, generator=g).to(device=device, dtype=dtype) for n in (1, 7, 1000, 65_537)]
        name = str(dtype).replace("torch.", "")
        cases[name] = tensors
        bad = [t.clone() for t in tensors]
        bad[1][3], bad[2][0] = float("nan"), float("inf")
        cases[f"{name} NaN/Inf"] = bad
    cases["empty"] = [torch.empty(0, device=device), torch.ones(3, device=device), torch.empty(0, 5, device=device)]
    big = 1_000_000 if quick else 100_000_000
    cases[f"{big:.0e} elements"] = [torch.randn(big, generator=g).to(device)]
    return cases


def _agree(a: torch.Tensor, b: torch.Tensor) -> float:
    """The largest relative difference, NaN where both are NaN counting as agreement."""
    a, b = a.double().cpu(), b.double().cpu()
    both_nan = torch.isnan(a) & torch.isnan(b)
    same_inf = torch.isinf(a) & torch.isinf(b) & (a == b)
    diff = ((a - b).abs() / b.abs().clamp(min=1e-12)).masked_fill(both_nan | same_inf, 0.0)
    return float(diff.max()) if diff.numel() else 0.0


def part_b(device: str, quick: bool) -> dict:
    backends = ["foreach"] + ([] if triton_unavailable_reason(torch.device(device)) else ["triton"])
    rows, worst = {}, 0.0
    for name, tensors in _cases(device, quick).items():
        reference = tensor_stats(tensors, backend="reference")
        row = {}
        for backend in backends:
            err = _agree(tensor_stats(tensors, backend=backend), reference)
            row[backend] = err
            worst = max(worst, err)
        rows[name] = row
    return {"status": "ok" if worst <= 1e-3 else "goal missed", "backends": backends, "worst_relative_error": worst,
            "cases": rows}


# ----------------------------------------------------------------- c. against a copy


def _cuda_time(fn: Callable[[], object], reps: int) -> float:
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    times = []
    for _ in range(reps):
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def part_c(device: str, quick: bool) -> dict:
    if device != "cuda":
        return {"status": "skipped", "reason": "needs a CUDA device"}
    g = torch.Generator().manual_seed(0)
    tensors = [torch.randn(507 * 507, generator=g).to(device) for _ in range(100 if not quick else 10)]
    copies = [torch.empty_like(t) for t in tensors]
    reps = 20 if quick else 100
    copy_ms = _cuda_time(lambda: torch._foreach_copy_(copies, tensors), reps)
    out = {"elements": sum(t.numel() for t in tensors), "copy_ms": copy_ms}
    for backend in ("foreach", "triton"):
        if backend == "triton" and triton_unavailable_reason(torch.device(device)):
            continue
        ms = _cuda_time(lambda b=backend: tensor_stats(tensors, backend=b), reps)
        out[f"{backend}_ms"], out[f"{backend}_ratio"] = ms, ms / copy_ms
    best = min(v for k, v in out.items() if k.endswith("_ratio"))
    out["status"] = "ok" if best <= 1.5 else "goal missed"
    return out


# ----------------------------------------------------------------- d. whole step


class StepTimer(L.Callback):
    """Step times from CUDA events (or the host clock on CPU) after ``warmup`` steps."""

    def __init__(self, warmup: int) -> None:
        self.warmup, self.times, self._start = warmup, [], None

    def on_train_batch_start(self, trainer, *args):
        if trainer.global_step >= self.warmup:
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            self._start = time.perf_counter()

    def on_train_batch_end(self, trainer, *args):
        if self._start is not None:
            if torch.cuda.is_available():
                torch.cuda.synchronize()  # the timer's own sync; the same in every variant
            self.times.append(time.perf_counter() - self._start)
            self._start = None


def part_d(device: str, quick: bool) -> dict:
    small = device != "cuda" or quick
    steps, warmup, repeats = (12, 4, 2) if small else (60, 10, 3)
    precision = "bf16-mixed" if device == "cuda" else "32-true"
    variants = {"bare": lambda: [], "observing": lambda: default_callbacks(),
                "acting": lambda: default_callbacks(auto_remediate=True)}
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(repeats):  # alternated: bare, observing, acting, bare, ...
        for name, suite in variants.items():
            L.seed_everything(0, verbose=False)
            model = GPT(small=small)
            timer = StepTimer(warmup)
            _trainer(device, steps, [*suite(), timer], precision=precision).fit(model, gpt_loader(model, steps, 8))
            times[name].append(statistics.median(timer.times))
    ratios = {name: statistics.median(a / b for a, b in zip(times[name], times["bare"])) for name in ("observing", "acting")}
    params = sum(p.numel() for p in GPT(small=small).parameters())
    ok = ratios["observing"] <= 1.01 and ratios["acting"] <= 1.02
    return {"status": ("ok" if ok else "goal missed") if device == "cuda" else "ran small on CPU (not the goal)",
            "parameters": params, "precision": precision, "step_ms": {k: [1000 * t for t in v] for k, v in times.items()},
            "ratio_observing": ratios["observing"], "ratio_acting": ratios["acting"]}


# ----------------------------------------------------------------- e. unit and input checks


class DeadAndNaN(L.LightningModule):
    """A ReLU layer whose biases start at -10 (every unit dead)."""

    def __init__(self) -> None:
        super().__init__()
        self.first, self.act, self.head = nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4)
        nn.init.constant_(self.first.bias, -10.0)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return nn.functional.cross_entropy(self.head(self.act(self.first(x))), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


def part_e(device: str, quick: bool) -> dict:
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(256, 16, generator=g), torch.randint(0, 4, (256,), generator=g)
    tracker = DeadNeuronTracker(sample_every_n_steps=1, log_every_n_steps=5)
    _trainer(device, 20, [tracker], log_every=5).fit(DeadAndNaN(), DataLoader(TensorDataset(x, y), batch_size=16))
    x = x.clone()
    x[48:64] = float("nan")  # the 4th batch (a separate fit: NaN weights would hide the dead units)
    checker = InputSanityChecker(num_classes=4, log_every_n_steps=5)
    _trainer(device, 20, [checker], log_every=5).fit(DeadAndNaN(), DataLoader(TensorDataset(x, y), batch_size=16))
    kinds = sorted({d["kind"] for c in (tracker, checker) for d in c.records()["diagnoses"]})
    ok = {"dead_units", "nonfinite_inputs"} <= set(kinds)
    return {"status": "ok" if ok else "goal missed", "device": device, "kinds": kinds}


# ----------------------------------------------------------------- the run


RUNNERS = {"a": part_a, "b": part_b, "c": part_c, "d": part_d, "e": part_e}


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="benchmarks/results", help="folder for gpu_check.json and gpu_check.md")
    parser.add_argument("--device", default="auto", choices=("auto", "cuda", "cpu"))
    parser.add_argument("--parts", default=",".join(PARTS), help="comma-separated subset of a,b,c,d,e")
    parser.add_argument("--quick", action="store_true", help="smaller sizes (a smoke run)")
    parser.add_argument("--time-limit", type=float, default=480.0, help="seconds; parts not started by then are skipped")
    args = parser.parse_args(argv)
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    unknown = [p for p in parts if p not in PARTS]
    if unknown or not parts:
        parser.error(f"--parts must be a comma-separated subset of {','.join(PARTS)}, got {args.parts!r}")
    if not args.time_limit > 0:
        parser.error(f"--time-limit must be > 0, got {args.time_limit!r}")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is available here")
    args.parts = parts
    args.device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    return args


def to_markdown(results: dict) -> str:
    meta = results["meta"]
    lines = [f"# GPU check ({meta['device_name']}, torch {meta['torch']}, `python -m benchmarks.gpu_check`)", "",
             "| part | status | numbers |", "|---|---|---|"]
    for part, result in results["parts"].items():
        numbers = {k: v for k, v in result.items() if k not in ("status", "cases", "step_ms")}
        lines.append(f"| {part} | {result['status']} | `{json.dumps(numbers, default=str)[:300]}` |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    args = parse(argv)
    warnings.filterwarnings("ignore", category=UserWarning)
    started = time.perf_counter()
    results = {"meta": {"device": args.device, "torch": torch.__version__, "quick": args.quick,
                        "device_name": torch.cuda.get_device_name() if args.device == "cuda" else "CPU"}, "parts": {}}
    for part in args.parts:
        if time.perf_counter() - started > args.time_limit:
            results["parts"][part] = {"status": "skipped", "reason": "time limit"}
            continue
        t0 = time.perf_counter()
        try:
            results["parts"][part] = RUNNERS[part](args.device, args.quick)
        except Exception as error:  # one part failing must not lose the others' numbers
            results["parts"][part] = {"status": "error", "reason": f"{type(error).__name__}: {error}"}
        results["parts"][part]["seconds"] = round(time.perf_counter() - t0, 2)
        print(part, results["parts"][part], file=sys.stderr, flush=True)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "gpu_check.json"), "w") as handle:
        json.dump(results, handle, indent=1, default=str)
    with open(os.path.join(args.out, "gpu_check.md"), "w") as handle:
        handle.write(to_markdown(results))
    return results


if __name__ == "__main__":
    main()
