"""The sweep's tables: the headline per half, every setup's grid, the injected errors, and what
went wrong (false alarms by kind, wrong causes by pair, misses by cause)."""

from __future__ import annotations

from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from benchmarks.harness import environment, environment_line, markdown_table, write_results
from benchmarks.sweep.labels import (CONVERGED_FACTOR, HARMED, HELPED, HalfScore, alarms, best_lrs, label, named,
                                     remedy_scores, score)
from benchmarks.sweep.setups import ERRORS, HELD_OUT, TUNING

TARGETS = {"false_alarm": 0.02, "recall": 0.95, "top_cause": 0.80}  # on the held-out half
SHORT = {"converged": "C", "learning_rate_too_high": "H", "learning_rate_too_low": "L", "unlucky": "U"}


def _share(n: int, d: int) -> str:
    return f"{n}/{d} ({n / d:.0%})" if d else "0/0"


def headline_rows(halves: dict[str, HalfScore]) -> list[list[str]]:
    rows = [["", f"tuning ({', '.join(TUNING)})", f"held out ({', '.join(HELD_OUT)})",
             "target (held out)"]]

    def row(name: str, get, target: str) -> None:
        rows.append([name, *(get(halves[h]) for h in ("tuning", "held_out")), target])

    row("false alarms: converged runs with a warning+", lambda s: _share(s.false_alarms, s.converged),
        f"at most {TARGETS['false_alarm']:.0%}")
    row("... leaving out the wall-clock kinds", lambda s: _share(s.false_alarms_no_timing, s.converged), "")
    row("recall: failed runs with a warning+", lambda s: _share(s.recalled, s.failed),
        f"at least {TARGETS['recall']:.0%}")
    row("right top cause (failed runs)", lambda s: _share(s.top_cause, s.failed), f"at least {TARGETS['top_cause']:.0%}")
    row("right cause in the top two", lambda s: _share(s.top_two, s.failed), "")
    row("failed at the best LR (unlucky seed, not scored)", lambda s: str(s.unlucky), "")
    return rows


def _cell(runs: list[dict[str, Any]], best) -> str:
    labels = [label(r, best) for r in runs]
    statuses = Counter(SHORT.get(lab.cause or lab.status, "?") for lab in labels)
    kind = "".join(sorted(statuses))
    warned = sum(bool(alarms(r)) for r in runs)
    text = f"{kind} {warned}/{len(runs)}"
    failed = [(r, lab) for r, lab in zip(runs, labels) if lab.status == "failed"]
    if failed:
        right = sum(bool(named(r)) and named(r)[0] == lab.cause for r, lab in failed)
        text += f" ✓{right}"
    return text


def grid_rows(records: list[dict[str, Any]]) -> list[list[str]]:
    best = best_lrs(records)
    clean = [r for r in records if r["error"] is None]
    lrs = sorted({r["lr"] for r in clean})
    by_cell: dict[tuple, list] = defaultdict(list)
    for r in clean:
        by_cell[(r["arch"], r["optimizer"], r["lr"])].append(r)
    rows = [["setup", "best LR", "its outcome", *(f"{lr:g}" for lr in lrs)]]
    for arch, optimizer in sorted(best, key=lambda s: ((TUNING + HELD_OUT).index(s[0]), s[1])):
        best_lr, reference = best[(arch, optimizer)]
        cells = [_cell(by_cell[(arch, optimizer, lr)], best) if by_cell[(arch, optimizer, lr)] else ""
                 for lr in lrs]
        rows.append([f"{arch} / {optimizer}", f"{best_lr:g}", f"{reference:.3g}", *cells])
    return rows


def error_rows(records: list[dict[str, Any]]) -> list[list[str]]:
    best = best_lrs(records)
    rows = [["error", "its cause", "setup", "labels", "warned", "top cause named (per seed)"]]
    groups: dict[tuple, list] = defaultdict(list)
    for r in records:
        if r["error"] is not None and (r["arch"], r["optimizer"]) in best:
            groups[(r["error"], r["arch"], r["optimizer"])].append(r)
    for (error, arch, optimizer), runs in groups.items():
        labels = [label(r, best).status for r in runs]
        rows.append([error, ERRORS[error][0], f"{arch} / {optimizer}", ", ".join(labels),
                     f"{sum(bool(alarms(r)) for r in runs)}/{len(runs)}",
                     ", ".join(named(r)[0] if named(r) else "-" for r in runs)])
    return rows


