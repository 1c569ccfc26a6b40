"""InputSanityChecker: NaN/Inf, scale and label range of the training batches.

NaN/Inf are looked for on every batch; scale and labels are looked at on the first
``first_batches`` batches and then one optimizer step in ``sample_every_n_steps``. The device
keeps the sums, as slots of one declared window named after each batch part; the host reads the
window in one transfer once per logging step (and once after the first batches, so that a
raw-pixel pipeline is named at once).

Observing, on the host path (a batch on the CPU, where the loss is read for free), a batch that
is not sampled is counted only when its loss is not finite: NaN/Inf in the data that never reach
the loss do not hurt the run, and a finite loss is the cheapest proof that none did (one that
reaches the gradients but not the loss is named from the gradients then). That saves
reading the whole batch on every step (about 0.05 ms a step on the overhead benchmark's CNN). On
an accelerator every batch is counted on the device, as reading the loss there would wait for the
step; acting, every batch is counted before its optimizer step, which it may skip.
"""

from __future__ import annotations

import copy
import math
import re
from typing import Any

import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.utilities.rank_zero import rank_zero_info
from torch import Tensor
from typing_extensions import override

from lightning_convergence.callbacks._trainer_reads import batch_loss, module_num_classes
from lightning_convergence.callbacks.base import ConvergenceCallback
from lightning_convergence import tags
from lightning_convergence.recorder.tensorboard import log_scalars
from lightning_convergence.rules.input_health import (InputHealthRule, InputThresholds, LabelOrder, PartSummary,
                                                      input_evidence)
from lightning_convergence.stats.batch_tensors import batch_tensors
from lightning_convergence.stats.host import on_host_path
from lightning_convergence.stats.input_moments import InputMoments, NonfiniteCounter
from lightning_convergence.stats.window import DeviceWindow
from lightning_convergence.validation import check_positive_int

_TARGET_NAME = re.compile(r"label|target|(^|[^a-z])y($|[^a-z])|class", re.IGNORECASE)


def looks_like_target(path: str, index: int, count: int) -> bool:
    """Is this batch part the target (class labels, or a regression target)? By name (``label``,
    ``target``, ``y``), or by position: the last part of a tuple batch with more than one part.

    Example:
        >>> looks_like_target("batch[1]", 1, 2), looks_like_target("batch['input_ids']", 0, 2)
        (True, False)
    """
    if _TARGET_NAME.search(path.rsplit("[", 1)[-1].rsplit(".", 1)[-1]):
        return True
    return count > 1 and index == count - 1 and path.startswith("batch[")


