"""The demo's faults: each a small model on the digits data configured to show one failure.

Kept free of heavy imports so that ``lightning-convergence --help`` answers at once.
"""

FAULTS: dict[str, dict] = {
    "lr_high": {"lr": 0.5, "what": "SGD (momentum 0.9) with lr=0.5 on a small CNN: about 10x too high"},
}
