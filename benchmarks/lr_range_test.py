"""The in-run learning-rate range test's picks under each rule, read back from kept runs.

Every ``convergence_report.json`` under ``--runs`` (the ``--keep-runs`` folder of the zoo or the
sweep) whose PlateauAdvisor ran a range test gives one curve: the multipliers of the learning
rate tried and the raw loss of each probe step. Each rule of
:func:`lightning_convergence.remedies.lr_range_test.suggest` is applied to the same curve, so
the rules are compared on identical data; the learning rate before the probe and the scenario's
tuned rate (when given) turn the picks into learning rates.

    python -m benchmarks.zoo --only lr_low --keep-runs /tmp/zoo_runs --out /tmp/zoo
    python -m benchmarks.lr_range_test --runs /tmp/zoo_runs --tuned lr_low=0.05
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from lightning_convergence.remedies.lr_range_test import RangeCurve, RangeTestPlan, suggest

RULES = ("minimum", "steepest", "lightning")


def curves(runs: Path) -> list[dict]:
    """One entry per range test found: where, the LR before it, and its curve."""
    found = []
    for report in sorted(runs.rglob("convergence_report.json")):
        for item in json.loads(report.read_text()).get("interventions", []):
            detail = item.get("detail", {})
            if detail.get("reason") != "lr_range_test" or "range_lrs" not in detail:
                continue
            lrs, losses = detail["range_lrs"], [math.nan if v is None else v for v in detail["range_losses"]]
            if len(lrs) < 2:
                continue
            plan = RangeTestPlan(lrs[0], lrs[0] * (lrs[1] / lrs[0]) ** 39, num_steps=40)
            curve = RangeCurve(plan)
            for loss in losses:
                curve.add(loss)
            found.append({"run": str(report.parent.relative_to(runs)), "step": item["step"],
                          "lr_before": detail.get("lr_before", [None])[0], "curve": curve})
    return found


def table(found: list[dict], tuned: dict[str, float]) -> str:
    lines = ["| run | step | LR before | " + " | ".join(f"{r} pick (x)" for r in RULES) + " | tuned LR (x) |",
             "|---|---|---|" + "---|" * (len(RULES) + 1)]
    for entry in found:
        before = entry["lr_before"]
        if before is None:
            continue
        picks = [suggest(entry["curve"], rule).pick for rule in RULES]
        scenario = entry["run"].split("/")[0]
        target = tuned.get(scenario)
        cells = [("-" if p is None else f"{p * before:.3g} ({p:.3g})") for p in picks]
        tuned_cell = "-" if target is None else f"{target:.3g} ({target / before:.3g})"
        lines.append(f"| {entry['run']} | {entry['step']} | {before:.3g} | " + " | ".join(cells) + f" | {tuned_cell} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=Path, required=True, help="a --keep-runs folder of the zoo or the sweep")
    parser.add_argument("--tuned", nargs="*", default=[], metavar="SCENARIO=LR",
                        help="the tuned learning rate of a scenario, to compare the picks with")
    args = parser.parse_args(argv)
    tuned = {k: float(v) for k, v in (item.split("=", 1) for item in args.tuned)}
    print(table(curves(args.runs), tuned))


if __name__ == "__main__":
    main()
