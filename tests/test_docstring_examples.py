"""Every Example in the package's docstrings runs and prints what it says (doctest)."""

import doctest
import importlib
import pkgutil

import pytest

import lightning_convergence

MODULES = sorted(m.name for m in pkgutil.walk_packages(lightning_convergence.__path__, "lightning_convergence."))


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, verbose=False)
    assert result.failed == 0, f"{result.failed} docstring example(s) failed in {name}"
