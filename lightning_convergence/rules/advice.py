"""What each diagnosis kind usually means and what to try, in the order worth trying.

Messages are built as: what was seen (with numbers), the likely causes, the steps to try.
"""

from __future__ import annotations

CAUSES: dict[str, str] = {
    "nonfinite_loss": "a learning rate that is too high, inputs with NaN/Inf or no normalisation, "
    "a bad batch, or numeric overflow in fp16",
    "nonfinite_gradients": "a learning rate that is too high, a deep or recurrent net without "
    "normalisation, bad initialisation, or a NaN/Inf that entered through the loss or inputs",
    "exploding_gradients": "a learning rate that is too high, a deep or recurrent net without "
    "normalisation, or bad initialisation",
    "vanishing_gradients": "saturating activations (sigmoid/tanh) stacked deep, poor "
    "initialisation, or no normalisation between layers",
    "dead_units": "a learning rate that is too high (one large step pushes a unit's bias far "
    "negative), large negative biases, or poor initialisation",
    "saturated_units": "unnormalised inputs, weights that are too large, or a deep stack of "
    "saturating activations",
    "divergence": "a learning rate that is too high, inputs without normalisation, a bad batch, or "
    "numeric overflow (fp16)",
    "oscillation": "a learning rate that is too high, a batch that is too small, or numeric instability",
    "plateau": "a learning rate that is now too high to settle or too low to move, a poor minimum or "
    "saddle, or too little capacity",
    "no_learning": "a bug in the data pipeline or the labels, a learning rate far too small, frozen "
    "layers, a loss that does not fit the task, or gradients that do not reach the early layers",
    "overfitting": "too little regularisation, too much capacity for the data, label noise, or "
    "leakage between the splits",
    "nonfinite_inputs": "corrupt samples, or a division by zero or a log of zero in the preprocessing",
    "unnormalized_inputs": "missing preprocessing: the inputs were never scaled or standardised",
    "poor_initialization": "a constant initialisation (every unit starts the same and learns the same), or "
    "a custom initialisation at the wrong scale for the activation that follows",
    "slow_data_loading": "loading, decoding or augmentation done on the training process, or too few "
    "data-loader workers",
    "amp_overflow": "normal now and then under fp16 with a loss scaler; when it persists, "
    "numeric instability (often a learning rate that is too high)",
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
        "clip gradients by norm (AutoClip)",
        "lower the learning rate",
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
}


def advise(kind: str, seen: str, causes: str | None = None) -> str:
    """A full diagnosis message: ``seen``, then the likely causes and the remedies to try.

    ``causes`` replaces the kind's usual causes where the evidence points elsewhere.

    Example:
        >>> advise("exploding_gradients", "The gradient norm jumped to 812 (median 3.1).")[:45]
        'The gradient norm jumped to 812 (median 3.1).'
    """
    steps = "; ".join(f"{i}) {step}" for i, step in enumerate(REMEDIES[kind], start=1))
    return f"{seen} Likely causes: {causes or CAUSES[kind]}. Try: {steps}."
