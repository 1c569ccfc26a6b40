"""The Examples in the reporting package's docstrings run and give what they show."""

import doctest
import importlib
import pkgutil

import pytest

import lightning_convergence.readback as reporting

MODULES = sorted(f"{reporting.__name__}.{m.name}" for m in pkgutil.iter_modules(reporting.__path__))


@pytest.mark.parametrize("name", MODULES)
def test_examples(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0
