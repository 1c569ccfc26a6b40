"""The benchmarks still run against the current package, at tiny settings, writing to a temporary folder.

Every check compares the results files with numbers computed in the same run (no expected number is
written here): the numbers themselves are measured by running the benchmarks at their defaults (see
benchmarks/README.md).
"""

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # benchmarks/ is importable from the repository root
    sys.path.insert(0, str(ROOT))

from benchmarks.harness import GENERATED  # noqa: E402
from benchmarks.zoo.studies import STUDIES, VARIANTS  # noqa: E402


def _run(args, timeout=600):
    result = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    return result.stdout


def _table(md: str, first_cell: str) -> list[list[str]]:
    """The rows of the markdown table whose header starts with ``first_cell``."""
    lines = md.split("\n")
    start = next(i for i, line in enumerate(lines) if line.startswith(f"| {first_cell} |"))
    rows = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip("|").split(" | ")])
    return rows


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(STUDIES))
def test_study_runs_and_its_tables_show_its_records(tmp_path, name):
    study = STUDIES[name]
    _run(["-m", "benchmarks.zoo", "--study", name, "--seeds", "0", "--max-steps", "70", "--out", str(tmp_path)])
    md = (tmp_path / f"{name}.md").read_text()
    payload = json.loads((tmp_path / f"{name}.json").read_text())
    records = {(r["scenario"], r["variant"]): r for r in payload["records"]}
    expected = [(s.name, v) for s in study.scenarios for v in s.variant_names]
    assert sorted(records) == sorted(expected)
    assert md.startswith(f"# {study.title}") and GENERATED in md
    rows = _table(md, "scenario")
    assert [row[0] for row in rows] == [s for s, _ in expected]
    for (scenario, variant), row in zip(expected, rows):
        r = records[(scenario, variant)]
        assert r["error"] is None and r["steps"] == 70 and r["seed"] == 0
        assert row[1] == VARIANTS[variant].describe(next(s for s in study.scenarios if s.name == scenario))
        assert row[4] == f"{r['val_acc']:.3f}"  # val acc per seed
        lost = not math.isfinite(r["val_acc"]) or r["val_acc"] < 0.5
        assert row[5] in ({"1/1"} if lost else {"0/1", "1/1"})  # a NaN/Inf training loss also loses a seed
        has_suite = bool(VARIANTS[variant].callbacks(next(s for s in study.scenarios if s.name == scenario)))
        assert bool(r["diagnoses"] or r["interventions"]) <= has_suite  # no report without callbacks
        kinds = {d["kind"] for d in r["diagnoses"] if d["severity"] != "info"}
        assert row[6] == (", ".join(f"{k} (1/1)" for k in sorted(kinds)) or "none")
    if name == "redo":
        for r in payload["records"]:
            assert set(r["extras"]["dead_fraction"]) == {"net.1", "net.3"}
            assert all(0.0 <= f <= 1.0 for f in r["extras"]["dead_fraction"].values())
    if name == "warmup":  # the effective LR column: the warmed-up run starts below its peak, the plain one at it
        lr = {variant: row[-1] for (_, variant), row in zip(expected, rows) if variant in ("none", "untuned")}
        start, peak = (float(x.split()[0]) for x in lr["untuned"].split(" / ")[:2])
        assert start < peak
        start, peak = (float(x.split()[0]) for x in lr["none"].split(" / ")[:2])
        assert start == peak


@pytest.mark.slow
def test_study_keeps_the_verdict_written_by_hand(tmp_path):
    md = tmp_path / "plateau.md"
    md.write_text(f"# PlateauAdvisor\n\nA verdict written by hand.\n\n{GENERATED}\n\nold tables\n")
    _run(["-m", "benchmarks.zoo", "--study", "plateau", "--seeds", "0", "--max-steps", "5", "--out", str(tmp_path)])
    text = md.read_text()
    assert text.startswith("# PlateauAdvisor\n\nA verdict written by hand.\n") and "old tables" not in text
    assert text.count(GENERATED) == 1


