"""Train and test loops shared by the centralized experiment and the Flower clients.

Mirrors ``task.py`` of Flower's quickstart-pytorch: plain functions over a model and numpy
arrays. For masked models only the scores (and optional BN affine) are parameters, so the
same loop trains a mask or, for the dense baseline, the weights.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

EVAL_BATCH = 500  # BN uses batch statistics at eval time: keep eval batches large and fixed.
OPTIMIZERS = ("sgd", "adam")
DEVICES = ("cpu", "cuda", "auto")


class DeviceError(ValueError):
    """``device=cuda`` where PyTorch sees no CUDA device."""


def resolve_device(name: str) -> str:
    """``auto``: CUDA when PyTorch sees a device, else the CPU; ``cuda`` without one is a
    ``DeviceError`` (never a silent fall back: the user asked for the GPU).

    Only local training and evaluation run there. Everything every party must agree on bit
    for bit (prototypes, masks, votes, replicated updates, digests) is computed in numpy on
    the CPU from what training returns, so a GPU client and a CPU client stay in step."""
    if name == "cpu":
        return "cpu"
    available = torch.cuda.is_available()
    if name == "cuda" and not available:
        raise DeviceError("device='cuda': PyTorch sees no CUDA device here (a CPU-only torch, "
                          "or no GPU); use --device auto or cpu")  # fmt: skip
    if name not in DEVICES:
        raise DeviceError(f"device={name!r}: use one of {', '.join(DEVICES)}")
    return "cuda" if available else "cpu"


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 1
    batch_size: int = 32
    lr: float = 0.1
    optimizer: str = "sgd"
    momentum: float = 0.9
    weight_decay: float = 0.0
    device: str = "cpu"  # where the local steps run (``resolve_device``); results come back here


def _tensors(x: np.ndarray, y: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Tensors sharing memory with the arrays; cached datasets are read-only, so copy those."""
    return (torch.from_numpy(np.require(x, np.float32, "CW")),
            torch.from_numpy(np.require(y, np.int64, "CW")))  # fmt: skip


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    return optimizer_for([p for p in model.parameters() if p.requires_grad], cfg)


def optimizer_for(params: list[torch.Tensor], cfg: TrainConfig) -> torch.optim.Optimizer:
    """The configured optimizer over bare tensors (also used for noise-mask scores)."""
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(
            params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay
        )
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    raise ValueError(f"unknown optimizer {cfg.optimizer!r}: use one of {', '.join(OPTIMIZERS)}")


def train(
    model: nn.Module, x: np.ndarray, y: np.ndarray, cfg: TrainConfig, *, seed: int = 0
) -> float:
    """Train in place for ``cfg.epochs``; return the mean training loss of the last epoch.

    On ``cfg.device`` (the model goes there and comes back to the CPU, where everything after
    training reads it)."""
    model.to(cfg.device)
    try:
        return train_loop(model, model, make_optimizer(model, cfg), x, y, cfg, seed=seed)
    finally:
        model.to("cpu")


def train_loop(
    model: nn.Module, forward: Callable[[torch.Tensor], torch.Tensor],
    opt: torch.optim.Optimizer, x: np.ndarray, y: np.ndarray, cfg: TrainConfig, *, seed: int,
) -> float:  # fmt: skip
    """The one local-training loop: ``forward(batch) -> logits``, ``opt`` steps what it holds.

    ``forward`` is the model itself for weights or masks, or a closure that builds the
    effective weights first (the evolving prototype's noise masks). Batches are shuffled
    by a seeded generator so a client's round is reproducible. A final batch of one sample
    is dropped: batch-statistics BN cannot normalise it. Returns the mean training loss of
    the last epoch.
    """
    xt, yt = _tensors(x, y)
    n = len(yt)
    if n == 0:
        return float("nan")
    gen = torch.Generator().manual_seed(seed)
    model.train()
    last = float("nan")
    for _ in range(cfg.epochs):
        order = torch.randperm(n, generator=gen)
        total, seen = 0.0, 0
        for start in range(0, n, cfg.batch_size):
            idx = order[start : start + cfg.batch_size]
            if len(idx) < 2 and seen > 0:
                continue
            opt.zero_grad(set_to_none=True)
            xb, yb = xt[idx].to(cfg.device), yt[idx].to(cfg.device)
            loss = F.cross_entropy(forward(xb), yb)
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
            seen += len(idx)
        last = total / max(1, seen)
        if not np.isfinite(last):  # a step size too large for this model: say so, send nothing
            raise TrainingDiverged(f"local training diverged (loss {last}); lower the learning "
                                   "rate (--lr, --dense-lr, --noise-lr or --pm-lr)")  # fmt: skip
    return last


class TrainingDiverged(RuntimeError):
    """The local loss became non-finite: the client fails its round (an error reply, counted
    as failed) instead of sending an update full of NaN."""


@torch.no_grad()
def evaluate(model: nn.Module, x: np.ndarray, y: np.ndarray, device: str = "cpu"
             ) -> tuple[float, float]:  # fmt: skip
    """Return ``(mean loss, accuracy)`` on the given arrays, in fixed-size eval batches (on
    ``device``; the model comes back to the CPU)."""
    xt, yt = _tensors(x, y)
    model.to(device)
    model.eval()
    loss_sum, correct = 0.0, 0
    try:
        for start in range(0, len(yt), EVAL_BATCH):
            xb = xt[start : start + EVAL_BATCH].to(device)
            yb = yt[start : start + EVAL_BATCH].to(device)
            logits = model(xb)
            loss_sum += float(F.cross_entropy(logits, yb, reduction="sum"))
            correct += int((logits.argmax(1) == yb).sum())
    finally:
        model.to("cpu")
    n = max(1, len(yt))
    return loss_sum / n, correct / n
