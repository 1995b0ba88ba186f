"""A plain PyTorch training loop run by the kernel's session (run config `entrypoint =
"regression:train"`): a small MLP with dropout fits a noisy function on data generated from
the seed (nothing is downloaded), with AdamW, a cosine LR schedule and a shuffling loader.

The session supplies what the loop would otherwise lose at Kaggle's 12-hour wall: resume
(the state below plus the RNG streams), the stop before the deadline, checkpoints, logs.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.utils.data import TensorDataset

from kernel_template.loader import ResumableLoader

DEFAULTS = {
    "samples": 512,
    "features": 8,
    "hidden": 32,
    "dropout": 0.1,
    "batch_size": 32,
    "lr": 3e-3,
    "input_noise": 0.01,
}


def make_dataset(seed: int, samples: int, features: int) -> TensorDataset:
    """y = sin(x . w) + noise, drawn from the seed alone."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(samples, features, generator=generator)
    w = torch.randn(features, generator=generator)
    y = torch.sin(x @ w) + 0.05 * torch.randn(samples, generator=generator)
    return TensorDataset(x, y.unsqueeze(1))


def build(params: dict, seed: int, total_steps: int):
    """Model, optimizer, scheduler and loader, the same in every session."""
    p = {**DEFAULTS, **params}
    torch.manual_seed(seed)
    model = nn.Sequential(
        nn.Linear(p["features"], p["hidden"]),
        nn.ReLU(),
        nn.Dropout(p["dropout"]),
        nn.Linear(p["hidden"], 1),
    )
    optimizer = torch.optim.AdamW(model.parameters(), lr=p["lr"])
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total_steps)
    dataset = make_dataset(seed, p["samples"], p["features"])
    loader = ResumableLoader(dataset, p["batch_size"], seed=seed, shuffle=True)
    return model, optimizer, scheduler, loader, p


def train(session) -> None:
    config = session.config
    model, optimizer, scheduler, loader, p = build(
        session.params, config.seed, config.total_timesteps
    )
    state = session.resume()  # after building: it restores the RNG streams too
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        loader.load_state_dict(state["loader"])

    def snapshot(step: int) -> dict:
        return {
            "step": step,
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "loader": loader.state_dict(),
        }

    model.train()
    for step in session.steps(state["step"] if state else 0):
        x, y = loader.next_batch()
        x = x + torch.from_numpy(np.random.normal(0.0, p["input_noise"], x.shape)).float()
        loss = nn.functional.mse_loss(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        scheduler.step()
        session.log(step, loss=loss.item(), lr=scheduler.get_last_lr()[0])
        if session.should_checkpoint(step):
            session.checkpoint(step, snapshot(step))
            session.export_best(model.state_dict(), -loss.item(), step)
    session.checkpoint(session.step, snapshot(session.step))
