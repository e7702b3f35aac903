"""Client score initialisation: how a client turns the global mask into trainable scores.

Every round a client receives the global mask ``g`` and must start edge-popup from scores
whose top-k *is* ``g`` (otherwise its very first forward pass would use another network).
How it fills in the rest -- the magnitudes -- decides how far local training can move.

* ``stateless`` (``scores_from_mask``): nothing is remembered between rounds. Kept edges
  get ``b * (1 + margin + u)``, dropped edges ``b * u`` with ``u ~ U(0, 1)`` seeded and
  ``b`` the layer's score scale. ``margin`` is the gap a gradient step must cross before a
  bit flips: larger margin, fewer flips, fewer bytes, slower learning.
* ``stateful`` (``realign``): the node keeps its own real-valued scores in
  ``Context.state`` (they never travel) and projects them onto ``g`` with the smallest
  change: edges where its own top-k agrees with ``g`` keep their magnitude; an edge ``g``
  keeps but the client dropped is lifted just above the client's threshold, one it kept but
  ``g`` dropped is lowered just below. A client whose data still wants an edge flips it
  back after a few steps, so its votes stay consistent from round to round and the
  server's score state can accumulate them. ``eps`` (the run's ``margin``, at least 1e-3) is
  the relative distance across the threshold: a hysteresis that keeps SGD noise from
  flipping (and re-sending) edges the client only weakly prefers.
"""

from __future__ import annotations

import torch

from pemn_fl.prototype import LayerShape


def score_scale(shape: tuple[int, ...]) -> float:
    """Magnitude of freshly initialised scores (kaiming-uniform bound 1/sqrt(fan_in))."""
    return 1.0 / max(1, LayerShape("", shape).fan_in) ** 0.5


def scores_from_mask(
    mask: torch.Tensor, margin: float, generator: torch.Generator
) -> torch.Tensor:
    """Stateless init: scores whose top-k is exactly ``mask`` (bool, the layer's shape)."""
    b = score_scale(tuple(mask.shape))
    u = torch.rand(mask.shape, generator=generator)
    return b * (u + mask.float() * (1.0 + margin))


def realign(scores: torch.Tensor, mask: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
    """Stateful init: minimally change ``scores`` so that top-k of ``|scores|`` is ``mask``.

    Magnitudes of agreeing edges are untouched; disagreeing edges move to just across the
    client's own threshold (``tau * (1 +- eps)``), signs are kept.
    """
    a = scores.detach().abs().flatten()
    g = mask.flatten()
    k = int(g.sum())
    if k == 0 or k == a.numel():
        return scores.detach().clone()
    top = torch.topk(a, k)
    tau = top.values[-1].clamp_min(1e-12)
    own = torch.zeros_like(g)
    own[top.indices] = True
    hi, lo = tau * (1.0 + eps), tau * (1.0 - eps)
    # Only disagreeing edges move; dropped edges tied at tau go below it so the split is strict.
    new = torch.where(
        g,
        torch.where(own, a, torch.maximum(a, hi)),
        torch.where(a >= tau, torch.minimum(a, lo), a),
    )
    sign = torch.where(scores.detach().flatten() < 0, -1.0, 1.0)
    return (sign * new).view_as(scores)
