"""The one table of callbacks: every callback of the package is in it, and the exports and
``default_callbacks`` follow it. (The reliability and LightningCLI tests take their callbacks
from it too.)"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import subprocess
import sys

import pytest

import lightning_convergence
import lightning_convergence.callbacks
from lightning_convergence import default_callbacks
from lightning_convergence.callbacks.base import ConvergenceCallback
from lightning_convergence.callbacks.registry import ALIASES, BY_NAME, CALLBACKS, MODES, Registered, in_mode, load

NAMES = [entry.name for entry in CALLBACKS]


def _defined_in_the_package() -> set[tuple[str, str]]:
    """``(module, class name)`` of every public ConvergenceCallback subclass the package defines."""
    found = set()
    modules = pkgutil.walk_packages(lightning_convergence.__path__, "lightning_convergence.")
    for name in sorted(info.name for info in modules):
        module = importlib.import_module(name)
        for attribute, value in vars(module).items():
            if (inspect.isclass(value) and issubclass(value, ConvergenceCallback) and value is not ConvergenceCallback
                    and value.__module__ == name and not attribute.startswith("_") and not inspect.isabstract(value)):
                found.add((name, value.__name__))
    return found


def test_every_callback_the_package_defines_is_registered():
    registered = {(entry.module, entry.name) for entry in CALLBACKS}
    defined = _defined_in_the_package()
    assert defined - registered == set(), "add these to lightning_convergence/callbacks/registry.py"
    assert registered - defined == set(), "these registry entries name no callback class"


def test_names_are_unique():
    assert len(set(NAMES)) == len(NAMES) == len(BY_NAME)


def test_the_public_exports_are_the_registry():
    for package in (lightning_convergence, lightning_convergence.callbacks):
        exported = {name for name in package.__all__
                    if inspect.isclass(cls := getattr(package, name)) and issubclass(cls, ConvergenceCallback)}
        assert exported - {"ConvergenceCallback"} == set(NAMES) | set(ALIASES), package.__name__
    for entry in CALLBACKS:
        assert getattr(lightning_convergence, entry.name) is load(entry) is getattr(lightning_convergence.callbacks,
                                                                                     entry.name)


def test_the_warning_class_is_public_and_the_package_lists_only_its_public_names():
    from lightning_convergence.recorder.console import ConvergenceWarning

    assert lightning_convergence.ConvergenceWarning is ConvergenceWarning
    assert {"CALLBACKS", "ALIASES", "lazy_exports", "annotations"}.isdisjoint(dir(lightning_convergence))
    assert set(lightning_convergence.__all__) <= set(dir(lightning_convergence))


def test_each_former_name_is_the_class_it_names_now():
    for alias, (_, name) in ALIASES.items():
        assert alias not in BY_NAME
        assert getattr(lightning_convergence, alias) is load(name) is getattr(lightning_convergence.callbacks, alias)


def test_importing_the_package_and_the_registry_loads_neither_torch_nor_lightning():
    code = ("import sys, lightning_convergence, lightning_convergence.callbacks.registry as r; "
            "dir(lightning_convergence); r.in_mode('act'); "
            "bad = [m for m in sys.modules if m.split('.')[0] in ('torch', 'lightning', 'pytorch_lightning')]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("kwargs", [{}, {"auto_remediate": True}, {"auto_remediate": True, "warmup_steps": 5}],
                         ids=["observe", "act", "act+warmup"])
def test_default_callbacks_is_the_registry_in_each_mode(kwargs):
    modes = {"act" if kwargs else "observe", *(["warmup"] if "warmup_steps" in kwargs else [])}
    expected = [entry for entry in CALLBACKS if modes & entry.modes]
    callbacks = default_callbacks(**kwargs)
    assert [type(c).__name__ for c in callbacks] == [entry.name for entry in expected]
    for callback, entry in zip(callbacks, expected):
        for argument, value in entry.suite_args.items():
            assert getattr(callback, argument) == value, (entry.name, argument)


def test_every_mode_has_callbacks():
    assert all(in_mode(mode) for mode in MODES)


@pytest.mark.parametrize("entry", CALLBACKS, ids=NAMES)
def test_the_table_names_only_constructor_arguments(entry):
    parameters = set(inspect.signature(load(entry)).parameters)
    for table in (entry.suite_args, entry.example, entry.second_instance or {}):
        assert set(table) <= parameters, entry.name


def test_an_unknown_mode_is_refused():
    with pytest.raises(ValueError, match="`modes` must be a subset of"):
        Registered("X", "lightning_convergence.x", frozenset({"always"}))
    with pytest.raises(ValueError, match="`mode` must be one of"):
        in_mode("always")
