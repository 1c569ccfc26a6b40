"""Did a remedy act? The weights after a run compared with a bare run's, bit for bit."""

from __future__ import annotations

import lightning as L
import torch


def final_weights(make_model, callbacks, **trainer_kwargs) -> tuple[torch.Tensor, list[dict]]:
    """Fit a fresh model (seed 0) with ``callbacks``; return its flattened weights and every
    intervention the callbacks recorded."""
    L.seed_everything(0, verbose=False)
    model = make_model()
    trainer = L.Trainer(accelerator="cpu", enable_progress_bar=False, enable_model_summary=False,
                        callbacks=list(callbacks), **trainer_kwargs)
    trainer.fit(model)
    weights = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    return weights, [i for c in callbacks for i in c.records()["interventions"]]


def assert_no_action(make_model, make_callbacks, **trainer_kwargs) -> None:
    """With these Trainer arguments the callbacks record no intervention and the weights end
    exactly as without them (NaN where the bare run has NaN)."""
    bare, _ = final_weights(make_model, [], **trainer_kwargs)
    watched, interventions = final_weights(make_model, make_callbacks(), **trainer_kwargs)
    assert interventions == []
    torch.testing.assert_close(watched, bare, rtol=0, atol=0, equal_nan=True)
