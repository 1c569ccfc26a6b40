"""No collective inside a rank-zero-only branch (a scan of the package source).

A function that looks at ``is_global_zero`` or is decorated with ``rank_zero_only`` runs its body
on one rank; a collective there (``trainer.log_dir`` broadcasts!) would hang the other ranks.
"""

import ast
import pathlib

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "lightning_convergence"
COLLECTIVES = {"broadcast", "barrier", "reduce", "all_gather", "all_reduce", "reduce_boolean_decision", "log_dir"}


def _rank_zero_functions(tree):
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            decorated = any("rank_zero" in ast.unparse(d) for d in node.decorator_list)
            checks = any(isinstance(n, ast.Attribute) and n.attr in ("is_global_zero", "global_rank")
                         for n in ast.walk(node))
            if decorated or checks:
                yield node


def test_no_collectives_in_rank_zero_code():
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        for function in _rank_zero_functions(ast.parse(path.read_text())):
            for node in ast.walk(function):
                if isinstance(node, ast.Attribute) and node.attr in COLLECTIVES:
                    if ast.unparse(node).startswith(("trainer.", "self.trainer", "strategy", "torch.distributed")):
                        offenders.append(f"{path.name}:{node.lineno} {ast.unparse(node)} in {function.name}")
    assert offenders == []


def test_scan_catches_the_mistake_it_is_for():
    source = "def write(trainer):\n    if trainer.is_global_zero:\n        print(trainer.log_dir)\n"
    found = [n for f in _rank_zero_functions(ast.parse(source)) for n in ast.walk(f)
             if isinstance(n, ast.Attribute) and n.attr in COLLECTIVES]
    assert found
