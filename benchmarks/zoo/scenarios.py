"""The zoo's scenarios: faults, healthy controls and the fault-free references.

Each fault declares, before any run is looked at:

- ``onset``: the optimizer step (0-based) at which the fault begins (0: present from the start);
- ``expect``: the diagnosis kinds that count as a hit (at severity warning or critical): the kinds
  whose message names the fault's cause or leads to its remedy (see ``/work/shared/CAUSES.md``'s
  table of kinds, causes and remedies);
- ``remedy``: extra ``default_callbacks`` arguments of the remediated run (opt-in remedies, shown
  in the results); empty for the suite at its defaults;
- ``reference``: the fault-free twin whose final validation loss the remediated run should reach
  (within ``RECOVERY_FACTOR``), and ``remediable``: whether the suite has a remedy for the fault at
  all (advice-only faults have no recovery target; their reference, if any, shows the fault's cost).

A scenario runs under each of its **variants** (the callbacks and Trainer settings of one run):
faults and healthy controls under ``observe`` and ``remediate``, references under ``observe``. The
effect studies (``studies.py``) are scenarios too, with their own variants.

All runs use the Trainer's ``log_every_n_steps=10`` unless a scenario sets it; the suite's windows
follow it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import lightning as L
from lightning.pytorch import Callback

from benchmarks.zoo.data import AddingProblem, ZooDigits, long_sequences, nan_pixels, scaled_inputs
from benchmarks.zoo.models import CNN, MLP, AddingRNN, RowsGRU, RowsTransformer
from lightning_convergence import default_callbacks

RECOVERY_FACTOR = 1.5  # recovered: remediated final val loss <= this x the reference's
DEV_SEEDS = (0,)  # the scenarios were designed on these seeds; any other seed is held out


@dataclass(frozen=True)
class Scenario:
    """One configuration of the zoo (see the module docstring for the fields of a fault)."""

    name: str
    role: Literal["fault", "healthy", "reference", "study"]
    what: str
    model: Callable[[], L.LightningModule]
    data: Callable[[int], L.LightningDataModule]
    epochs: int
    onset: int | None = None
    expect: tuple[str, ...] = ()
    remedy: dict[str, Any] = field(default_factory=dict)
    reference: str | None = None
    remediable: bool = False
    num_classes: int | None = 10
    max_steps: int | None = None
    limit_train_batches: int | float | None = None
    quick: bool = False
    prompt: bool = False  # a one-step event (NaN, Inf, explosion): to be detected within one step of onset
    cost: float = 1.0  # rough seconds per run, to start the long runs first
    # The causes the fault plants (names of the package's CAUSES), fixed with the scenario: the
    # top cause of the run's first warning is scored against them. Empty: no single cause.
    causes: tuple[str, ...] = ()
    note: str = ""  # how the scenario was designed, what was measured to choose it
    variants: tuple[str, ...] = ()  # empty: observe and remediate (references: observe)
    trainer: dict[str, Any] = field(default_factory=dict)  # further Trainer arguments
    norms: bool = False  # record the global gradient norm of every step (one host read per step)
    measure: Callable[[L.LightningModule, L.LightningDataModule], dict[str, Any]] | None = None  # after fit

    @property
    def variant_names(self) -> tuple[str, ...]:
        if self.variants:
            return self.variants
        return ("observe",) if self.role == "reference" else ("observe", "remediate")


@dataclass(frozen=True)
class Variant:
    """The callbacks (and Trainer arguments) of one run of a scenario."""

    name: str
    callbacks: Callable[[Scenario], list[Callback]]
    describe: Callable[[Scenario], str]
    trainer: dict[str, Any] = field(default_factory=dict)


def _suite_text(remediate: bool, scenario: Scenario) -> str:
    args = [f"auto_remediate={remediate}", f"num_classes={scenario.num_classes}"]
    args += [f"{k}={v!r}" for k, v in scenario.remedy.items()] if remediate else []
    return f"default_callbacks({', '.join(args)})"


OBSERVE = Variant("observe", lambda s: default_callbacks(auto_remediate=False, num_classes=s.num_classes),
                  lambda s: _suite_text(False, s))
REMEDIATE = Variant("remediate",
                    lambda s: default_callbacks(auto_remediate=True, num_classes=s.num_classes, **s.remedy),
                    lambda s: _suite_text(True, s))


# ----------------------------------------------------------------- shared configurations

def _digits(**kw: Any) -> Callable[[int], ZooDigits]:
    return lambda seed: ZooDigits(seed, **kw)


def _flat(**kw: Any) -> Callable[[int], ZooDigits]:
    return _digits(as_images=False, **kw)


def _transformer(lr: float, cosine: bool = False) -> Callable[[], RowsTransformer]:
    # The warmup study's post-LN transformer: 4 layers, d_model 64, 4 heads, ff 128, Adam (0.9, 0.98).
    return lambda: RowsTransformer(lr, cosine=cosine)


def _rnn() -> AddingRNN:
    return AddingRNN(lr=2e-3, optimizer="adam", nonlinearity="relu", recurrent_init="identity")


ADDING_LENGTH = 10
TRANSFORMER_EPOCHS = 6

SCENARIO_LIST: list[Scenario] = [
    # ------------------------------------------------------------------------ faults
    Scenario("lr_high", "fault", "CNN, SGD (momentum 0.9) at lr 0.5, 10x the tuned 0.05",
             lambda: CNN(lr=0.5), _digits(), epochs=4, onset=0,
             expect=("divergence", "oscillation", "exploding_gradients", "nonfinite_loss", "nonfinite_gradients"),
             reference="healthy_cnn_sgd", remediable=True, quick=True, cost=2, causes=("learning_rate_too_high",),
             note="The demo's `lr_high` fault. Expected kinds: those whose advice starts with the LR or clipping."),
    Scenario("lr_high_40x", "fault", "CNN, SGD (momentum 0.9) at lr 2.0, 40x the tuned 0.05",
             lambda: CNN(lr=2.0), _digits(), epochs=4, onset=0,
             expect=("divergence", "oscillation", "exploding_gradients", "nonfinite_loss", "nonfinite_gradients"),
             reference="healthy_cnn_sgd", remediable=True, cost=2, causes=("learning_rate_too_high",),
             note="A reproduction of a user's report: once, remediated, this run ended at validation loss 12.2 "
                  "against 2.3 observed. Added after the remedies it tests were written; one tenfold cut leaves "
                  "the LR 4x too high."),
    Scenario("lr_low", "fault", "ReLU MLP, SGD (momentum 0.9) at lr 5e-4, 100x below the tuned 0.05",
             lambda: MLP(lr=5e-4), _flat(), epochs=8, onset=0, expect=("no_learning", "plateau"),
             remedy={"PlateauAdvisor": {"raise_lr_on_no_learning": True}}, reference="ref_mlp_sgd",
             remediable=True, cost=3, causes=("learning_rate_too_low",),
             note="The opt-in raises the LR tenfold once, so the run stays 10x below the tuned LR afterwards."),
    Scenario("symmetric_init", "fault", "ReLU MLP whose hidden weights all start at 0.01: every unit identical",
             lambda: MLP(lr=0.05, weight_const=0.01), _flat(), epochs=8, onset=0,
             expect=("poor_initialization",), reference="ref_mlp_sgd", cost=3, causes=("bad_initialization",),
             note="The output layer keeps torch's random init, so the symmetry is broken from the top down: the "
                  "run learns, slowly. The suite has no remedy for it (advice only)."),
    Scenario("vanishing_sigmoid", "fault", "10-layer sigmoid MLP (width 64), SGD (momentum 0.9) lr 0.05",
             lambda: MLP(lr=0.05, depth=10, hidden=64, activation="sigmoid"), _flat(), epochs=8, onset=0,
             expect=("vanishing_gradients", "saturated_units"), reference="ref_mlp_sgd", cost=4,
             causes=("saturating_activations",)),
    Scenario("rnn_exploding", "fault",
             f"ReLU RNN (identity init), Adam 2e-3, on the adding problem of length {ADDING_LENGTH}; at steps 60 "
             "and 120 a batch of 50-step sequences: the gradient explodes through the recurrence",
             _rnn, lambda seed: AddingProblem(seed, ADDING_LENGTH, step_faults={60: long_sequences(50),
                                                                                   120: long_sequences(50)}),
             epochs=4, onset=60, expect=("exploding_gradients", "nonfinite_gradients", "nonfinite_loss"),
             reference="healthy_rnn_adam", remediable=True, num_classes=None, prompt=True, cost=2.5,
             note="Chosen on seed 0 without the suite: the clean run ends at val MSE 0.036 (predicting the mean: "
                  "0.167); the two long batches take the gradient norm to 1e6-1e8x its median and the run to 0.146."),
    Scenario("dead_relu", "fault", "ReLU MLP whose hidden biases start at -3: every unit starts dead",
             lambda: MLP(lr=0.05, bias_init=-3.0), _flat(), epochs=8, onset=0, expect=("dead_units",),
             reference="ref_mlp_sgd", remediable=True, cost=3, causes=("dead_relu_units", "bad_initialization")),
    Scenario("unnormalized_inputs", "fault", "CNN, SGD (momentum 0.9) lr 0.05, on raw 0-255 pixels (the digits x255)",
             lambda: CNN(lr=0.05), _digits(pixel_scale=255.0), epochs=4, onset=0,
             expect=("unnormalized_inputs",), reference="healthy_cnn_sgd", cost=2.5, causes=("unnormalized_inputs",),
             note="No automatic normalisation in the suite (advice only), but the divergence remedies act on the "
                  "consequence."),
    Scenario("nan_batch", "fault", "CNN, SGD (momentum 0.9) lr 0.05; one sample of the batch at step 30 is NaN",
             lambda: CNN(lr=0.05), _digits(step_faults={30: nan_pixels}), epochs=4, onset=30,
             expect=("nonfinite_inputs", "nonfinite_gradients", "nonfinite_loss"), reference="healthy_cnn_sgd",
             remediable=True, quick=True, prompt=True, cost=2.5, causes=("nonfinite_data",)),
    Scenario("inf_loss", "fault",
             "ReLU MLP with a hand-written -log(softmax) loss, SGD (momentum 0.9) lr 0.05; the batch at step 43 "
             "is scaled x1000: a probability underflows to 0 and the loss is inf",
             lambda: MLP(lr=0.05, loss="naive"), _flat(step_faults={43: scaled_inputs(1000.0)}), epochs=4,
             onset=43, expect=("nonfinite_loss", "nonfinite_gradients"), reference="ref_mlp_naive",
             remediable=True, quick=True, prompt=True, cost=2),
    Scenario("label_noise", "fault",
             "3-layer ReLU MLP (512), Adam 1e-3, 750 training samples of which 50% get a random label; 20 epochs",
             lambda: MLP(lr=1e-3, optimizer="adam", hidden=512, depth=3), _flat(train_size=750, label_noise=0.5),
             epochs=20, onset=0, expect=("overfitting", "no_learning"),
             remedy={"PlateauAdvisor": {"stop_on_overfit": True}}, reference="ref_mlp_750", cost=10,
             causes=("label_noise",),
             note="Chosen from runs without the suite on seed 0's split: with all 1500 samples and 60% noise the MLP did not memorise "
                  "within 20 epochs (val loss flat near 0.9, no rise: nothing to call overfitting); on 750 samples "
                  "with 50% noise the val loss fell to 0.79 by epoch 7 and rose to 1.4 by epoch 25, while the "
                  "clean twin stayed near 0.11. No remedy cures noisy labels; `stop_on_overfit` stops early."),
    Scenario("tiny_train_set", "fault",
             "wide ReLU MLP (512), SGD (momentum 0.9) lr 0.05, on 64 training samples, batch 16, 40 epochs",
             lambda: MLP(lr=0.05, hidden=512), _flat(train_size=64, batch_size=16), epochs=40, onset=0,
             expect=("overfitting",), remedy={"PlateauAdvisor": {"stop_on_overfit": True}}, cost=3,
             causes=("too_little_data", "too_much_capacity"),
             note="The demo's `overfit` fault. No fault-free twin: early stopping limits the damage, it cannot "
                  "add data."),
    Scenario("needs_warmup", "fault",
             "post-LN transformer (4 layers) with Adam at lr 6e-3 and no warmup (the warmup study's setting)",
             _transformer(6e-3), _flat(), epochs=TRANSFORMER_EPOCHS, onset=0,
             expect=("divergence", "oscillation", "exploding_gradients", "nonfinite_loss", "no_learning"),
             remedy={"warmup_steps": 99}, reference="healthy_transformer_adam", remediable=True, cost=10,
             causes=("missing_warmup",),
             note="Warmup is preventive, so the remediated run is given `warmup_steps=99` (the untuned rule "
                  "2 / (1 - 0.98)) from the start: its recovery shows what warmup does, not a reaction to a "
                  "diagnosis."),
    Scenario("plateau", "fault",
             "ReLU MLP, Adam at lr 3e-2 (30x the usual 1e-3) for 14 epochs: the validation loss stalls at the "
             "noise floor of the high LR; a tenfold cut lowers it",
             lambda: MLP(lr=3e-2, optimizer="adam"), _flat(), epochs=14, onset=0,
             expect=("plateau", "oscillation", "divergence"), reference="ref_mlp_adam_14", remediable=True, cost=5,
             note="Chosen on seed 0 without the suite: at constant lr 3e-2 the val loss wandered between 0.16 and "
                  "0.45 after epoch 2 (0.261 at the end); the same run with the LR cut tenfold by hand at epoch 7 "
                  "ended at 0.125. (SGD at 0.2-0.3, Adam at 1e-2 and the CNN at 0.15 were tried first: no clear "
                  "plateau, or a divergence.) Expected kinds: those whose remedy is an LR cut."),
    Scenario("slow_data_loading", "fault",
             "ReLU MLP, SGD lr 0.05; the dataset's __getitem__ sleeps 1 ms (32 ms per batch, num_workers=0)",
             lambda: MLP(lr=0.05), _flat(sleep_s=0.001), epochs=2, limit_train_batches=30, onset=0,
             expect=("slow_data_loading",), cost=3, causes=("data_loader_bottleneck",)),
    # ---------------------------------------------------------------- healthy controls
    Scenario("healthy_mlp_adam", "healthy", "ReLU MLP (2 x 128), Adam lr 1e-3",
             lambda: MLP(lr=1e-3, optimizer="adam"), _flat(), epochs=4, quick=True, cost=2),
    Scenario("healthy_cnn_sgd", "healthy", "CNN, SGD (momentum 0.9) lr 0.05",
             lambda: CNN(lr=0.05), _digits(), epochs=4, quick=True, cost=2.5),
    Scenario("healthy_gru_adam", "healthy", "GRU (64) over the 8 rows of each digit, Adam lr 3e-3",
             lambda: RowsGRU(lr=3e-3), _digits(), epochs=4, cost=2.5),
    Scenario("healthy_transformer_adam", "healthy",
             "post-LN transformer (4 layers), Adam lr 6e-4 (the warmup scenario's model at a tenth of its LR)",
             _transformer(6e-4), _flat(), epochs=TRANSFORMER_EPOCHS, cost=10),
    Scenario("healthy_rnn_adam", "healthy",
             f"ReLU RNN (identity init), Adam 2e-3, on the adding problem of length {ADDING_LENGTH} (regression)",
             _rnn, lambda seed: AddingProblem(seed, ADDING_LENGTH), epochs=4, num_classes=None, cost=2.5),
    # ------------------------------------------------------- fault-free references
    Scenario("ref_mlp_sgd", "reference", "ReLU MLP (2 x 128), SGD (momentum 0.9) lr 0.05, 8 epochs",
             lambda: MLP(lr=0.05), _flat(), epochs=8, cost=3),
    Scenario("ref_mlp_adam_14", "reference", "ReLU MLP (2 x 128), Adam lr 1e-3, 14 epochs",
             lambda: MLP(lr=1e-3, optimizer="adam"), _flat(), epochs=14, cost=5),
    Scenario("ref_mlp_naive", "reference",
             "ReLU MLP with the hand-written -log(softmax) loss, SGD (momentum 0.9) lr 0.05, no faulty batch",
             lambda: MLP(lr=0.05, loss="naive"), _flat(), epochs=4, quick=True, cost=2),
    Scenario("ref_mlp_750", "reference", "label_noise's model and 750 samples with clean labels",
             lambda: MLP(lr=1e-3, optimizer="adam", hidden=512, depth=3), _flat(train_size=750), epochs=20,
             cost=10),
]

SCENARIOS: dict[str, Scenario] = {s.name: s for s in SCENARIO_LIST}

for _s in SCENARIO_LIST:
    if _s.reference is not None and _s.reference not in SCENARIOS:
        raise ValueError(f"{_s.name}: unknown reference {_s.reference!r}")
