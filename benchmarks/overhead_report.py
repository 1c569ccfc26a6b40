"""The tables of ``overhead.py``'s report: each variant against bare, the targets against the
floor, where the suite's hook time goes, the statistics pass alone, and memory."""

from __future__ import annotations

from typing import Any

from benchmarks.harness import markdown_table, pct
from benchmarks.overhead_models import make_task

TARGETS = {"suite": 1.03, **{m: 1.02 for m in ("monitor", "tracker", "advisor", "inputs", "init_audit", "speed",
                                                 "autoclip")}}


def verdict(row: dict[str, Any], target: float) -> str:
    hook = 1.0 + row.get("hook_fraction", 0.0)
    if hook > target:
        return "not met"
    if row["ratio"] <= target:
        return "met"
    return "met on hook time; step ratio above" + (", within its noise" if min(row["ratio_per_repeat"]) <= target else "")


def model_table(variants: dict[str, Any]) -> str:
    rows = [["variant", "step ms", "vs bare (per repeat)", "hook ms/step", "hook % of bare", "other cores (max)",
             "target"]]
    for v, row in variants.items():
        target = f"<= {TARGETS[v]:.2f}x: {verdict(row, TARGETS[v])}" if v in TARGETS else "-"
        rows.append([f"`{v}`", f"{row['step_ms']:.1f}", f"{pct(row['ratio'])} ({' '.join(pct(r) for r in row['ratio_per_repeat'])})",
                     f"{row['hook_ms']:.2f}" if "hook_ms" in row else "-",
                     f"{row['hook_fraction'] * 100:.2f}%" if "hook_ms" in row else "-",
                     f"{row['foreign_cores_max']:.2f}", target])
    return markdown_table(rows)


FLOOR_TARGETS = {"every_step": 1.2, "logging": 0.003, "suite": 1.5}


def floor_table(models: dict[str, Any]) -> str:
    """The targets against the floor (one read of every gradient per step), hook time per model."""
    rows = [["model", "floor ms (every step)", "`monitor+autoclip` every step (<= 1.2x floor)",
             "its logging steps, spread (< 0.3% of the step)", "`suite` steady (<= 1.5x floor)",
             "`suite_acting` steady"]]
    for model, result in models.items():
        v = result["variants"]
        if "floor" not in v:
            continue
        floor = v["floor"]["every_step_ms"]
        floor_per_repeat = v["floor"].get("every_step_ms_per_repeat")

        def versus(variant: str, key: str, target: float | None = None) -> str:
            if variant not in v:
                return "not run"
            ratio = v[variant][key] / floor
            verdict = "" if target is None else (": met" if ratio <= target else ": not met")
            spread = ""
            per_repeat = v[variant].get(f"{key}_per_repeat")
            if per_repeat and floor_per_repeat and len(per_repeat) == len(floor_per_repeat) > 1:
                # Within each repeat, against that repeat's floor: the run's own noise.
                ratios = [x / f for x, f in zip(per_repeat, floor_per_repeat)]
                spread = f" (per repeat {min(ratios):.2f}x-{max(ratios):.2f}x)"
            return f"{v[variant][key]:.2f} ms = {ratio:.2f}x{verdict}{spread}"

        pair = v.get("monitor+autoclip")
        logging = "not run" if pair is None else (
            f"{pair['logging_extra_ms']:.3f} ms = {pair['logging_extra_fraction'] * 100:.2f}%"
            f"{': met' if pair['logging_extra_fraction'] < FLOOR_TARGETS['logging'] else ': not met'}")
        rows.append([model, f"{floor:.2f}", versus("monitor+autoclip", "every_step_ms", FLOOR_TARGETS["every_step"]),
                     logging, versus("suite", "steady_hook_ms", FLOOR_TARGETS["suite"]),
                     versus("suite_acting", "steady_hook_ms")])
    return markdown_table(rows)


def breakdown_table(models: dict[str, Any]) -> str:
    """Each callback's hook ms per step in the suites, split into its every-step cost and what its
    sampled and logging steps add, spread over the window (medians over repeats), and as a share
    of the model's floor (when the floor ran)."""
    rows = [["model", "variant", "callback", "every step", "sampled steps", "logging steps", "total ms/step",
             "of the floor"]]
    for model, result in models.items():
        floor = result["variants"].get("floor", {}).get("every_step_ms")
        for v in ("suite", "suite_acting", "suite_log1"):
            splits = result["variants"].get(v, {}).get("per_callback_split_ms", {})
            for callback, parts in sorted(splits.items(), key=lambda item: -sum(item[1].values())):
                total = sum(parts.values())
                rows.append([model, f"`{v}`", callback, f"{parts['every_step']:.3f}", f"{parts['sampled']:.3f}",
                             f"{parts['logging']:.3f}", f"{total:.3f}",
                             f"{total / floor:.0%}" if floor else "-"])
    return markdown_table(rows)


def stats_table(models: dict[str, Any]) -> str:
    rows = [["model", "pass", "hot ms (x floor)", "cold ms (x floor)"]]
    for model, result in models.items():
        s = result["stats_pass"]
        for name, t in s.items():
            rows.append([model, name, f"{t['hot']:.2f} ({t['hot'] / s['floor']['hot']:.2f}x)",
                         f"{t['cold']:.2f} ({t['cold'] / s['floor']['cold']:.2f}x)"])
    return markdown_table(rows)


def memory_table(memory: dict[str, dict[str, float]]) -> str:
    if not memory:
        return "(not measured)"
    rows = [["model", "parameters (MiB)", *(f"`{v}` peak RSS MiB (vs bare)" for v in next(iter(memory.values())))]]
    for model, peaks in memory.items():
        params = sum(p.numel() * 4 for p in make_task(model).parameters()) / 2**20
        bare = peaks.get("bare", float("nan"))
        rows.append([model, f"{params:.1f}", *(f"{mb:.0f} ({mb - bare:+.0f})" for mb in peaks.values())])
    return markdown_table(rows)
