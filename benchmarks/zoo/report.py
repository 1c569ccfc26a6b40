"""The zoo's markdown: headline, per-scenario tables, every miss and false alarm with a reproduction.

The tables and the lists of misses and alarms are generated; the verdict above them in
``RESULTS.md`` is written by hand and kept when the file is rewritten. A diagnosis is quoted from
its fields (observation, ranked causes), never by cutting its rendered message.
"""

from __future__ import annotations

import argparse
import math
import shlex
import statistics
from pathlib import Path
from typing import Any

from benchmarks.harness import environment, environment_line, markdown_table, write_results as write_file
from benchmarks.zoo.figure import plot
from benchmarks.zoo.runner import LOG_EVERY_N_STEPS
from benchmarks.zoo.scenarios import DEV_SEEDS, RECOVERY_FACTOR, Scenario
from benchmarks.zoo.scoring import ControlSeed, FaultSeed, Scores, score, severe


def _f(x: float | None, fmt: str = ".3f") -> str:
    if x is None:
        return "-"
    return "nan" if not math.isfinite(x) else f"{x:{fmt}}"


def _seed(seed: int) -> str:
    return f"{seed}" if seed in DEV_SEEDS else f"{seed}*"


def _per_seed(values: list[str]) -> str:
    return " / ".join(values)


def _finding(d: dict[str, Any]) -> str:
    """The diagnosis's observation and its ranked causes, from the report's fields."""
    causes = ", ".join(f"{c['cause']} ({c['confidence']:.2f})" for c in d.get("causes") or [])
    observation = (d.get("observation") or "").replace("\n", " ")
    return f"\"{observation}\"" + (f"; likely causes: {causes}" if causes else "")


def _kinds_at(diagnoses: list[tuple[dict[str, Any], int | None]]) -> str:
    """``kind@step`` for each distinct kind (its first occurrence)."""
    seen: dict[str, int] = {}
    for d, _ in diagnoses:
        seen.setdefault(d["kind"], d["step"])
    return ", ".join(f"{k}@{s}" for k, s in seen.items()) or "none"


def _actions(record: dict[str, Any] | None) -> str:
    if record is None:
        return "-"
    counts: dict[str, list[int]] = {}
    for i in record["interventions"]:
        counts.setdefault(i["action"], []).append(i["step"])
    return ", ".join(f"{a} x{len(s)} (from {s[0]})" for a, s in counts.items()) or "none"


def _reproduce(name: str, seed: int) -> str:
    return f"`python -m benchmarks.zoo --only {name} --seeds {seed} --out /tmp/zoo --keep-runs /tmp/zoo/runs`"


def _ratio(found: int, total: int) -> str:
    return f"{found}/{total}" + (f" ({found / total:.0%})" if total else "")


# ------------------------------------------------------------------------------ headline