@pytest.mark.slow
def test_overhead_runs_and_reports_what_it_timed(tmp_path):
    out = _run(["benchmarks/overhead.py", "--quick", "--models", "cnn", "--variants",
                "floor,tracker,monitor+autoclip,suite,recipe", "--max-wait", "0", "--out", str(tmp_path)])
    assert "wrote" in out
    payload = json.loads((tmp_path / "overhead.json").read_text())
    variants = payload["models"]["cnn"]["variants"]
    assert list(variants) == ["bare", "floor", "tracker", "monitor+autoclip", "suite", "recipe"]
    pair = variants["monitor+autoclip"]
    assert set(pair["per_callback_ms"]) == {"GradientNormMonitor", "AutoClip"}
    assert 0 < pair["every_step_ms"] and pair["steady_hook_ms"] > 0 and pair["logging_extra_fraction"] is not None
    assert "hook_ms" not in variants["bare"]
    for name in ("floor", "tracker", "suite", "recipe"):
        row = variants[name]
        assert row["hook_ms"] > 0 and row["step_ms"] > 0
        assert row["hook_fraction"] == pytest.approx(row["hook_ms"] / variants["bare"]["step_ms"])
        assert sum(row["per_callback_ms"].values()) == pytest.approx(row["hook_ms"], rel=1e-6)
    assert "forward hooks" in variants["tracker"]["per_callback_ms"]  # the tracker's hooks on the activations
    split = variants["suite"]["per_callback_split_ms"]  # every step, sampled and logging steps, per callback
    assert set(split) == set(variants["suite"]["per_callback_ms"])
    assert all(set(parts) == {"every_step", "sampled", "logging"} and parts["every_step"] >= 0
               for parts in split.values())
    assert "FloorPass" in variants["floor"]["per_callback_ms"]
    stats = payload["models"]["cnn"]["stats_pass"]
    assert set(stats) == {"floor", "sum_of_squares", "_foreach_norm"}
    assert all(t["hot"] > 0 and t["cold"] > 0 for t in stats.values())
    md = (tmp_path / "overhead.md").read_text()
    rows = _table(md, "variant")
    assert [row[0] for row in rows] == [f"`{v}`" for v in variants]
    assert rows[1][3] == f"{variants['floor']['hook_ms']:.2f}"
    floor_row = _table(md, "model")[0]  # the targets against the floor
    assert floor_row[0] == "cnn" and floor_row[1] == f"{variants['floor']['every_step_ms']:.2f}"
    assert floor_row[2].startswith(f"{pair['every_step_ms']:.2f} ms = ")
    monitor = split["GradientNormMonitor"]
    assert (f"| cnn | `suite` | GradientNormMonitor | {monitor['every_step']:.3f} | {monitor['sampled']:.3f} | "
            f"{monitor['logging']:.3f} | {sum(monitor.values()):.3f} | ") in md


def test_step_ops_counts_one_sum_per_gradient_for_the_floor():
    """The op counter in-process on the overhead MLP: the floor variant dispatches exactly one
    ``sum`` per gradient tensor on every counted step, and the monitor more than that."""
    from benchmarks.overhead_models import make_task
    from benchmarks.step_ops import count

    tensors = sum(1 for _ in make_task("mlp").parameters())
    floor, monitor = count("mlp", "floor", first=2, last=5), count("mlp", "monitor", first=2, last=5)
    assert floor.steps == monitor.steps == 3
    assert floor.counts == {"aten::sum": tensors * floor.steps}
    assert monitor.per_step() > floor.per_step()


def test_step_calls_counts_the_suites_calls_over_bare(tmp_path):
    """The call counter in-process on the overhead CNN (3 steps a fit): the suite's calls exceed
    bare's, its own functions are among them, and the table shows what the JSON holds."""
    from benchmarks.step_calls import calls_per_function, main

    calls_per_function("cnn", "suite", steps=2)  # the process's one-off imports, uncounted
    bare, suite = calls_per_function("cnn", "bare", steps=3), calls_per_function("cnn", "suite", steps=3)
    assert sum(suite.values()) > sum(bare.values()) > 0
    assert any(name.startswith("lightning_convergence/callbacks/base.py") for name in suite)
    assert not any(name.startswith("lightning_convergence/") for name in bare)
    assert main(["--models", "cnn", "--steps", "2", "--out", str(tmp_path)]) == 0
    payload = json.loads((tmp_path / "step_calls.json").read_text())
    rows = _table((tmp_path / "step_calls.md").read_text(), "model")
    assert [row[1] for row in rows] == ["`bare`", "`suite`", "`suite_acting`"]
    for row in rows:
        entry = payload["variants"][f"cnn/{row[1].strip('`')}"]
        assert row[2] == f"{entry['per_step']:.0f}" and row[3] == f"{entry['over_bare']:+.0f}"


