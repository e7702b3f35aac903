"""Probabilistic masks (FedPM, Isik et al. ICLR 2023): a Bernoulli mask per edge, learned.

Where edge-popup keeps the top-k scores, FedPM gives every edge of the frozen prototype a
probability ``theta = sigmoid(s)`` and draws the mask ``m ~ Bernoulli(theta)`` on every
forward pass; the straight-through estimator (``m + theta - theta.detach()``) passes the
gradient to ``theta``. A client starts from the server's probabilities (``s =
logit(theta)``), trains, and sends one mask sample. The server estimates the global
probabilities from the samples with a Beta posterior (``posterior_mean``).

Plain functions over numpy arrays, like ``evolving``: the model is the dense architecture
evaluated with ``functional_call`` on ``W_0 * m`` (the frozen prototype weights, never sent).
Below them, what both FedPM methods (``fedpm``, ``fedpm_bayes``) share: their option
(``--pm-lr``), a client's local round over the run's network (``evolving.network``), and how
the server evaluates (one network sampled from the probabilities) and files that sample.
"""

from __future__ import annotations

import numpy as np
import torch
from flwr.app import ArrayRecord
from torch import nn
from torch.func import functional_call

from pemn_fl import networks as N
from pemn_fl.config import RunSettings
from pemn_fl.methods.frames import evolving as E
from pemn_fl.methods.frames.replica import digest
from pemn_fl.options import Option
from pemn_fl.prototype import derived_seed
from pemn_fl.task import TrainConfig, optimizer_for, train_loop

Probs = list[np.ndarray]  # one flat float array per weight tensor, in parameter order
EPS = 1e-3  # probabilities are clamped to [EPS, 1 - EPS] before the logit (FedPM clamps too)


def logits(theta: Probs) -> list[np.ndarray]:
    """Scores whose sigmoid is ``theta`` (clamped so a unanimous vote stays learnable)."""
    out = []
    for t in theta:
        p = np.clip(np.asarray(t, dtype=np.float64), EPS, 1.0 - EPS)
        out.append((np.log(p) - np.log1p(-p)).astype(np.float32))
    return out


def posterior_mean(alpha: list[np.ndarray], beta: list[np.ndarray]) -> Probs:
    """``alpha / (alpha + beta)`` in float64, the same operations on every party."""
    return [
        np.asarray(a, dtype=np.float64) / (np.asarray(a, dtype=np.float64) + b)
        for a, b in zip(alpha, beta, strict=True)
    ]


def sample(theta: Probs, seed: int) -> list[np.ndarray]:
    """One Bernoulli mask per layer from ``theta`` (uint8 0/1), reproducible from ``seed``."""
    rng = np.random.default_rng(seed)
    return [(rng.random(t.size) < t).astype(np.uint8) for t in theta]