def _headline(s: Scores) -> tuple[list[str], str]:
    dev = [x for x in s.seeds if x in DEV_SEEDS]
    held = [x for x in s.seeds if x not in DEV_SEEDS]
    rows = [["measure", "all seeds", f"development seed ({', '.join(map(str, dev)) or '-'})",
             f"held-out seeds ({', '.join(map(str, held)) or '-'})", "target", "met"]]
    hits, total = s.recall()
    rows.append(["detection recall: faults with an expected kind at warning+ (observe runs)", _ratio(hits, total),
                 _ratio(*s.recall(False)), _ratio(*s.recall(True)), "every fault", "yes" if hits == total else "no"])
    rhits, rtotal = s.recall(variant="remediate")
    rows.append(["detection recall, remediated runs", _ratio(rhits, rtotal), _ratio(*s.recall(False, "remediate")),
                 _ratio(*s.recall(True, "remediate")), "-", "-"])
    right, named = s.right_causes()
    rows.append(["right top cause: the first warning+ diagnosis names a planted cause first (observe runs of "
                 "faults that plant one)", _ratio(right, named), _ratio(*s.right_causes(False)),
                 _ratio(*s.right_causes(True)), "-", "-"])
    alarms, runs = s.false_alarm_runs()
    rows.append(["healthy-control runs with any warning+ diagnosis (observe)", f"{alarms}/{runs}",
                 f"{s.false_alarm_runs(False)[0]}/{s.false_alarm_runs(False)[1]}",
                 f"{s.false_alarm_runs(True)[0]}/{s.false_alarm_runs(True)[1]}", "0", "yes" if alarms == 0 else "no"])
    prompt = s.prompt_latencies()
    if prompt:
        lat = [f.hit.latency for f in prompt if f.hit]
        noticed = [f.hit.noticed_latency for f in prompt if f.hit and f.hit.noticed_latency is not None]
        acted = [f.action[1] - (f.scenario.onset or 0) for f in prompt if f.action]
        missed = sum(1 for f in prompt if f.hit is None)
        ok = missed == 0 and all(v <= 1 for v in lat)
        names = ", ".join(sorted({f.scenario.name for f in prompt}))
        rows.append([f"NaN/Inf/explosion ({names}): latency, steps from onset to the step diagnosed (max)",
                     f"{max(lat) if lat else '-'}" + (f", {missed} missed" if missed else ""), "", "", "<= 1",
                     "yes" if ok else "no"])
        rows.append(["... steps from onset until the diagnosis was logged (max; windows end every "
                     f"{LOG_EVERY_N_STEPS} steps)", f"{max(noticed) if noticed else '-'}", "", "", "-", "-"])
        rows.append(["... steps from onset until the remediated run acted (max)",
                     f"{max(acted) if acted else '-'}", "", "", "-", "-"])
    good, runs_ = s.recovery()
    sc_good, sc_total = s.recovered_scenarios()
    rows.append([f"recovery: remediated final val loss <= {RECOVERY_FACTOR}x the reference's (remediable faults)",
                 _ratio(good, runs_), _ratio(*_recovery(s, False)), _ratio(*_recovery(s, True)), "most",
                 "yes" if runs_ and good * 2 > runs_ else "no"])
    rows.append(["remediable faults recovered on most seeds", f"{sc_good}/{sc_total}", "", "", "most",
                 "yes" if sc_total and sc_good * 2 > sc_total else "no"])
    line = (f"recall {hits}/{total}, false-alarm runs {alarms}/{runs}, recovered {good}/{runs_} runs "
            f"({sc_good}/{sc_total} remediable faults on most seeds)")
    return [markdown_table(rows)], line


def _recovery(s: Scores, held_out: bool) -> tuple[int, int]:
    rows = [f for f in s.faults if f.recovered is not None and f.held_out == held_out]
    return sum(1 for f in rows if f.recovered), len(rows)


# ------------------------------------------------------------------------------ tables


def _by_scenario(rows: list[Any]) -> dict[str, list[Any]]:
    grouped: dict[str, list[Any]] = {}
    for row in rows:
        grouped.setdefault(row.scenario.name, []).append(row)
    return grouped


def _detection_table(s: Scores) -> str:
    rows = [["fault", "onset", "counts as a hit (warning+)", "detected", "first hit per seed: kind @ step (noticed at)",
             "latency (median)", "other warning+ kinds (observe)"]]
    for name, fs in _by_scenario(s.faults).items():
        sc: Scenario = fs[0].scenario
        firsts = [f"{_seed(f.seed)}: " + (f"{f.hit.kind} @ {f.hit.step} ({f.hit.noticed})" if f.hit else "**miss**")
                  for f in fs]
        lat = [f.hit.latency for f in fs if f.hit]
        others = [f"{_seed(f.seed)}: {_kinds_at(f.others)}" for f in fs]
        rows.append([name, str(sc.onset), ", ".join(sc.expect), f"{sum(f.hit is not None for f in fs)}/{len(fs)}",
                     "; ".join(firsts), _f(statistics.median(lat), "g") if lat else "-", "; ".join(others)])
    return markdown_table(rows)


