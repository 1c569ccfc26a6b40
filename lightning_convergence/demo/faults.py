"""The demo's faults: each a small model on the digits data configured to show one failure.

Kept free of heavy imports so that ``lightning-convergence --help`` answers at once. Each entry
says what the fault is, how to build it (``model``: the model class and its arguments; ``data``:
the data module's arguments), ``suite``: overrides of ``default_callbacks`` that the demo turns
on for it (opt-in remedies, printed with the run), and ``expect``: the diagnosis kinds the suite
should report (at warning level or above) on it, which a test checks.
"""

FAULTS: dict[str, dict] = {
    "lr_high": {
        "expect": ["divergence"],
        "what": "SGD (momentum 0.9) with lr=0.5 on a small CNN: about 10x too high",
        "model": ("cnn", {"lr": 0.5}),
    },
    "lr_low": {
        "expect": ["no_learning"],
        "what": "SGD (momentum 0.9) with lr=0.0005 on a small CNN: about 100x too low",
        "model": ("cnn", {"lr": 0.0005}),
        "epochs": 8,
        "suite": {"PlateauAdvisor": {"raise_lr_on_no_learning": True, "num_classes": 10}},
    },
    "dead_relu": {
        "expect": ["dead_units"],
        "what": "a ReLU MLP whose hidden biases start at -3: every unit starts dead",
        "model": ("mlp", {"lr": 0.05, "bias_init": -3.0}),
        "data": {"as_images": False},
    },
    "vanishing": {
        "expect": ["vanishing_gradients"],
        "what": "a 10-layer sigmoid MLP: the gradients vanish before they reach the first layers",
        "model": ("mlp", {"lr": 0.05, "depth": 10, "hidden": 64, "activation": "sigmoid"}),
        "data": {"as_images": False},
    },
    "nan_batch": {
        "expect": ["nonfinite_loss"],  # one event: the inputs and gradients are notes naming it
        "what": "a small CNN, one training sample of which is NaN (a corrupt image)",
        "model": ("cnn", {"lr": 0.05}),
        "data": {"nan_sample": 700},
    },
    "overfit": {
        "expect": ["overfitting"],
        "what": "a wide MLP on 64 training samples: it learns them by heart",
        "model": ("mlp", {"lr": 0.05, "hidden": 512}),
        "data": {"as_images": False, "train_size": 64, "batch_size": 16},
        "epochs": 40,
        "suite": {"PlateauAdvisor": {"stop_on_overfit": True}},
    },
    "none": {
        "expect": [],
        "what": "the small CNN at a well-tuned lr=0.05: nothing wrong (the suite should stay quiet)",
        "model": ("cnn", {"lr": 0.05}),
    },
}
