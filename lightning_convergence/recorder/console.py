"""Diagnoses on the console, through Lightning's rank-zero logging."""

from __future__ import annotations

from lightning.pytorch.utilities.rank_zero import rank_zero_info, rank_zero_warn

from lightning_convergence.recorder.records import Diagnosis


class ConvergenceWarning(UserWarning):
    """Category of the warnings the suite emits, so users can filter them."""


def format_diagnosis(diagnosis: Diagnosis) -> str:
    where = f" in {diagnosis.layer}" if diagnosis.layer else ""
    return (
        f"[lightning-convergence] {diagnosis.severity.upper()} {diagnosis.kind}{where} at step "
        f"{diagnosis.step} ({diagnosis.source}): {diagnosis.message}"
    )


def print_diagnosis(diagnosis: Diagnosis) -> None:
    """Info goes to the log; warnings and critical findings are ``ConvergenceWarning``s."""
    if diagnosis.severity == "info":
        rank_zero_info(format_diagnosis(diagnosis))
    else:
        rank_zero_warn(format_diagnosis(diagnosis), category=ConvergenceWarning)