def _remediation_table(s: Scores) -> str:
    rows = [["fault", "remediated with", "actions (per seed)", "first action after onset",
             "val loss observe", "val loss remediated", "val loss reference", "remediated / reference", "recovered"]]
    for name, fs in _by_scenario(s.faults).items():
        sc = fs[0].scenario
        suite = fs[0].remediate["suite"] if fs[0].remediate else "-"
        ref = f" (`{sc.reference}`)" if sc.reference else ""
        recovered = [f for f in fs if f.recovered is not None]
        if not sc.remediable:
            verdict = "n/a: no remedy in the suite (advice only)"
        elif not recovered:
            verdict = "n/a: no reference"
        else:
            verdict = f"{sum(f.recovered for f in recovered)}/{len(recovered)}"
        rows.append([
            name, f"`{suite}`", _per_seed([f"{_seed(f.seed)}: {_actions(f.remediate)}" for f in fs]),
            _per_seed([f"{f.action[0]} @ {f.action[1]}" if f.action else "none" for f in fs]),
            _per_seed([_f(f.observe["val_loss"]) for f in fs]),
            _per_seed([_f(f.remediate["val_loss"]) if f.remediate else "-" for f in fs]),
            _per_seed([_f(f.reference["val_loss"]) if f.reference else "-" for f in fs]) + ref,
            _per_seed([_f(f.ratio, ".2f") for f in fs]), verdict,
        ])
    return markdown_table(rows)


def _control_table(controls: list[ControlSeed], with_remediate: bool) -> str:
    header = ["run", "what", "warning+ (observe), per seed"]
    if with_remediate:
        header += ["warning+ (remediated)", "remediated: actions", "val loss observe", "val loss remediated"]
    else:
        header += ["val loss"]
    rows = [header]
    for name, cs in _by_scenario(controls).items():
        row = [name, cs[0].scenario.what, _per_seed([f"{_seed(c.seed)}: {_kinds_at(c.alarms)}" for c in cs])]
        if with_remediate:
            row += [_per_seed([f"{_seed(c.seed)}: {_kinds_at(c.remediate_alarms)}" for c in cs]),
                    _per_seed([f"{_seed(c.seed)}: {_actions(c.remediate)}" for c in cs]),
                    _per_seed([_f(c.observe["val_loss"]) for c in cs]),
                    _per_seed([_f(c.remediate["val_loss"]) if c.remediate else "-" for c in cs])]
        else:
            row += [_per_seed([_f(c.observe["val_loss"]) for c in cs])]
        rows.append(row)
    return markdown_table(rows)


def _scenario_table(s: Scores) -> str:
    rows = [["scenario", "role", "what", "how it was chosen, notes"]]
    seen = set()
    for row in [*s.faults, *s.controls, *s.references]:
        if row.scenario.name not in seen:
            seen.add(row.scenario.name)
            rows.append([row.scenario.name, row.scenario.role, row.scenario.what, row.scenario.note or "-"])
    return markdown_table(rows)


def _time_table(records: list[dict[str, Any]]) -> str:
    by: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for r in records:
        by.setdefault(r["scenario"], {}).setdefault(r["variant"], []).append(r)
    rows = [["scenario", "optimizer steps (per seed)", "observe s (mean)", "remediated s (mean)",
             "other cores busy (mean)"]]
    for name, variants in by.items():
        obs, rem = variants.get("observe", []), variants.get("remediate", [])
        loads = [r["other_cores"] for r in obs + rem if r.get("other_cores") is not None]
        rows.append([name, _per_seed([str(r["steps"]) for r in sorted(obs, key=lambda r: r["seed"])]),
                     _f(statistics.mean(r["seconds"] for r in obs), ".1f") if obs else "-",
                     _f(statistics.mean(r["seconds"] for r in rem), ".1f") if rem else "-",
                     _f(statistics.mean(loads), ".2f") if loads else "-"])
    return markdown_table(rows)


