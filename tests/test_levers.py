"""The levers of the accuracy study, offered to every method alike (issue 16 §5): a step-size
schedule and compact replies. Known answers, and every party still agreeing."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from pemn_fl import transport
from pemn_fl.config import COSINE_FLOOR, RunSettings, SettingsError
from pemn_fl.methods import messages as M
from pemn_fl.methods import names
from tests.harness import build_settings, first_round

SETTINGS = build_settings(dataset="synthetic", model="mlp", width=0.25, dense_width=0.25,
                       local_epochs=1, batch_size=64, num_server_rounds=5)  # fmt: skip

pytestmark = pytest.mark.usefixtures("flower_identity")


def test_the_cosine_schedule_decays_every_step_to_a_tenth() -> None:
    cosine = dataclasses.replace(SETTINGS, lr_schedule="cosine")
    assert cosine.scheduled(2.0, 1) == pytest.approx(2.0)
    assert cosine.scheduled(2.0, 3) == pytest.approx(2.0 * (COSINE_FLOOR + 0.9 * 0.5))
    assert cosine.scheduled(2.0, 5) == pytest.approx(2.0 * COSINE_FLOOR)
    assert [SETTINGS.scheduled(0.3, r) for r in (1, 3, 5)] == [0.3, 0.3, 0.3]  # exact
    with pytest.raises(SettingsError, match="lr-schedule='linear'"):
        RunSettings(lr_schedule="linear")


def test_the_evolving_noise_follows_the_schedule_on_every_party() -> None:
    from pemn_fl.methods import evolve

    cosine = dataclasses.replace(SETTINGS, lr_schedule="cosine")
    for r in (1, 5):
        plain, decayed = evolve.noise(SETTINGS, r), evolve.noise(cosine, r)
        factor = cosine.scheduled(1.0, r)
        for a, b in zip(plain, decayed, strict=True):
            assert b == pytest.approx(a * factor, rel=1e-6)


def _one_round(name: str, settings: RunSettings):  # noqa: ANN202
    """Round 1 of method ``name`` on 3 nodes, in-process: (replies, aggregate)."""
    side, replies, new = first_round(name, settings)
    assert side.strategy.rejected == 0
    return replies, new


@pytest.mark.parametrize("name", [n for n in names() if n != "fedavg"])
def test_compact_replies_carry_the_same_update_in_one_request_less(name: str) -> None:
    compact = dataclasses.replace(SETTINGS, compact_replies=True)
    split_replies, split_new = _one_round(name, SETTINGS)
    compact_replies, compact_new = _one_round(name, compact)
    for split, small in zip(split_replies, compact_replies, strict=True):
        assert set(small.content.keys()) == {M.UPDATE}
        assert set(split.content.keys()) == {M.UPDATE, M.METRICS}
        assert M.metrics_of(small)[M.NUM_EXAMPLES] == M.metrics_of(split)[M.NUM_EXAMPLES]
        payload = {k: v for k, v in small.content[M.UPDATE].items()
                   if k not in (M.NUM_EXAMPLES, M.TRAIN_LOSS)}  # fmt: skip
        assert payload == dict(split.content[M.UPDATE])  # the same update
        # One object (and its push-object request, ~1 KB of headers) less on the wire.
        saved = transport.uplink_wire_bytes(split) - transport.uplink_wire_bytes(small)
        assert 700 < saved < 2000, saved
    for a, b in zip(split_new.to_numpy_ndarrays(), compact_new.to_numpy_ndarrays(), strict=True):
        assert np.array_equal(a, b)  # the server aggregates exactly the same
