"""What each diagnosis kind usually means and what to try, in the order worth trying.

Three tables, keyed by the vocabularies of :mod:`lightning_convergence.rules.findings`:

- :data:`USUAL_CAUSES`: per kind, the causes that usually explain it, ranked, with modest
  confidences (a rule with evidence of its own passes its own ranked causes instead);
- :data:`CAUSE_WORDS`: per cause name, the words a person reads;
- :data:`REMEDIES`: per kind, what to try, first the step that answers the top cause.

:func:`render_message` turns the parts of a finding into the one paragraph shown on the console,
in TensorBoard and in the report's ``message``. Nothing reads that paragraph back.

This module imports nothing from the package, so that ``findings`` can import it.
"""

from __future__ import annotations

from collections.abc import Sequence

USUAL_CAUSES: dict[str, tuple[tuple[str, float], ...]] = {
    "nonfinite_loss": (("learning_rate_too_high", 0.5), ("nonfinite_data", 0.3), ("low_precision_overflow", 0.2)),
    "nonfinite_gradients": (("learning_rate_too_high", 0.4), ("non_differentiable_operation", 0.3),
                            ("missing_normalization_or_residuals", 0.2), ("bad_initialization", 0.1)),
    "exploding_gradients": (("learning_rate_too_high", 0.5), ("missing_normalization_or_residuals", 0.3),
                            ("bad_initialization", 0.2)),
    "vanishing_gradients": (("saturating_activations", 0.5), ("bad_initialization", 0.3),
                            ("missing_normalization_or_residuals", 0.2)),
    "dead_units": (("learning_rate_too_high", 0.5), ("bad_initialization", 0.3),
                   ("missing_normalization_or_residuals", 0.2)),
    "saturated_units": (("unnormalized_inputs", 0.5), ("bad_initialization", 0.3), ("saturating_activations", 0.2)),
    "divergence": (("learning_rate_too_high", 0.5), ("unnormalized_inputs", 0.2), ("nonfinite_data", 0.15),
                   ("low_precision_overflow", 0.15)),
    "oscillation": (("learning_rate_too_high", 0.5), ("batch_size_too_small", 0.3), ("low_precision_overflow", 0.2)),
    "plateau": (("learning_rate_too_high", 0.4), ("learning_rate_too_low", 0.3), ("too_little_capacity", 0.2),
                ("bad_initialization", 0.1)),
    "no_learning": (("labels_mismatched", 0.3), ("wrong_loss_for_task", 0.25), ("learning_rate_too_low", 0.25),
                    ("gradient_flow_cut", 0.2)),
    "overfitting": (("too_much_capacity", 0.4), ("too_little_data", 0.3), ("label_noise", 0.2)),
    "amp_overflow": (("low_precision_overflow", 0.6), ("learning_rate_too_high", 0.2)),
    "nonfinite_inputs": (("nonfinite_data", 0.6),),
    "unnormalized_inputs": (("unnormalized_inputs", 0.6),),
    "invalid_targets": (("invalid_targets", 0.5), ("wrong_loss_for_task", 0.3), ("labels_mismatched", 0.2)),
    "poor_initialization": (("bad_initialization", 0.6),),
    "slow_data_loading": (("data_loader_bottleneck", 0.6), ("data_loader_restarts", 0.2)),
    "slow_training": (("host_sync_in_step", 0.3), ("low_device_utilization", 0.25), ("logging_overhead", 0.2),
                      ("validation_too_frequent", 0.15), ("checkpointing_overhead", 0.1)),
}