class InputSanityChecker(ConvergenceCallback):
    """Checks the training batches for NaN/Inf, a scale far from normalised, and labels out of range.

    Every tensor of the batch is found (tensors, tuples, lists, dicts, dataclasses; other parts
    are skipped and listed once) and named by its path (``batch[0]``, ``batch['image']``).
    Every floating part gets a NaN/Inf count (observing on the CPU: on sampled batches and on
    those whose loss is not finite; see the module's docstring). Parts that look like the target
    (named ``label``/``target``/``y``, or the last part of a tuple) are not judged for scale: floating inputs get
    per-channel mean and RMS (channel: dimension 1 of 2-d and higher tensors), and integer targets
    get their range checked against ``num_classes`` (taken from the argument or the
    LightningModule's ``num_classes`` / ``hparams.num_classes``; without it the range is not
    checked, and it says so once).

    With ``auto_remediate=True`` every batch is checked for NaN/Inf (one host read per optimizer
    step, as GradientNormMonitor's skip) and an optimizer step whose batch held any is skipped
    (every ``p.grad = None``), recorded as ``skip_step``. Nothing else is changed: the other
    findings are advice.

    Args:
        first_batches: batches checked at the start of training.
        sample_every_n_steps: after those, one optimizer step in this many.
        log_every_n_steps: evaluation cadence; ``None`` uses the Trainer's.
        num_classes: classes of a classification target.
        thresholds: the scale thresholds (:class:`InputThresholds`).
        auto_remediate: skip optimizer steps whose batch held NaN/Inf.
        report_window_steps: a diagnosis kind is reported at most once per this many steps.

    Raises:
        ValueError: an argument is out of range.
        TypeError: an argument has the wrong type.

    Example:
        >>> import lightning as L
        >>> trainer = L.Trainer(callbacks=[InputSanityChecker(num_classes=10)], logger=False)
    """

    state_key_fields = ("num_classes",)

    def __init__(
        self,
        first_batches: int = 3,
        sample_every_n_steps: int = 10,
        log_every_n_steps: int | None = None,
        num_classes: int | None = None,
        thresholds: InputThresholds | None = None,
        auto_remediate: bool = False,
        report_window_steps: int = 500,
    ) -> None:
        super().__init__(auto_remediate=auto_remediate, report_window_steps=report_window_steps,
                         log_every_n_steps=log_every_n_steps)
        check_positive_int("first_batches", first_batches)
        check_positive_int("sample_every_n_steps", sample_every_n_steps)
        check_positive_int("num_classes", num_classes, allow_none=True)
        if num_classes is not None and num_classes < 2:
            raise ValueError(f"`num_classes` must be >= 2, got {num_classes!r}.")
        if thresholds is not None and not isinstance(thresholds, InputThresholds):
            raise TypeError(f"`thresholds` must be an InputThresholds, got {thresholds!r}.")
        self.first_batches = first_batches
        self.sample_every_n_steps = sample_every_n_steps
        self.num_classes = num_classes
        self.thresholds = thresholds or InputThresholds()
        self._window = DeviceWindow()  # every part's sums, declared by name as parts are found
        self._parts: dict[str, InputMoments] = {}
        self._nonfinite: dict[str, NonfiniteCounter] = {}
        self._targets: set[str] = set()
        self._batches_seen = 0
        self._last_evaluated = -1
        self._step_nonfinite: Tensor | int | None = None  # NaN/Inf count of this step's batches (acting)
        self._unchecked: tuple[int, list[tuple[str, Tensor]]] | None = None  # a host-path batch, until its loss
        self._said: set[str] = set()
        self._rule = InputHealthRule(self.thresholds, num_classes)
        self._label_order = LabelOrder()  # the labels over the whole run, for telling sorted data

    def _say_once(self, key: str, text: str) -> None:
        if key not in self._said:
            self._said.add(key)
            rank_zero_info(f"InputSanityChecker: {text}")

    @override
    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        super().on_train_start(trainer, pl_module)
        if self._window.allocated:  # restored on the CPU: the batches' device from here on
            self._window.allocate(pl_module.device)
        self.context(trainer).evidence_sources.append(self._post_evidence)
        if self._rule.num_classes is None:
            self._rule.num_classes = module_num_classes(pl_module)

    @override
    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int) -> None:
        super().on_train_batch_start(trainer, pl_module, batch, batch_idx)
        sampled = (self._batches_seen < self.first_batches
                   or trainer.global_step % self.sample_every_n_steps == 0)
        self._batches_seen += 1
        found, skipped = batch_tensors(batch)
        if skipped:
            self._say_once("skipped", f"batch parts that are not tensors are not checked: {skipped[:5]}.")
        floating = [(path, t) for path, t in found if t.is_floating_point() and t.layout == torch.strided]
        acting = self.is_acting(trainer)
        self._unchecked = None  # (a batch whose end never came is not judged by the next one's loss)
        if not sampled and floating and not acting and all(on_host_path(t) for _, t in floating):
            # The host path: counted once the loss is known, and only if it is not finite (acting,
            # the skip is decided before the optimizer step: every batch is counted at once).
            self._unchecked = (trainer.global_step, floating)
        else:
            self._count_nonfinite(floating, trainer.global_step, acting)
        if sampled:
            for index, (path, tensor) in enumerate(found):
                if path not in self._parts:
                    self._parts[path] = InputMoments(self._window, path)
                self._parts[path].update(tensor)
                if looks_like_target(path, index, len(found)):
                    self._targets.add(path)

    def _count_nonfinite(self, floating: list[tuple[str, Tensor]], step: int, acting: bool) -> None:
        """Count the NaN/Inf of this batch's floating parts: one reduction each, on the device."""
        for path, tensor in floating:
            if path not in self._nonfinite:
                self._nonfinite[path] = NonfiniteCounter(self._window, path)
            count = self._nonfinite[path].update(tensor, step)
            if acting:
                self._step_nonfinite = count if self._step_nonfinite is None else self._step_nonfinite + count

    @override
    def on_before_optimizer_step(self, trainer: Trainer, pl_module: LightningModule, optimizer: Any) -> None:
        super().on_before_optimizer_step(trainer, pl_module, optimizer)
        flag, self._step_nonfinite = self._step_nonfinite, None
        if flag is None or not self.is_acting(trainer):
            return
        if isinstance(flag, int) and trainer.world_size == 1:
            return  # counted on the host (no NaN/Inf), one process: nothing to agree on or skip
        params = [p for group in optimizer.param_groups for p in group["params"]]
        if all(p.grad is None for p in params):
            return  # already skipped on every rank (GradientNormMonitor's agreed skip came first)
        # NaN inputs are rank-local: the skip is decided from the count summed over ranks.
        self.skip_step(trainer, params, torch.as_tensor(flag), trainer.global_step, "nonfinite_inputs")

    @override
    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if self._unchecked is not None:
            (step, floating), self._unchecked = self._unchecked, None
            loss = batch_loss(trainer, outputs, host=True)
            if not (isinstance(loss, float) and math.isfinite(loss)):  # NaN/Inf in the data show in the loss
                self._count_nonfinite(floating, step, acting=False)
        step = trainer.global_step
        due = self._clock.window_ends(step, self.logging_cadence(trainer)) or self._batches_seen == self.first_batches
        if not due or step == self._last_evaluated or not (self._parts or self._nonfinite):
            return
        self._last_evaluated = step
        self._evaluate(trainer, max(step - 1, 0))

    def _read(self) -> list[PartSummary]:
        """Every part's numbers, from one host transfer of the window."""
        values = self._window.read()  # the one host read
        summaries = []
        for path in dict.fromkeys([*self._nonfinite, *self._parts]):
            part, counter = self._parts.get(path), self._nonfinite.get(path)
            floating = part.floating if part is not None and part.floating is not None else counter is not None
            summary = PartSummary(path, floating, part.batches if part is not None else 0,
                                  is_target=path in self._targets)
            if counter is not None:
                summary.nonfinite, summary.first_nonfinite_step = counter.counts(values)
            if part is not None and part.batches and part.floating:
                summary.means, summary.rms = part.moments(values)
            elif part is not None and part.batches:
                summary.low, summary.high = part.value_range_of(values)
                summary.mean_batch_span = part.mean_batch_span_of(values)
            summaries.append(summary)
        return summaries

    def _post_evidence(self, trainer: Trainer, summaries: list[PartSummary] | None = None,
                       commit: bool = False) -> None:
        """Post the window so far on the evidence board (a host read when ``summaries`` is not
        given: a warning of another callback is about to be ranked). ``commit``: the window is
        complete, and its labels join the run's label order."""
        if summaries is None:
            if not (self._parts or self._nonfinite):
                return
            summaries = self._read()
        order = self._label_order if commit else copy.copy(self._label_order)
        label = max((s for s in summaries if s.is_target and not s.floating), key=lambda s: s.batches, default=None)
        if label is not None:
            order.add(label)
        # A window that has sampled nothing yet knows nothing new: it keeps what the last one posted.
        known = {key: value for key, value in input_evidence(summaries, order).items() if value is not None}
        self.context(trainer).evidence.post(**known)

    def _evaluate(self, trainer: Trainer, step: int) -> None:
        summaries = self._read()
        metrics: dict[str, float] = {}
        for summary in summaries:
            if summary.floating:
                finite_rms = [r for r in summary.rms if r == r]
                if finite_rms:
                    metrics[tags.inputs_rms_max(summary.path)] = max(finite_rms)
                metrics[tags.inputs_nonfinite(summary.path)] = summary.nonfinite
        log_scalars(trainer, metrics, step)
        if self._rule.num_classes is None and any(s.path in self._targets for s in summaries):
            self._say_once("classes", "the number of classes is unknown, so label ranges are not checked; pass "
                                      "`num_classes=` (or set `num_classes` on the LightningModule).")
        self._post_evidence(trainer, summaries, commit=True)
        for finding in self._rule.evaluate(summaries):
            self.record(trainer, finding, step=step)
        self._window.reset()
        for part in self._parts.values():
            part.reset()

    @override
    def _load_own_state(self, state_dict: dict[str, Any]) -> None:
        self._batches_seen = int(state_dict.get("batches_seen", 0))
        self._label_order.load_state_dict(state_dict.get("label_order", {}))
        # The window in progress: its parts (declared again, by name) and its sums.
        for path in state_dict.get("counted", []):
            self._nonfinite[path] = NonfiniteCounter(self._window, path)
        for path, part_state in state_dict.get("parts", {}).items():
            self._parts[path] = InputMoments(self._window, path)
            self._parts[path].load_state_dict(part_state)
        self._targets = set(state_dict.get("targets", []))
        self._window.load_state_dict(state_dict.get("window", {}))

    @override
    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state["batches_seen"] = self._batches_seen
        state["label_order"] = self._label_order.state_dict()
        state["counted"], state["targets"] = list(self._nonfinite), sorted(self._targets)
        state["parts"] = {path: part.state_dict() for path, part in self._parts.items()}
        state["window"] = self._window.state_dict()
        return state