# ------------------------------------------------------------------------------ misses


def _misses(s: Scores) -> list[str]:
    out = []
    for f in s.faults:
        if f.hit is not None:
            continue
        seen = "; ".join(f"{d['kind']} ({d['severity']}) @ {d['step']}" for d, _ in severe(f.observe)) or "nothing"
        infos = [d for d in f.observe["diagnoses"] if d["severity"] == "info"]
        info = "; ".join(f"{d['kind']} @ {d['step']}" for d in infos) or "none"
        rem = (f" The remediated run {'reported ' + f.remediate_hit.kind + ' @ ' + str(f.remediate_hit.step)}"
               if f.remediate_hit else " The remediated run missed it too") if f.remediate else ""
        out.append(f"- **{f.scenario.name}, seed {f.seed}{' (held out)' if f.held_out else ''}: missed.** "
                   f"Expected one of {', '.join(f.scenario.expect)} at warning+; the observe run reported {seen} "
                   f"(info: {info}). {_trajectory(f)}{rem}. Reproduce: {_reproduce(f.scenario.name, f.seed)}.")
    return out


def _mean(values: list[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return sum(finite) / len(finite) if finite else math.nan


def _trajectory(f: FaultSeed) -> str:
    """Facts about the observe run, to judge a miss by: how the losses went, against the reference."""
    losses, vals = f.observe["losses"], [(s, v) for s, v in f.observe["val_losses"] if math.isfinite(v)]
    text = (f"Its training loss went from {_f(_mean(losses[:10]))} (first 10 steps) to "
            f"{_f(_mean(losses[-10:]))} (last 10)")
    nonfinite = sum(1 for v in losses if not math.isfinite(v))
    if nonfinite:
        text += f", with {nonfinite} NaN/Inf steps"
    if vals:
        best_step, best = min(vals, key=lambda sv: sv[1])
        text += f"; its val loss was best at {_f(best)} (step {best_step}) and ended at {_f(f.observe['val_loss'])}"
    if f.reference is not None:
        text += f"; the reference ended at {_f(f.reference['val_loss'])}"
    return text + "."


def _alarms(s: Scores, groups: tuple) -> list[str]:
    out = []
    for group, label in groups:
        for c in group:
            for variant, alarms in (("observe", c.alarms), ("remediate", c.remediate_alarms)):
                for d, noticed in alarms:
                    layer = f", layer `{d['layer']}`" if d.get("layer") else ""
                    record = c.observe if variant == "observe" else c.remediate
                    load = record.get("other_cores") if record else None
                    out.append(f"- **{c.scenario.name}** ({label}), seed {c.seed}{' (held out)' if c.held_out else ''}, "
                               f"{variant} run: `{d['kind']}` ({d['severity']}) at step {d['step']} (logged at "
                               f"{noticed}), from {d['source']}{layer}: {_finding(d)}. "
                               f"Other processes kept {_f(load, '.2f')} cores busy during this run. "
                               f"Reproduce: {_reproduce(c.scenario.name, c.seed)}.")
    return out


# ------------------------------------------------------------------------------ the file


def write_results(records: list[dict[str, Any]], scenarios: list[Scenario], args: argparse.Namespace, wall: float,
                  md: Path, png: Path) -> str:
    s = score(records)
    env = environment()
    command = "python -m benchmarks.zoo" + "".join(f" {shlex.quote(a)}" for a in args.argv)
    loads = [r["other_cores"] for r in records if r.get("other_cores") is not None]
    errors = [r for r in records if r["error"]]
    headline, line = _headline(s)
    held = [x for x in s.seeds if x not in DEV_SEEDS]
    lines = [
        f"Produced by `{command}` in {wall:.0f} s ({len(records)} runs, {args.jobs} at a time, one torch thread "
        f"each); {environment_line(env)}. Other processes kept {_f(statistics.mean(loads) if loads else None, '.2f')} "
        f"cores busy on average during a run (the zoo's other worker included; max "
        f"{_f(max(loads) if loads else None, '.2f')}): timing-based rules (slow data loading) see that load.",
        "",
        f"Seeds {', '.join(_seed(x) for x in s.seeds)}; seed {', '.join(map(str, DEV_SEEDS))} is the development seed "
        "(the scenarios were designed on it), seeds marked * are held out"
        + (f" ({', '.join(map(str, held))})." if held else "."),
        "",
        "## Headline",
        "",
        *headline,
        "",
        "How it is scored: every fault runs twice, observed (`default_callbacks(auto_remediate=False, "
        "num_classes=...)`, which changes nothing in training: the observe run is also the unremediated "
        "baseline) and remediated (`default_callbacks(auto_remediate=True, ...)` with the opt-ins the "
        "fault declares). A **hit** is a diagnosis of one of the fault's declared kinds at severity warning or "
        "critical, read from the run's `convergence_report.json`; detection is judged on the observe run. "
        "**Latency** is the diagnosis's `step` (the step the suite attributes the problem to) minus the "
        "fault's onset; *noticed at* is the step at which the suite announced the diagnosis (rules "
        f"that judge a window decide at its end: every {LOG_EVERY_N_STEPS} steps here, the Trainer's "
        "`log_every_n_steps`). A **false alarm** is any warning or critical diagnosis on a healthy control. "
        f"**Recovered**: the remediated run's final validation loss is at most {RECOVERY_FACTOR}x that of the "
        "fault-free reference (same model and data without the fault, or the healthy control named), for "
        "faults the suite has a remedy for.",
        "",
    ]
    if errors:
        lines += ["**Runs that raised:** " + "; ".join(f"{r['scenario']} {r['variant']} seed {r['seed']}: {r['error']}"
                                                        for r in errors), ""]
    lines += ["## Faults: detection (observe runs)", "", _detection_table(s), "",
              "Seeds marked * are held out. *noticed at*: the step the diagnosis was announced. "
              "*Other warning+ kinds*: true or not, they are not counted as hits.", "",
              "## Faults: remediation", "", _remediation_table(s), "",
              "## Healthy controls", "", _control_table(s.controls, True), "",
              "## Fault-free references (observe runs)", "",
              "Their warnings are not in the headline (they are not declared controls); each is listed below.", "",
              _control_table(s.references, False) if s.references else "none", "",
              "## Every miss", ""]
    lines += _misses(s) or ["None: every fault was detected on every seed."]
    lines += ["", "## Every false alarm: warnings on the healthy controls (observe and remediated runs)", ""]
    lines += _alarms(s, ((s.controls, "healthy control"),)) or ["None."]
    lines += ["", "## Warnings on the fault-free references", "",
              "These runs have no injected fault but are not declared healthy: some warnings may be true (a "
              "validation loss that rises while the training loss falls is overfitting, whatever its cause). They "
              "are listed for a reader to judge.", ""]
    lines += _alarms(s, ((s.references, "fault-free reference"),)) or ["None."]
    lines += ["", "## The scenarios", "", _scenario_table(s), "",
              "## Time per scenario", "", _time_table(records), "",
              f"{len(records)} runs took {sum(r['seconds'] for r in records):.0f} s of fit time in all "
              f"(mean {statistics.mean(r['seconds'] for r in records):.1f} s per run, Trainer set-up included), "
              f"{wall:.0f} s of wall time with {args.jobs} in parallel.", "",
              f"![the zoo, seed {s.seeds[0]}](results/{png.name})" if md.parent.name == "benchmarks" else
              f"Figure: {png}", ""]
    plot(s, png)
    write_file(md, "Convergence zoo: what the suite diagnoses and fixes, fault by fault", lines)
    return line