CAUSE_WORDS: dict[str, str] = {
    "learning_rate_too_high": "a learning rate that is too high",
    "learning_rate_too_low": "a learning rate that is too low (or zero, from a schedule)",
    "missing_warmup": "no learning-rate warmup at the start",
    "missing_gradient_clipping": "no gradient clipping",
    "batch_size_too_small": "a batch that is too small (noisy gradients)",
    "optimizer_misconfigured": "optimizer settings (eps, betas, weight decay) out of their working range",
    "low_precision_overflow": "numeric overflow in low precision (fp16 range, or an eps that rounds to 0)",
    "non_differentiable_operation": "an operation without a finite gradient at some input "
    "(sqrt, log, norm or a division at 0)",
    "nonfinite_data": "NaN/Inf in the data (a corrupt sample, or a division by zero or log of zero in the "
    "preprocessing)",
    "unnormalized_inputs": "inputs that were never scaled or standardised",
    "unnormalized_targets": "regression targets far from unit scale",
    "labels_mismatched": "labels that do not belong to their inputs (a bug in the data pipeline)",
    "label_noise": "noisy or wrong labels",
    "invalid_targets": "targets the loss cannot use (labels outside 0..K-1, the wrong dtype or shape)",
    "unshuffled_data": "training data that is not shuffled",
    "too_little_data": "too little training data for the model",
    "bad_initialization": "initial weights at the wrong scale for the activation that follows (or all equal)",
    "dead_relu_units": "ReLU units that died and pass no gradient",
    "saturating_activations": "saturating activations (sigmoid/tanh) stacked deep",
    "missing_normalization_or_residuals": "no normalisation layers or residual connections in a deep network",
    "too_little_capacity": "a model too small for the task",
    "too_much_capacity": "a model too large for the data, with too little regularisation",
    "wrong_loss_for_task": "a loss that does not fit the task (softmax before CrossEntropyLoss, input and "
    "target shapes that broadcast)",
    "stale_gradients": "gradients that are never zeroed between steps",
    "gradient_flow_cut": "a part of the model cut off from the loss (no_grad, detach, requires_grad=False)",
    "data_loader_bottleneck": "loading, decoding or augmentation on the training process, or too few "
    "data-loader workers",
    "data_loader_restarts": "data-loader workers restarted every epoch",
    "validation_too_frequent": "validation run too often",
    "logging_overhead": "logging too much, too often",
    "checkpointing_overhead": "checkpoints written too often",
    "host_sync_in_step": "host synchronisations in the training step (.item(), .cpu(), printing tensors)",
    "low_device_utilization": "a device left idle (batches too small for it)",
    "fp32_where_bf16_fits": "fp32 arithmetic where bf16 would do",
}

REMEDIES: dict[str, tuple[str, ...]] = {
    "nonfinite_loss": (
        "lower the learning rate about tenfold",
        "clip gradients (AutoClip)",
        "add warmup",
        "check the inputs for NaN/Inf and scale them",
        "use bf16 or a loss scaler instead of plain fp16",
    ),
    "nonfinite_gradients": (
        "lower the learning rate",
        "clip gradients by norm (AutoClip)",
        "check inputs and loss for NaN/Inf",
        "add normalisation layers or residual connections",
    ),
    "exploding_gradients": (
        "lower the learning rate",
        "clip gradients by norm (AutoClip)",
        "add normalisation layers or residual connections",
        "for RNNs use LSTM/GRU cells and aggressive clipping",
    ),
    "vanishing_gradients": (
        "use ReLU-family or GELU activations",
        "use He (ReLU) or Xavier (tanh) initialisation",
        "add batch or layer normalisation",
        "add residual connections",
    ),
    "dead_units": (
        "lower the learning rate",
        "use LeakyReLU, ELU or GELU instead of ReLU",
        "use He initialisation",
        "add normalisation (BatchNorm/LayerNorm) before the activation",
        "re-initialise the dead units (DeadNeuronTracker(auto_remediate=True) does it: ReDo)",
    ),
    "saturated_units": (
        "normalise the inputs",
        "use smaller initial weights (Xavier for sigmoid/tanh)",
        "add batch normalisation before the activation",
        "use a non-saturating activation (ReLU family, GELU)",
    ),
    "divergence": (
        "lower the learning rate about tenfold",
        "clip gradients (AutoClip)",
        "add warmup",
        "check the inputs for NaN/Inf and their scale",
        "use bf16 or a loss scaler instead of plain fp16",
    ),
    "oscillation": (
        "lower the learning rate tenfold and see whether the swings shrink",
        "use a larger batch",
        "check for NaN/Inf in inputs and loss",
        "clip gradients (AutoClip)",
        "verify that the loss function is the right one",
    ),
    "plateau": (
        "reduce the learning rate on the plateau (if it was high) or add a schedule",
        "add momentum",
        "try a larger model",
        "check the preprocessing",
        "try another initialisation",
    ),
    "no_learning": (
        "check that inputs and labels match",
        "overfit one small batch on purpose: if that fails, look for a bug",
        "check that the loss matches the task",
        "raise the learning rate tenfold",
        "check requires_grad and that gradients reach every layer",
    ),
    "overfitting": (
        "add dropout",
        "add weight decay",
        "stop early on the validation metric",
        "add data augmentation",
        "use a smaller model",
        "check for leakage between the splits",
    ),
    "nonfinite_inputs": (
        "find the samples and fix or drop them",
        "validate the data pipeline (assert torch.isfinite on a pass over the data)",
        "guard divisions and logs in the preprocessing",
    ),
    "unnormalized_inputs": (
        "scale to [0, 1] (pixels: divide by 255)",
        "or standardise with the training set's per-channel mean and std",
        "for tabular data, standardise each feature",
    ),
    "poor_initialization": (
        "use He (Kaiming) initialisation for ReLU-family layers",
        "Xavier (Glorot) for tanh/sigmoid",
        "orthogonal for recurrent or very deep networks",
        "never a constant initialisation for weights (biases at 0 are fine)",
    ),
    "invalid_targets": (
        "encode class labels as 0..K-1 in an integer (long) tensor",
        "check that the number of classes matches the model's output size",
        "check that the target's shape matches the loss's input (no silent broadcast)",
        "check that the loss fits the task (raw logits into CrossEntropyLoss, no softmax before it)",
    ),
    "slow_data_loading": (
        "raise the DataLoader's num_workers",
        "pin_memory=True when training on a GPU",
        "persistent_workers=True so that workers survive between epochs",
        "move decoding and augmentation off the hot path, or to the GPU",
        "cache or pre-process the data once",
    ),
    "amp_overflow": (
        "nothing, if it is rare",
        "if it persists: lower the learning rate",
        "clip gradients",
        "train in bf16 instead of fp16",
    ),
    "slow_training": (
        "profile a few steps (Trainer(profiler=\"simple\")) to see where the time goes",
        "remove .item(), .cpu() and prints of tensors from the training step",
        "log less often (log_every_n_steps)",
        "validate and checkpoint less often (val_check_interval, every_n_train_steps)",
        "raise the batch size until the device is busy; use bf16-mixed where the hardware has it",
    ),
}