def remedy_rows(records: list[dict[str, Any]]) -> list[list[str]]:
    rows = [["observed run", "runs", "the suite acted", f"helped (<= {HELPED}x)", f"harmed (> {HARMED}x)",
             "what acted (runs)"]]
    for name, s in sorted(remedy_scores(records).items(), key=lambda kv: -kv[1].runs):
        acted = ", ".join(f"{a}{f' ({r})' if r else ''}: {n}" for (a, r), n in s.actions.most_common(4)) or "-"
        rows.append([name, str(s.runs), str(s.acted), str(s.helped), str(s.harmed), acted])
    return rows


def _counts(counter: Counter, fmt) -> str:
    return "; ".join(f"{fmt(k)}: {v}" for k, v in counter.most_common()) or "none"


def write(records: list[dict[str, Any]], md: Path, command: str, wall: float,
          env: dict[str, Any] | None = None) -> str:
    """Write ``md`` and the records beside it (``.json``); return the headline table. ``env``:
    the environment the runs were made in (from a records file being rescored), else this one."""
    rescored = env is None and "--rescore" in command
    env = env or environment()
    halves = score(records)
    headline = markdown_table(headline_rows(halves))
    crashed = [r for r in records if r.get("crash")]
    lines = [
        f"Command: `{command}` ({len(records)} runs, {wall:.0f} s wall).", "",
        environment_line(env) + (" (the time of scoring: the runs come from a records file)" if rescored else ""),
        "",
        f"A run **converged** when its final validation loss is at most {CONVERGED_FACTOR}x the median of its "
        f"setup's best learning rate; otherwise it **failed**, by the side of the best LR it lies on (H: too "
        f"high, L: too low) or from its injected error. Labels come from outcomes only.", "",
        "## Headline", "", headline, "",
        "## Every setup", "",
        "Cell: the labels of its seeds (C converged, H/L failed with the LR too high/low, U failed at the best "
        "LR), how many of the seeds got a warning+, and ✓ how many failed ones had the right top cause.", "",
        markdown_table(grid_rows(records)), "",
        "## Injected implementation errors", "", markdown_table(error_rows(records)), "",
        "## What went wrong", "",
    ]
    for half, s in halves.items():
        lines += [f"- **{half}**: warnings on converged runs, by kind: {_counts(s.alarm_kinds, str)}.",
                  f"  Wrong top cause (label -> named): {_counts(s.confusions, lambda k: f'{k[0]} -> {k[1]}')}.",
                  f"  Failed runs without a warning, by cause: {_counts(s.missed, str)}."]
    if any(r.get("remediate") for r in records):
        harmed = [run for s in remedy_scores(records).values() for run in s.harmed_runs]
        lines += ["", "## Remedies: the same runs with `auto_remediate=True`", "",
                  "Each run again with the suite acting, against its observed twin (same setup, seed and data "
                  "order): final validation loss remediated over observed.", "",
                  markdown_table(remedy_rows(records)), "",
                  f"Harmed runs ({len(harmed)}): " + ("; ".join(
                      f"{a}/{o}/lr{lr:g}/{e}/seed{sd}: {b:.3g} -> {af:.3g} ({', '.join(x for x, _ in acts) or 'nothing'})"
                      for a, o, lr, e, sd, b, af, acts in harmed) or "none") + "."]
    if crashed:
        lines += ["", f"Runs that crashed ({len(crashed)}): " + "; ".join(
            f"{r['arch']}/{r['optimizer']}/lr{r['lr']:g}/{r['error']}/seed{r['seed']}: {r['crash']}" for r in crashed)]
    # Every run's loss curve stays out of the results file (2.8 MB with them); its update ratios,
    # labels and diagnoses are kept: what the calibration of the rules read.
    kept = [{**{k: v for k, v in r.items() if k not in ("losses", "val_losses")},
             "update_ratios": [(step, float(f"{ratio:.3g}")) for step, ratio in r.get("update_ratios", [])],
             "summary_causes": (r.get("summary_causes") or [])[:3],
             "diagnoses": [{**d, "causes": [{"cause": c["cause"], "confidence": c["confidence"]}
                                            for c in (d.get("causes") or [])[:3]]} for d in r["diagnoses"]]}
            for r in records]
    payload = {"command": command, "wall_s": wall, "environment": env, "records": kept,
               "scores": {h: {k: v for k, v in vars(s).items() if not isinstance(v, Counter)}
                          for h, s in halves.items()}}
    write_results(md, "Calibration sweep: outcome-labelled runs, both halves", lines, payload)
    return headline
