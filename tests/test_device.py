"""GPU clients (``--device``, issue 19 §2), tested where there is no GPU: the choice is
resolved and refused clearly, training comes back to the CPU, and every party still agrees
bit for bit. Where PyTorch sees CUDA the last test trains there for real."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from pemn_fl.config import RunSettings, SettingsError
from pemn_fl.methods import names
from pemn_fl.task import DeviceError, resolve_device
from tests.harness import build_settings, first_round

SETTINGS = build_settings(dataset="synthetic", model="mlp", width=0.25, dense_width=0.25,
                       local_epochs=1, batch_size=64)  # fmt: skip

pytestmark = pytest.mark.usefixtures("flower_identity")


def test_auto_falls_back_to_the_cpu_and_cuda_without_one_is_refused() -> None:
    assert resolve_device("cpu") == "cpu"
    assert resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(DeviceError, match="no CUDA device"):
            resolve_device("cuda")
        with pytest.raises(SettingsError, match="device='cuda'.*use --device auto or cpu"):
            RunSettings(device="cuda")
    with pytest.raises(SettingsError, match="device='tpu'"):
        RunSettings(device="tpu")


def _round(name: str, settings: RunSettings) -> list[np.ndarray]:
    """Round 1 of ``name`` in-process; the server's new global arrays."""
    side, _, new = first_round(name, settings)
    assert side.strategy.rejected == 0
    assert all(p.device.type == "cpu" for p in side.model.parameters())
    return new.to_numpy_ndarrays()


# One method per training path: masked layers, dense weights, noise masks, probabilities,
# compressed dense updates.
PATHS = ("pemn", "fedavg", "evolve_dither", "fedpm_bayes", "qsgd")


@pytest.mark.parametrize("name", PATHS)
def test_auto_on_this_machine_changes_nothing(name: str) -> None:
    """``auto`` resolves to this machine's device; on a CPU-only machine the round is the
    CPU round exactly (the setting travels, nothing else changes)."""
    if torch.cuda.is_available():
        pytest.skip("auto is CUDA here: the CUDA test below covers it")
    plain = _round(name, SETTINGS)
    auto = _round(name, dataclasses.replace(SETTINGS, device="auto"))
    assert all(np.array_equal(a, b) for a, b in zip(plain, auto, strict=True))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
@pytest.mark.parametrize("name", names())
def test_cuda_clients_keep_every_party_in_step(name: str) -> None:
    """Trained on the GPU, a round still aggregates without a refused reply (replicated
    methods check the digest of their state against the server's), and the global arrays
    come back to the CPU."""
    arrays = _round(name, dataclasses.replace(SETTINGS, device="cuda"))
    assert all(np.isfinite(a).all() for a in arrays if a.dtype.kind == "f")
