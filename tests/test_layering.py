"""Nothing under stats/, rules/ or remedies/ imports lightning (checked on the source)."""

import ast
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "lightning_convergence"


@pytest.mark.parametrize("layer", ["stats", "rules", "remedies"])
def test_lower_layers_do_not_import_lightning(layer):
    for path in (PACKAGE / layer).rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            for name in names:
                assert not name.startswith(("lightning.", "pytorch_lightning")) and name != "lightning", (
                    f"{path} imports {name}"
                )
                if name.startswith("lightning_convergence."):
                    allowed = ("stats", "rules", "remedies", "validation", "_imports")
                    sub = name.split(".", 1)[1]
                    assert sub.startswith(allowed), f"{path} imports {name}"


def test_lower_layers_import_without_lightning_in_a_fresh_interpreter():
    import subprocess
    import sys

    code = (
        "import sys; import lightning_convergence.stats, lightning_convergence.rules, "
        "lightning_convergence.remedies; "
        "bad = [m for m in sys.modules if m == 'lightning' or m.startswith(('lightning.', 'pytorch_lightning'))]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