@pytest.mark.slow
def test_overhead_ab_runs_one_pair_from_each_checkout():
    # The same checkout on both sides: the script's plumbing (one fit per side in its own process,
    # the line it prints), not a comparison.
    out = _run(["benchmarks/overhead_ab.py", ".", ".", "--models", "cnn", "--pairs", "1"])
    line = next(line for line in out.splitlines() if line.startswith("cnn suite:"))
    before, after = (float(x) for x in line.split("steady hook ms ")[1].split(",")[0].split(" -> "))
    assert before > 0 and after > 0
    assert f"(median {after / before:.2f})" in line


@pytest.mark.parametrize("argv, message", [
    (["/nonexistent", str(ROOT)], "`before` must be a checkout of this repository"),
    ([str(ROOT), str(ROOT), "--pairs", "0"], "`--pairs` must be at least 1"),
    ([str(ROOT), str(ROOT), "--models", "cnn,foo"], "`--models` must be a comma-separated subset of"),
    ([str(ROOT), str(ROOT), "--variant", "foo"], "`--variant` must be one of"),
    ([str(ROOT), str(ROOT), "--variant", "bare"], "`--variant` must be one of"),
])
def test_overhead_ab_names_a_bad_argument(argv, message, capsys):
    from benchmarks import overhead_ab

    with pytest.raises(SystemExit):
        overhead_ab.main(argv)
    assert message in capsys.readouterr().err


def test_floor_table_shows_each_repeats_ratio_against_its_own_floor():
    from benchmarks.overhead_report import floor_table

    variants = {"floor": {"every_step_ms": 0.5, "every_step_ms_per_repeat": [0.5, 0.4, 0.5]},
                "monitor+autoclip": {"every_step_ms": 0.52, "every_step_ms_per_repeat": [0.55, 0.52, 0.5],
                                     "logging_extra_ms": 0.1, "logging_extra_fraction": 0.001},
                "suite": {"steady_hook_ms": 0.9, "steady_hook_ms_per_repeat": [0.9, 0.8, 1.0]}}
    table = floor_table({"cnn": {"variants": variants}})
    assert "0.52 ms = 1.04x: met (per repeat 1.00x-1.30x)" in table
    assert "0.90 ms = 1.80x: not met (per repeat 1.80x-2.00x)" in table
    del variants["suite"]["steady_hook_ms_per_repeat"]  # a run saved before the per-repeat values
    assert "0.90 ms = 1.80x: not met |" in floor_table({"cnn": {"variants": variants}})


def test_the_overhead_split_puts_each_step_in_its_part():
    """Fit.split_ms on planted hook times: ordinary steps 1 ms, sampled steps 3 ms, logging steps
    (and the steps after them) 10 ms: the parts are the median and the extras spread over the
    window, and add up to the steady mean."""
    from benchmarks.overhead import LOG_EVERY, ONE_OFF_STEPS, SAMPLE_EVERY, WARMUP, Fit

    steps = 60
    fit = Fit([0.05] * steps, None, LOG_EVERY, {})
    special = [fit._special(s) for s in range(WARMUP + steps)]
    fit.hooks["X.on_train_batch_end"] = [1e-2 if special[s] else 3e-3 if s % SAMPLE_EVERY == 0 else 1e-3
                                         for s in range(WARMUP + steps)]
    window = [s for s in range(WARMUP, WARMUP + steps) if s not in ONE_OFF_STEPS]
    n_special = sum(special[s] for s in window)
    n_sampled = sum(not special[s] and s % SAMPLE_EVERY == 0 for s in window)
    split = fit.split_ms(["X.on_train_batch_end"])
    assert n_special == 2 and n_sampled == 5  # steps 49 and 50; 10, 20, 30, 40 and 60
    assert split == pytest.approx({"every_step": 1.0, "sampled": n_sampled * 2.0 / len(window),
                                   "logging": n_special * 9.0 / len(window)})
    assert sum(split.values()) == pytest.approx(fit.hook_ms(["X.on_train_batch_end"], steady=True))
