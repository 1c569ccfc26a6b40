"""Every Example in the package's docstrings runs and prints what it says (doctest)."""

import doctest
import importlib
import pathlib
import pkgutil

import pytest

import lightning_convergence

MODULES = sorted(m.name for m in pkgutil.walk_packages(lightning_convergence.__path__, "lightning_convergence."))


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, verbose=False)
    assert result.failed == 0, f"{result.failed} docstring example(s) failed in {name}"


def test_every_module_of_every_subpackage_is_run():
    """The walk reaches into every subpackage (readback included), not only the top level: each
    ``.py`` file under a package folder of the source tree is a module that is run."""
    root = pathlib.Path(lightning_convergence.__file__).parent
    files = [f for f in root.rglob("*.py") if f.name != "__init__.py" and (f.parent / "__init__.py").exists()]
    expected = {"lightning_convergence." + ".".join(f.relative_to(root).with_suffix("").parts) for f in files}
    assert any(name.startswith("lightning_convergence.readback.") for name in expected)
    assert expected <= set(MODULES), f"not run: {sorted(expected - set(MODULES))}"
