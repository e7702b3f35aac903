"""A client's and the server's work as floating-point operations: counted, never timed.

The time model (``pemn_fl.timeline``) turns work into seconds with a device's throughput, so
that the same run gives the same seconds on any machine. The work itself is counted once
per model with PyTorch's own ``torch.utils.flop_counter.FlopCounterMode`` (every matrix
multiply and convolution of one forward pass over one example; element-wise operations,
masks' top-k and the optimiser step are left out, as FLOP counts conventionally do).

Training one example costs ``TRAIN_FLOPS_PER_FORWARD`` forward passes: the backward pass
computes a gradient for the activations and one for the weights, each about one forward
pass (the rule behind "6N FLOPs per token" of Kaplan et al., *Scaling Laws for Neural
Language Models*, 2020, section 2.1: 2N forward, 4N backward). A method that trains only
masks or scores still back-propagates through every layer, so the same rule serves it.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

TRAIN_FLOPS_PER_FORWARD = 3
# The server's aggregation: decoding a reply and adding it to the tally is a few operations
# per parameter. Counted as 2 per parameter and reply (a decode and an add): a model, not a
# count; at 10 replies of 10^5 parameters it is 2 * 10^6 FLOPs, microseconds on a server.
AGGREGATION_FLOPS_PER_PARAMETER = 2


def forward_flops(model: nn.Module, input_shape: tuple[int, ...]) -> int:
    """FLOPs of one forward pass of ``model`` over one example of ``input_shape``.

    Runs in evaluation mode without gradients, on a zero input, and restores the model's
    mode: counting changes nothing (BatchNorm's running statistics are left alone). The
    batch holds two examples (BatchNorm without running statistics needs more than one);
    every counted operation scales with the batch, so half the count is one example's.
    """
    was_training = model.training
    model.eval()
    try:
        device = next((p.device for p in model.parameters()), torch.device("cpu"))
        batch = torch.zeros((2, *input_shape), device=device)
        counter = FlopCounterMode(display=False)
        with torch.no_grad(), counter:
            model(batch)
        return int(counter.get_total_flops()) // 2
    finally:
        model.train(was_training)


def train_flops(forward: int, examples: int, epochs: int) -> int:
    """FLOPs of local training: ``epochs`` passes over ``examples``, each example's
    forward and backward pass (``TRAIN_FLOPS_PER_FORWARD`` forward passes)."""
    return TRAIN_FLOPS_PER_FORWARD * forward * examples * epochs


def server_flops(forward: int, test_examples: int, parameters: int, replies: int) -> int:
    """The server's work in one round: aggregating ``replies`` updates of ``parameters``
    each and evaluating the new model on ``test_examples`` (forward passes only)."""
    return AGGREGATION_FLOPS_PER_PARAMETER * parameters * replies + forward * test_examples