def coupled_sample(
    q: Probs, theta: Probs, seed: int
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """A sample of ``q`` and one of ``theta`` drawn with the *same* uniforms (shared randomness).

    ``m = [u < q]``, ``r = [u < theta]`` with ``u`` from ``seed``: each is an exact
    Bernoulli sample of its own probabilities, and they differ only where ``u`` falls
    between ``theta`` and ``q``, with probability ``|q - theta|``. A receiver that holds
    ``theta`` and the seed rebuilds ``r`` itself, so ``m`` costs only the entropy of
    ``m XOR r`` (KLMS's shared-randomness idea in its simplest form). Returns ``(m, r)``.
    """
    rng = np.random.default_rng(seed)
    m, r = [], []
    for qi, ti in zip(q, theta, strict=True):
        u = rng.random(np.asarray(ti).size)
        m.append((u < qi).astype(np.uint8))
        r.append((u < ti).astype(np.uint8))
    return m, r


def mode(theta: Probs) -> list[np.ndarray]:
    """The most likely mask (``theta > 1/2``): a reference both sides can compute."""
    return [np.asarray(t) > 0.5 for t in theta]


class _Bernoulli(torch.autograd.Function):
    """Forward: a Bernoulli sample of ``p``; backward: identity (straight-through)."""

    @staticmethod
    def forward(ctx, p: torch.Tensor, generator: torch.Generator) -> torch.Tensor:  # noqa: ANN001
        # Drawn on the CPU generator whatever the device: the same seed, the same masks.
        return torch.bernoulli(p.detach().cpu(), generator=generator).to(p.device)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:  # noqa: ANN001
        return grad, None


def train_prob_mask(
    model: nn.Module, weights: list[np.ndarray], theta: Probs, x: np.ndarray, y: np.ndarray,
    cfg: TrainConfig, *, seed: int,
) -> tuple[Probs, float]:  # fmt: skip
    """Learn edge probabilities from ``theta`` on frozen ``weights``; return (them, loss).

    The forward pass uses ``W_0 * m`` with ``m ~ Bernoulli(sigmoid(s))`` drawn anew every
    batch from a seeded generator, so a client's round is reproducible. What a client
    uploads is a sample of the returned probabilities (``sample`` or ``coupled_sample``).
    """
    names = [n for n, _ in model.named_parameters()]
    shapes = [tuple(p.shape) for _, p in model.named_parameters()]
    device = cfg.device  # training only; the probabilities come back to the CPU
    model.to(device)
    base = [torch.from_numpy(np.require(w, np.float32, "W")).view(s).to(device)  # W_0: read-only
            for w, s in zip(weights, shapes, strict=True)]  # fmt: skip
    scores = [torch.from_numpy(s).view(shape).clone().to(device).requires_grad_(True)
              for s, shape in zip(logits(theta), shapes, strict=True)]  # fmt: skip
    gen = torch.Generator().manual_seed(derived_seed(seed, "bernoulli"))

    def forward(batch: torch.Tensor) -> torch.Tensor:
        params = {}
        for name, w, s in zip(names, base, scores, strict=True):
            p = torch.sigmoid(s)
            params[name] = w * _Bernoulli.apply(p, gen)
        return functional_call(model, params, (batch,))

    try:
        last = train_loop(model, forward, optimizer_for(scores, cfg), x, y, cfg, seed=seed)
    finally:
        model.to("cpu")
    trained = [torch.sigmoid(s.detach().cpu()).reshape(-1).numpy().astype(np.float64)
               for s in scores]  # fmt: skip
    return trained, last


def masked_weights(weights: list[np.ndarray], mask: list[np.ndarray]) -> list[np.ndarray]:
    """``W_0 * m`` as float32 (to evaluate a sampled network with ``evolving.load_weights``)."""
    return [(w * m.astype(np.float32)).astype(np.float32)
            for w, m in zip(weights, mask, strict=True)]  # fmt: skip


# -- what fedpm and fedpm_bayes share ----------------------------------------------------
PM_LR = Option("pm-lr", 0.1, "Adam learning rate of the mask scores (FedPM's value)", low=0,
               low_open=True)  # fmt: skip


def train_config(settings: RunSettings, server_round: int = 1) -> TrainConfig:
    return TrainConfig(epochs=settings.local_epochs, batch_size=settings.batch_size,
                       lr=settings.scheduled(settings[PM_LR], server_round),
                       optimizer="adam", device=settings.torch_device)  # fmt: skip


def local_round(
    settings: RunSettings, theta: Probs, pid: int, n: int, server_round: int
) -> tuple[list[np.ndarray], float, int]:
    """Train probabilities from ``theta`` on partition ``pid``: (trained probs, loss, examples)."""
    x, y = N.client_data(settings, pid, n)
    q, loss = train_prob_mask(
        N.plain_model(settings), list(E.network(settings).initial), theta, x, y,
        train_config(settings, server_round),
        seed=derived_seed(settings.seed, f"batches/{pid}/{server_round}"),
    )  # fmt: skip
    return q, loss, len(y)


def sampled_mask(arrays: ArrayRecord) -> list[np.ndarray]:
    """The one network the server evaluates: a mask sampled from the probabilities, seeded by
    their digest (0/1 probabilities give back that very mask)."""
    theta = [a.astype(np.float64) for a in arrays.to_numpy_ndarrays()]
    seed = int.from_bytes(digest([a.astype(np.float32) for a in theta]), "little")
    return sample(theta, seed)


def install_sampled(model, weights: list[np.ndarray], arrays: ArrayRecord) -> None:  # noqa: ANN001
    """Evaluate one network sampled from the probabilities (seeded by their digest)."""
    E.load_weights(model, masked_weights(weights, sampled_mask(arrays)))


def compact(settings: RunSettings, arrays: ArrayRecord) -> ArrayRecord:
    """For ``model.pemn``: the evaluated sample as 0/1 probabilities (1 bit each in the file),
    which ``install_sampled`` turns back into the same network."""
    return ArrayRecord([m.astype(np.float32) for m in sampled_mask(arrays)])
