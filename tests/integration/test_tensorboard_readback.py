"""What the suite writes to TensorBoard (and CSV), read back from the files after a real fit.

The run has two planted faults: the first hidden layer's bias at -1000 (every unit after it is
dead from the start) and one NaN batch at step 12. With ``auto_remediate=True`` the suite
revives the dead units and skips the NaN step, so every family of tags gets written.
"""

from __future__ import annotations

import csv
import json
import math
import re
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from tensorboard.plugins.custom_scalar import layout_pb2
from torch import nn

from lightning_convergence import default_callbacks, tags as suite_tags
from lightning_convergence.recorder.tensorboard import custom_scalars_layout
from tests.helpers.models import DigitsMLP, trainer_kwargs
from tests.helpers.tensorboard import load_events

STEPS = 40
EVERY = 5
NAN_STEP = 12
LOGGING_STEPS = list(range(EVERY - 1, STEPS, EVERY))  # 4, 9, ..., 39
USER_TAGS = {"train_loss", "val_loss"}
LIGHTNING_TAGS = {"epoch"}  # Lightning's own, written beside the user's metrics

# Layout charts that show tags only a feature not used by the plain suite writes.
OPTIONAL_WHEN_UNUSED = {
    "saturation": "sigmoid/tanh-family activations only",
    "effective LR": "WarmupScheduler only, which joins with warmup_steps",
}

# Every promised family: a regex and how many tags of it this model gives at least.
SCALAR_FAMILIES = {
    r"convergence/grad_norm/total$": 1,
    r"convergence/grad_norm/net\.[024]$": 3,  # the three Linear layers
    r"convergence/grad_max_abs/": 1,
    r"convergence/grad_(nonfinite|spike)_steps$": 2,
    r"convergence/update_ratio/": 3,
    r"convergence/weight_norm/": 3,
    r"convergence/dead_fraction/net\.[13]$": 2,  # the two ReLUs
    r"convergence/dormant_fraction/net\.[13]$": 2,
    r"convergence/autoclip/(norm|threshold|clipped_norm|clipped_fraction)$": 4,
    r"convergence/loss/train_ema$": 1,
    r"convergence/loss/val_loss$": 1,
    r"convergence/lr_factor": 1,
    r"convergence/inputs/(rms_max|nonfinite)/": 2,
    r"convergence/data/wait_(fraction|ms)$": 2,
}
HISTOGRAM_FAMILIES = {r"convergence/grad_hist/net\.[024]$": 3, r"convergence/unit_activity/net\.[13]$": 2}

_DIAGNOSIS = re.compile(r"\*\*(\w+): (\w+)\*\*(?: in `([^`]+)`)? \(step (\d+), from (\w+)\)")


def _fit(tmp_path: Path, loggers: list, model_changes=None, **overrides) -> L.Trainer:
    L.seed_everything(0)
    model = DigitsMLP(nan_at_step=NAN_STEP, n=STEPS * 32)
    with torch.no_grad():
        model.net[0].bias.fill_(-1000.0)  # net.1's ReLUs never fire
    if model_changes is not None:
        model_changes(model)
    callbacks = default_callbacks(auto_remediate=True, log_every_n_steps=EVERY, histogram_every_n_steps=EVERY,
                                  # one sampled batch per step, so a 5-step window can be judged
                                  DeadNeuronTracker={"sample_every_n_steps": 1}, **overrides)
    trainer = L.Trainer(callbacks=callbacks, logger=loggers, **trainer_kwargs(tmp_path, max_steps=STEPS))
    trainer.fit(model)
    assert trainer.global_step == STEPS
    return trainer


def _layout(accumulator) -> list[tuple[str, str, str]]:
    """``(category, chart, regex)`` of every entry of the custom-scalars layout."""
    events = accumulator.Tensors("custom_scalars__config__")
    assert len(events) == 1, "the layout is written once per run"
    layout = layout_pb2.Layout.FromString(events[0].tensor_proto.string_val[0])
    return [(category.title, chart.title, regex) for category in layout.category for chart in category.chart
            for regex in chart.multiline.tag]


def _unmatched(layout: list[tuple[str, str, str]], tags: list[str]) -> dict[str, str]:
    """The charts of the layout that no tag reaches (chart title -> its category)."""
    # TensorBoard's custom-scalars plugin selects a panel's tags with `re.match`.
    charts = {chart: category for category, chart, _ in layout}
    reached = {chart for _, chart, regex in layout if any(re.match(regex, tag) for tag in tags)}
    return {chart: category for chart, category in charts.items() if chart not in reached}


def _assert_every_suite_tag_is_on_its_panel(layout: list[tuple[str, str, str]], scalars: list[str]) -> None:
    """Every scalar the suite wrote is drawn by exactly the panel ``tags.panel_of`` names."""
    for tag in scalars:
        if not suite_tags.is_suite_tag(tag):
            continue
        panel = suite_tags.panel_of(tag)
        assert panel is not None, f"{tag} is on no panel of tags.PANEL_GROUPS"
        charts = {chart for _, chart, regex in layout if re.match(regex, tag)}
        assert charts == {panel.title}, (tag, charts)


def _diagnoses_in_text(accumulator) -> set[tuple]:
    found = set()
    for event in accumulator.Tensors("convergence/diagnoses/text_summary"):
        text = event.tensor_proto.string_val[0].decode()
        match = _DIAGNOSIS.match(text)
        assert match, text
        severity, kind, layer, step, source = match.groups()
        assert int(step) == event.step
        found.add((kind, severity, layer, int(step), source))
    return found


