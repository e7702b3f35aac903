"""One PEMN-FL client round on real (synthetic) data, without Flower in the way."""

from __future__ import annotations

import numpy as np
import pytest

from pemn_fl import networks as N
from pemn_fl.codec import MaskPayloadError, decode_mask, encode_mask
from pemn_fl.config import RunSettings, SettingsError
from pemn_fl.masked import num_kept
from pemn_fl.methods import options, settings_from
from pemn_fl.methods.frames import frozen
from tests.harness import build_settings


def _settings(**kw: object) -> RunSettings:
    base = dict(dataset="synthetic", model="mlp", width=0.25, lr=0.5, local_epochs=1)
    return build_settings(**{**base, **kw})


@pytest.mark.parametrize("client_init", ["stateless", "stateful"])
def test_client_round_trains_from_the_global_mask_and_replies_a_valid_delta(
    client_init: str,
) -> None:
    s = _settings(client_init=client_init)
    _, proto = N.masked_model(s)
    g0 = frozen.initial_mask(s)
    down = encode_mask(g0, fingerprint=proto.fingerprint, reference=g0, reference_id=0)
    result = frozen.client_round(s, 0, 4, down, {}, 0, None, 1)
    assert [r.tolist() for r in result.received] == [g.tolist() for g in g0]
    update = decode_mask(result.payload, fingerprint=proto.fingerprint,
                         layer_sizes=proto.layer_sizes, references={0: g0})  # fmt: skip
    for layer in update:
        assert int(layer.sum()) == num_kept(layer.size, s[N.KEEP])
    flipped = sum(int((u != g).sum()) for u, g in zip(update, g0, strict=True))
    assert flipped > 0  # training moved the mask
    assert result.num_examples > 0 and np.isfinite(result.train_loss)
    # A delta against the mask both sides hold beats the packed mask.
    assert len(result.payload) < sum(proto.layer_sizes) / 8


def test_stateful_round_reuses_scores() -> None:
    s = _settings(client_init="stateful")
    _, proto = N.masked_model(s)
    g0 = frozen.initial_mask(s)
    down = encode_mask(g0, fingerprint=proto.fingerprint)
    first = frozen.client_round(s, 1, 4, down, {}, 0, None, 1)
    second = frozen.client_round(s, 1, 4, down, {}, 0, first.scores, 2)
    assert all(a.shape == b.shape for a, b in zip(first.scores, second.scores, strict=True))


def test_prototype_mismatch_is_a_clear_payload_error() -> None:
    s = _settings()
    other = _settings(seed=99)
    _, proto_other = N.masked_model(other)
    payload = encode_mask(frozen.initial_mask(other), fingerprint=proto_other.fingerprint)
    with pytest.raises(MaskPayloadError, match="fingerprint"):
        frozen.client_round(s, 0, 4, payload, {}, 0, None, 1)


def test_initial_mask_is_derived_not_sent() -> None:
    a, b = frozen.initial_mask(_settings()), frozen.initial_mask(_settings(lr=0.1))
    c = frozen.initial_mask(_settings(seed=5))
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c, strict=True))


def test_run_config_round_trip_and_errors() -> None:
    s = _settings(keep=0.3, prototype="rp:1e-2")
    assert settings_from(s.to_run_config()) == s
    with pytest.raises(SettingsError, match="unknown setting"):
        settings_from({"kep": 0.3})
    with pytest.raises(SettingsError, match="keep"):
        _settings(keep=1.5)
    with pytest.raises(SettingsError, match="rp:abc"):
        _settings(prototype="rp:abc")
    with pytest.raises(SettingsError, match="num-server-rounds"):
        settings_from({"num-server-rounds": "x"})


def test_pyproject_app_config_matches_run_settings() -> None:
    """`flwr run .` reads [tool.flwr.app.config]: it must hold every shared setting and every
    registered method's options, with their declared defaults (no drift from the code)."""
    import tomllib
    from pathlib import Path

    pyproject = Path(__file__).resolve().parents[1] / "pyproject.toml"
    config = tomllib.loads(pyproject.read_text())["tool"]["flwr"]["app"]["config"]
    declared = options()
    shared = {k: v for k, v in RunSettings().to_run_config().items() if k not in declared}
    assert set(config) == set(shared) | set(declared)
    for name, option in declared.items():
        assert config[name] == option.default, name
    settings_from(config)  # validates every value
