"""A user loop with early stopping, shipped as a user module (`plateau:train`): its
"validation loss" falls until step 80, then stays flat, and after `patience` steps without
improvement the loop calls `session.stop_early`. Deterministic, so a test knows where it stops."""

from __future__ import annotations

import torch


def validation_loss(step: int) -> float:
    return max(0.2, 1.0 - step / 100)


def train(session) -> None:
    patience = int(session.params.get("patience", 40))
    state = session.resume() or {
        "step": 0,
        "weight": torch.zeros(4),
        "best": float("inf"),
        "since_best": 0,
    }
    for step in session.steps(state["step"]):
        state["weight"] += 0.01  # stands in for an optimizer step
        state["step"] = step
        loss = validation_loss(step)
        if loss < state["best"]:
            state["best"], state["since_best"] = loss, 0
        else:
            state["since_best"] += 1
        session.log(step, loss=loss)
        if session.should_checkpoint(step):
            session.checkpoint(step, state)
        if state["since_best"] >= patience:
            session.stop_early(f"validation loss flat for {patience} steps")
            break
    session.checkpoint(session.step, state)
