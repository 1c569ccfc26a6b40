"""The suite configured from YAML through LightningCLI: ``examples/suite.yaml`` builds exactly the
callbacks it describes, and every constructor argument is type-checked when the config is parsed.
"""

from __future__ import annotations

import copy
import dataclasses
import importlib.util
import inspect
import typing
from pathlib import Path

import pytest
import yaml
from jsonargparse import ArgumentError, ArgumentParser
from lightning.pytorch.callbacks import Callback

import lightning_convergence
from lightning_convergence.callbacks.base import ConvergenceCallback
from lightning_convergence.callbacks.registry import CALLBACKS, load
from lightning_convergence.rules import GradientThresholds

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
SUITE_YAML = EXAMPLES / "suite.yaml"
# Every callback of the registry, in its order: the YAML configures each one.
SUITE = tuple(entry.name for entry in CALLBACKS)


@pytest.fixture(autouse=True)
def _command_line(monkeypatch):
    # LightningCLI warns when `args=` and a command line (pytest's own) are both present.
    monkeypatch.setattr("sys.argv", ["train_digits.py"])


def _example_main():
    spec = importlib.util.spec_from_file_location("train_digits", EXAMPLES / "train_digits.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


def _suite_config() -> dict:
    return yaml.safe_load(SUITE_YAML.read_text())


def _ours(callbacks: list[Callback]) -> list[ConvergenceCallback]:
    return [c for c in callbacks if isinstance(c, ConvergenceCallback)]


def _settings(callback: Callback) -> dict:
    """A callback's public configuration (learned state is private)."""
    return {k: v for k, v in vars(callback).items() if not k.startswith("_")}


def _dataclass_of(cls: type, name: str) -> type | None:
    """The dataclass an argument is typed with (``X | None`` included), or ``None``."""
    hint = typing.get_type_hints(cls.__init__)[name]
    return next((t for t in (hint, *typing.get_args(hint)) if dataclasses.is_dataclass(t)), None)


def _reference(class_path: str, init_args: dict) -> ConvergenceCallback:
    """The callback built directly in Python from the YAML's arguments."""
    cls = getattr(lightning_convergence, class_path.rsplit(".", 1)[-1])
    kwargs = {}
    for name, value in init_args.items():
        nested = _dataclass_of(cls, name)
        kwargs[name] = nested(**value) if nested is not None and isinstance(value, dict) else value
    return cls(**kwargs)


def _write_config(directory: Path, config: dict) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_example_yaml_lists_the_whole_suite_with_non_default_arguments():
    entries = _suite_config()["trainer"]["callbacks"]
    assert [e["class_path"].rsplit(".", 1)[-1] for e in entries] == list(SUITE), (
        "examples/suite.yaml must configure every callback of the registry, in its order")
    for entry, registered in zip(entries, CALLBACKS):
        assert entry["class_path"] == f"lightning_convergence.{registered.name}"
        assert entry["init_args"], f"{entry['class_path']} is configured with defaults only"
        # The suite's own settings (AutoClip's z-score ones) are the YAML's too.
        assert registered.suite_args.items() <= entry["init_args"].items(), registered.name
        default = _reference(entry["class_path"], {})
        built = _reference(entry["class_path"], entry["init_args"])
        assert _settings(built) != _settings(default), entry["class_path"]


def test_yaml_builds_each_callback_with_exactly_its_arguments(tmp_path):
    cli = _example_main()(["--config", str(SUITE_YAML), f"--trainer.default_root_dir={tmp_path}"], run=False)

    entries = _suite_config()["trainer"]["callbacks"]
    ours = _ours(cli.trainer.callbacks)
    assert [type(c).__name__ for c in ours] == list(SUITE)  # order kept: AutoClip after the monitors
    for callback, entry in zip(ours, entries):
        reference = _reference(entry["class_path"], entry["init_args"])
        assert type(callback) is type(reference)
        # Every argument as given, every other one at its default.
        assert _settings(callback) == _settings(reference), type(callback).__name__
    # Dataclass arguments arrive as dataclasses, not dicts, with the YAML's fields set.
    monitor, tracker = (next(c for c in ours if type(c).__name__ == name)
                        for name in ("GradientNormMonitor", "DeadNeuronTracker"))
    assert monitor.thresholds == GradientThresholds(vanishing_patience=3, spike_warning_steps=3)
    assert tracker.thresholds.dead_warning == 0.3 and tracker.auto_remediate is True
    advisor = next(c for c in ours if type(c).__name__ == "PlateauAdvisor")
    assert ours[-1].mode == "zscore" and advisor.num_classes == 10 and advisor.monitor == "val_loss"
    assert cli.model.hparams.lr == 0.05 and cli.datamodule.batch_size == 32


def test_fit_from_yaml_runs_and_its_saved_config_parses_back(tmp_path):
    main = _example_main()
    main(["fit", "--config", str(SUITE_YAML), f"--trainer.default_root_dir={tmp_path}", "--trainer.max_steps=6",
          "--trainer.limit_val_batches=1", "--trainer.num_sanity_val_steps=0", "--trainer.enable_progress_bar=false",
          "--trainer.enable_model_summary=false", "--trainer.enable_checkpointing=false"])

    saved = list(tmp_path.rglob("config.yaml"))
    assert len(saved) == 1, saved
    assert list(saved[0].parent.glob("convergence_report.json"))
    # LightningCLI's saved config names every argument, defaults included; it must parse again
    # to the same callbacks (its trainer, model and data; `fit`'s own options are left out).
    config = yaml.safe_load(saved[0].read_text())
    path = _write_config(tmp_path / "again", {k: config[k] for k in ("seed_everything", "trainer", "model", "data")})
    again = main(["--config", str(path), f"--trainer.default_root_dir={tmp_path / 'again'}"], run=False)
    entries = _suite_config()["trainer"]["callbacks"]
    for callback, entry in zip(_ours(again.trainer.callbacks), entries, strict=True):
        assert _settings(callback) == _settings(_reference(entry["class_path"], entry["init_args"]))


# For every constructor argument of every callback: a value of the wrong type, or outside the
# names a Literal allows. Each must be refused by the parser, before the callback is built.
WRONG = {
    "PreflightCheck": {
        "enabled": 3, "auto_remediate": 3, "num_batches": "x", "range_test_steps": 2.5, "overfit_steps": "x",
        "max_seconds": "x", "clock": 3, "report_window_steps": "x",
    },
    "GradientNormMonitor": {
        "group_by": "layer", "log_every_n_steps": "ten", "histogram_every_n_steps": 2.5, "track_updates": 3,
        "spike_factor": "high", "spike_history": "x", "min_history": 1.5, "thresholds": {"layer_growth": "x"},
        "auto_remediate": 3, "max_consecutive_skips": "x", "backend": "cuda-magic", "report_window_steps": "x",
    },
    "DeadNeuronTracker": {
        "sample_every_n_steps": "ten", "log_every_n_steps": 2.5, "min_batches": "x", "dormant_tau": "x",
        "saturation_eps": [0.1], "thresholds": {"no_such_field": 1}, "unit_dims": {"act": "x"}, "include": "relu",
        "exclude": [3], "histogram_every_n_steps": "x", "auto_remediate": 3, "redo_on": "dying",
        "redo_cooldown_steps": "x", "seed": 1.5, "report_window_steps": "x",
    },
    "PlateauAdvisor": {
        "monitor": 3, "mode": "lowest", "factor": "x", "patience": 1.5, "threshold": "x", "threshold_mode": "pct",
        "cooldown": "x", "min_lr": "x", "eps": "x", "strict": 3, "num_classes": "ten",
        "thresholds": {"chunk": "x"}, "divergence_factor": "x", "rollback": 3, "snapshot_every_n_steps": "x",
        "rewarmup_steps": "x", "max_recoveries": "x", "stop_on_overfit": 3, "raise_lr_on_no_learning": 3,
        "max_snapshot_bytes": "x", "range_test_steps": "x",
        "log_every_n_steps": "x", "auto_remediate": 3, "report_window_steps": "x",
    },
    "InputSanityChecker": {
        "first_batches": "x", "sample_every_n_steps": "x", "log_every_n_steps": "x", "num_classes": 2.5,
        "thresholds": {"scale_high": "x"}, "auto_remediate": 3, "report_window_steps": "x",
    },
    "InitializationAudit": {"scale_factor": "x", "report_window_steps": "x"},
    "TrainingSpeedMonitor": {"log_every_n_steps": "x", "thresholds": {"min_fetch_ms": "x"}, "sequence_length": 2.5,
                             "flops_per_batch": "x", "report_window_steps": "x", "clock": 3, "cpu_clock": 3},
    "WarmupScheduler": {"warmup_steps": "soon", "shape": "square", "log_every_n_steps": "x",
                        "report_window_steps": "x"},
    "AutoClip": {
        "mode": "median", "percentile": "x", "window": 2.5, "include_current": 3, "z_thresh": "x", "alpha": "x",
        "min_ratio": "x", "guard_remedy_steps": "x", "max_norm": "x", "clip_factor": "x", "eps": "x", "exclude_final_layer": 3, "clip_warmup_steps": "x",
        "auto_remediate": 3, "log_every_n_steps": "x", "backend": "cuda-magic", "report_window_steps": "x",
    },
}


# Through the whole LightningCLI: one wrong value per callback (its first plain argument in
# WRONG), and a wrong field inside a dataclass argument.
YAML_CASES = [*((name, next(a for a, v in WRONG[name].items() if not isinstance(v, dict)))
                for name in SUITE if name in WRONG),
              ("GradientNormMonitor", "thresholds")]


@pytest.mark.parametrize(("name", "argument"), YAML_CASES)
def test_a_wrong_type_in_the_yaml_is_rejected_when_parsed(tmp_path, capsys, monkeypatch, name, argument):
    value = WRONG[name][argument]
    config = copy.deepcopy(_suite_config())
    entry = next(e for e in config["trainer"]["callbacks"] if e["class_path"].endswith(f".{name}"))
    entry["init_args"][argument] = value
    path = _write_config(tmp_path, config)
    built = []
    original = ConvergenceCallback.__init__

    def spy(self, *args, **kwargs):
        built.append(type(self).__name__)
        original(self, *args, **kwargs)

    monkeypatch.setattr(ConvergenceCallback, "__init__", spy)

    with pytest.raises(SystemExit) as raised:
        _example_main()(["--config", str(path), f"--trainer.default_root_dir={tmp_path}"], run=False)

    assert raised.value.code == 2
    assert built == []  # the parser refused it: no callback was built
    error = capsys.readouterr().err
    assert f"Problem with given class_path 'lightning_convergence.{name}'" in error
    field = next(iter(value)) if isinstance(value, dict) else argument
    assert f'Parser key "{field}"' in error


def test_an_out_of_range_value_is_refused_by_the_callback_naming_the_argument(tmp_path):
    # Types are the parser's; ranges are the callback's own checks, made when it is built.
    config = copy.deepcopy(_suite_config())
    tracker = next(c for c in config["trainer"]["callbacks"] if c["class_path"].endswith(".DeadNeuronTracker"))
    tracker["init_args"]["sample_every_n_steps"] = 0
    path = _write_config(tmp_path, config)
    with pytest.raises(ValueError, match="`sample_every_n_steps` must be an int >= 1, got 0"):
        _example_main()(["--config", str(path), f"--trainer.default_root_dir={tmp_path}"], run=False)


# Every constructor argument of every registered callback, in the registry's order.
ARGUMENTS = [(entry.name, argument) for entry in CALLBACKS for argument in inspect.signature(load(entry)).parameters]


def test_the_table_of_wrong_values_covers_every_constructor_argument():
    assert sorted(WRONG) == sorted(SUITE)
    for name, wrong in WRONG.items():
        parameters = set(inspect.signature(getattr(lightning_convergence, name)).parameters)
        assert set(wrong) == parameters, name


@pytest.fixture(scope="module")
def callback_parser() -> ArgumentParser:
    # The same resolution as LightningCLI's `trainer.callbacks`: a Callback given by class path.
    parser = ArgumentParser(exit_on_error=False)
    parser.add_argument("--callback", type=Callback)
    return parser


@pytest.mark.parametrize(("name", "argument"), ARGUMENTS)
def test_every_argument_is_type_checked_by_the_parser(callback_parser, name, argument):
    assert argument in WRONG.get(name, {}), f"WRONG has no wrong value for {name}({argument}=...)"
    class_path = f"lightning_convergence.{name}"
    with pytest.raises(ArgumentError, match=f"Problem with given class_path '{class_path}'") as raised:
        callback_parser.parse_object({"callback": {"class_path": class_path,
                                                   "init_args": {argument: WRONG[name][argument]}}})
    assert f'Parser key "{argument}"' in str(raised.value)


@pytest.mark.parametrize("name", SUITE)
def test_the_defaults_parse_and_build_the_same_callback(callback_parser, name):
    class_path = f"lightning_convergence.{name}"
    parsed = callback_parser.parse_object({"callback": {"class_path": class_path}})
    built = callback_parser.instantiate_classes(parsed).callback
    assert _settings(built) == _settings(getattr(lightning_convergence, name)())
