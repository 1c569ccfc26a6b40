"""PreflightCheck on the convergence zoo, which it was not designed on: what it says at step 0.

For every scenario of the zoo (faults, healthy controls, fault-free references) and every seed,
one fit with ``PreflightCheck(enabled=True)`` alone and ``max_steps=1`` (the checks run before the
first step). A run's label is the zoo's, fixed with its scenario before any preflight ran:
healthy controls and references should get no warning (a warning there is a false alarm); a fault
is *named* when the top cause of one of the warnings is one of the causes the scenario plants
(``Scenario.causes``), *mis-named* when it warns with other causes only, and *silent* otherwise. Many
of the zoo's faults begin mid-run (a NaN batch at step 30, an LR schedule) or show only after
many epochs (overfitting on noisy labels): the preflight cannot see those, and is not expected to.

    python -m benchmarks.preflight_zoo --seeds 0,1,2 --out benchmarks/results
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
import warnings

import lightning as L

from benchmarks.zoo.scenarios import SCENARIO_LIST
from lightning_convergence import PreflightCheck


def one(scenario, seed: int) -> dict:
    L.seed_everything(seed, verbose=False)
    check = PreflightCheck(enabled=True)
    trainer = L.Trainer(max_steps=1, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                        limit_val_batches=0, callbacks=[check], default_root_dir=tempfile.mkdtemp())
    started = time.perf_counter()
    trainer.fit(scenario.model(), datamodule=scenario.data(seed))
    warned = [d for d in check.records()["diagnoses"] if d["severity"] != "info"]
    causes = sorted({d["causes"][0]["cause"] for d in warned})
    if scenario.role in ("healthy", "reference"):
        verdict = "false alarm" if warned else "silent"
    elif set(causes) & set(scenario.causes):
        verdict = "named"
    else:
        verdict = "mis-named" if warned else "silent"
    checks = {c["check"]: c for c in check.section.get("checks", [])}
    overfit = checks.get("overfit_one_batch", {}).get("numbers", {})
    return {"scenario": scenario.name, "role": scenario.role, "seed": seed, "verdict": verdict, "causes": causes,
            "planted": list(scenario.causes), "failed_checks": [n for n, c in checks.items() if c["passed"] is False],
            "memorised_at": overfit.get("memorised_at_multiplier"), "heldout_fall": (overfit.get("heldout") or {}).get("fall"),
            "seconds": round(time.perf_counter() - started, 2)}


def summary(rows: list[dict]) -> str:
    lines = ["# PreflightCheck on the zoo (`python -m benchmarks.preflight_zoo`)", "",
             "Seed 0 is the zoo's design seed; the others are held out. The preflight was designed on its own "
             "test modules, not on the zoo.", "",
             "| scenario | role | planted causes | " + " | ".join(f"seed {s}" for s in sorted({r['seed'] for r in rows}))
             + " |", "|---|---|---|" + "---|" * len({r["seed"] for r in rows})]
    for name in dict.fromkeys(r["scenario"] for r in rows):
        runs = sorted((r for r in rows if r["scenario"] == name), key=lambda r: r["seed"])
        cells = [f"{r['verdict']}" + (f" ({', '.join(r['causes'])})" if r["causes"] else "") for r in runs]
        lines.append(f"| {name} | {runs[0]['role']} | {', '.join(runs[0]['planted']) or '-'} | " + " | ".join(cells) + " |")
    clean = [r for r in rows if r["role"] in ("healthy", "reference")]
    faults = [r for r in rows if r["role"] == "fault"]
    lines += ["", f"False alarms: {sum(r['verdict'] == 'false alarm' for r in clean)}/{len(clean)} healthy or reference "
              f"runs. Faults named: {sum(r['verdict'] == 'named' for r in faults)}/{len(faults)}, mis-named "
              f"{sum(r['verdict'] == 'mis-named' for r in faults)}, silent {sum(r['verdict'] == 'silent' for r in faults)}."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1,2", help="comma list of seeds")
    parser.add_argument("--out", default=None, help="folder for preflight_zoo.json and .md (none: print only)")
    args = parser.parse_args(argv)
    try:
        seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    except ValueError:
        parser.error(f"--seeds must be a comma list of ints, got {args.seeds!r}")
    warnings.filterwarnings("ignore")
    scenarios = [s for s in SCENARIO_LIST if s.role in ("fault", "healthy", "reference")]
    rows = [one(scenario, seed) for seed in seeds for scenario in scenarios]
    text = summary(rows)
    print(text)
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        with open(os.path.join(args.out, "preflight_zoo.json"), "w") as handle:
            json.dump(rows, handle, indent=1)
        with open(os.path.join(args.out, "preflight_zoo.md"), "w") as handle:
            handle.write(text)
    return rows


if __name__ == "__main__":
    main()