def _report(trainer: L.Trainer) -> dict:
    return json.loads((Path(trainer.loggers[0].log_dir) / "convergence_report.json").read_text())


def test_every_promised_family_reads_back_from_tensorboard(tmp_path):
    logger = TensorBoardLogger(tmp_path, name="tb")
    trainer = _fit(tmp_path, [logger])
    events = load_events(logger.log_dir)
    tags = events.Tags()

    scalars = tags["scalars"]
    for family, least in SCALAR_FAMILIES.items():
        found = [t for t in scalars if re.match(family, t)]
        assert len(found) >= least, (family, found)
    assert sorted(t for t in scalars if not t.startswith("convergence/")) == sorted(USER_TAGS | LIGHTNING_TAGS)
    for tag in scalars:
        assert all(math.isfinite(e.value) for e in events.Scalars(tag)), tag
    # Per-layer values once per logging window; the total every step but the NaN one.
    for tag in ("convergence/grad_norm/net.0", "convergence/dead_fraction/net.1", "convergence/loss/train_ema"):
        assert [e.step for e in events.Scalars(tag)] == LOGGING_STEPS, tag
    total_steps = [e.step for e in events.Scalars("convergence/grad_norm/total")]
    assert total_steps == [s for s in range(STEPS) if s != NAN_STEP]
    dead = {e.step: e.value for e in events.Scalars("convergence/dead_fraction/net.1")}
    assert dead[LOGGING_STEPS[0]] == 1.0 and dead[LOGGING_STEPS[-1]] < 1.0  # revived

    histograms = tags["histograms"]
    assert all(h.startswith("convergence/") for h in histograms)
    for family, least in HISTOGRAM_FAMILIES.items():
        assert len([h for h in histograms if re.match(family, h)]) >= least, (family, histograms)
    assert [e.step for e in events.Histograms("convergence/grad_hist/net.0")] == LOGGING_STEPS

    # Diagnoses: TensorBoard's text plugin, one entry per diagnosis of the JSON report.
    assert "convergence/diagnoses/text_summary" in events.PluginTagToContent("text")
    in_text = _diagnoses_in_text(events)
    in_report = {(d["kind"], d["severity"], d["layer"], d["step"], d["source"]) for d in _report(trainer)["diagnoses"]}
    assert in_text == in_report
    kinds = {kind for kind, *_ in in_text}
    assert {"dead_units", "nonfinite_gradients", "nonfinite_loss"} <= kinds

    layout = _layout(events)
    assert layout == [(category, chart, regex) for category, charts in custom_scalars_layout().items()
                      for chart, (_, regexes) in charts.items() for regex in regexes]
    _assert_every_suite_tag_is_on_its_panel(layout, scalars)
    unmatched = _unmatched(layout, scalars)
    assert set(unmatched) <= set(OPTIONAL_WHEN_UNUSED), unmatched


def test_layout_entries_that_need_a_feature_are_written_when_it_is_used(tmp_path):
    def tanh_second_layer(model):
        model.net[3] = nn.Tanh()  # a saturating activation beside the dead ReLU layer

    logger = TensorBoardLogger(tmp_path, name="tb")
    _fit(tmp_path, [logger], model_changes=tanh_second_layer, warmup_steps=10)
    events = load_events(logger.log_dir)
    scalars = events.Tags()["scalars"]
    _assert_every_suite_tag_is_on_its_panel(_layout(events), scalars)
    assert _unmatched(_layout(events), scalars) == {}
    assert "convergence/saturation/net.3" in scalars and "convergence/lr/group0" in scalars


def _csv_rows(logger: CSVLogger) -> list[dict[str, str]]:
    with open(Path(logger.log_dir) / "metrics.csv", newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.mark.parametrize("with_tensorboard", [True, False], ids=["csv_and_tensorboard", "csv_only"])
def test_scalars_reach_csv_and_text_and_histograms_stay_in_tensorboard(tmp_path, with_tensorboard):
    csv_logger = CSVLogger(tmp_path, name="csv")
    loggers = [TensorBoardLogger(tmp_path, name="tb"), csv_logger] if with_tensorboard else [csv_logger]
    trainer = _fit(tmp_path, loggers)

    rows = _csv_rows(csv_logger)
    columns = set(rows[0])
    ours = {c for c in columns if c.startswith("convergence/")}
    for family, least in SCALAR_FAMILIES.items():
        assert len([c for c in ours if re.match(family, c)]) >= least, (family, sorted(ours))
    assert not [c for c in columns if re.match(r"convergence/(grad_hist|unit_activity|diagnoses)", c)]
    assert columns - ours <= USER_TAGS | LIGHTNING_TAGS | {"step"}
    for column in ours:
        values = [float(row[column]) for row in rows if row[column]]
        assert values and all(math.isfinite(v) for v in values), column
    assert _report(trainer)["diagnoses"]  # the report goes beside the first logger's files

    event_files = list(tmp_path.rglob("events.out.tfevents.*"))
    if not with_tensorboard:
        assert event_files == []
        return
    events = load_events(str(tmp_path / "tb"))
    # One `log_metrics` call feeds both loggers: the same scalar tags in both.
    assert {t for t in events.Tags()["scalars"] if t.startswith("convergence/")} == ours
    assert events.Tags()["histograms"] and "convergence/diagnoses/text_summary" in events.Tags()["tensors"]