CAUSE_REMEDIES: dict[str, tuple[str, ...]] = {
    "wrong_loss_for_task": ("return raw logits from the model: CrossEntropyLoss applies log-softmax itself (or use "
                            "log_softmax with NLLLoss)", "check that the loss's input and target shapes match"),
    "gradient_flow_cut": ("remove the torch.no_grad(), .detach() or requires_grad=False around the part named, "
                          "unless freezing it is meant",),
    "labels_mismatched": ("check that each label stays with its input through the data pipeline (a shuffle or sort "
                          "applied to one and not the other, an index off by one)",),
    "bad_initialization": ("use He (ReLU family) or Xavier (tanh, sigmoid) initialisation, and check the input scale",),
    "learning_rate_too_high": ("lower the learning rate about tenfold (a range test finds the edge: "
                               "Tuner.lr_find)",),
    "learning_rate_too_low": ("check the learning-rate scheduler: it reaches 0 or a tiny value too early "
                              "(total steps against epochs, `interval` of the scheduler config)",
                              "raise the learning rate (a range test finds a good one: Tuner.lr_find)"),
    "non_differentiable_operation": ("find the operation whose gradient is not finite at its input (sqrt, "
                                     "log, norm or a division of exact zeros, e.g. on padded positions) and "
                                     "add an eps inside it or mask before it",
                                     "torch.autograd.set_detect_anomaly(True) for a few steps names it"),
    "nonfinite_data": ("find the samples with NaN/Inf and fix or drop them",),
    "unnormalized_inputs": ("scale the inputs to about unit range (pixels: divide by 255), or standardise "
                            "them",),
    "unnormalized_targets": ("standardise the regression target (subtract its mean, divide by its std) and "
                             "invert that on the predictions; keep the learning rate",),
    "unshuffled_data": ("shuffle the training data (DataLoader(shuffle=True) or a shuffling sampler)",),
    "stale_gradients": ("zero the gradients before each backward pass (optimizer.zero_grad() in manual "
                        "optimisation)",),
}
"""Per cause, what to do about it: the first steps of the advice when the evidence names the cause."""


def cause_words(cause: str) -> str:
    """The words a person reads for the cause name ``cause``."""
    return CAUSE_WORDS.get(cause, cause.replace("_", " "))


def _either(items: Sequence[str]) -> str:
    if len(items) <= 2:
        return " or ".join(items)
    return ", ".join(items[:-1]) + ", or " + items[-1]


def render_message(observation: str, causes: Sequence[str], remedies: Sequence[str],
                   told_apart: bool = True) -> str:
    """One paragraph: ``observation``, then the likely ``causes`` (names, most likely first) and the
    numbered ``remedies``. Either list may be empty; its sentence is then left out. With
    ``told_apart=False`` (no measurement supports one cause over another) the causes are given as
    what to check, in order.

    Example:
        >>> render_message("The loss swings.", ["learning_rate_too_high", "batch_size_too_small"],
        ...                ["lower the learning rate", "use a larger batch"])
        'The loss swings. Likely causes: a learning rate that is too high or a batch that is too small (noisy gradients). Try: 1) lower the learning rate; 2) use a larger batch.'
    """
    parts = [observation.strip()]
    if causes:
        parts.append(f"Likely causes: {_either([cause_words(c) for c in causes])}.")
        if not told_apart and len(causes) > 1:
            parts.append("Nothing measured tells these apart: check them in this order.")
    if remedies:
        parts.append("Try: " + "; ".join(f"{i}) {step}" for i, step in enumerate(remedies, start=1)) + ".")
    return " ".join(p for p in parts if p)
