"""Faulty and hostile replies, in-process on real Flower Messages: each is rejected and
logged, the round goes on with the others, and the sender is not shut out afterwards."""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import ConfigRecord, Message, RecordDict
from flwr.common.constant import SUPERLINK_NODE_ID

from pemn_fl.codec import inspect_payload
from pemn_fl.methods import evolve_dither, fedavg, pemn, qsgd
from pemn_fl.methods.frames import mask_voting
from pemn_fl.sampling import RoundSampler
from tests.harness import build_settings, changed, context, run_rounds, scheduled, stamp
from tests.harness import contexts as harness_contexts

SETTINGS = build_settings(dataset="synthetic", model="mlp", width=0.25, dense_width=0.25,
                       local_epochs=1, min_nodes=1)  # fmt: skip
PARTITIONS = 3


pytestmark = pytest.mark.usefixtures("flower_identity")


def _setup(module):  # noqa: ANN001, ANN202
    side = scheduled(module, SETTINGS, PARTITIONS)
    contexts = harness_contexts(PARTITIONS)
    return side, contexts


def _round(module, side, contexts, r: int, spoil=None, tamper=None):  # noqa: ANN001, ANN202
    """One round; ``spoil(reply)`` tampers with node 100's reply (``tamper`` as
    ``run_rounds`` takes it with any). Returns the sent messages and the new arrays."""

    def at_node_100(r: int, reply: Message) -> Message:
        if reply.metadata.src_node_id == 100:
            spoil(reply)
        return reply

    arrays = side.initial if r == 1 else side.strategy.last  # type: ignore[attr-defined]
    (one,) = run_rounds(side.strategy, [r], module.METHOD.client_step, contexts, SETTINGS, arrays,
                        tamper=at_node_100 if spoil is not None else tamper)  # fmt: skip
    side.strategy.last = one.arrays if one.arrays is not None else arrays  # type: ignore[attr-defined]
    return one.sent, one.arrays


def test_a_rejected_pemn_reply_does_not_shut_the_client_out() -> None:
    side, contexts = _setup(pemn)
    _round(pemn, side, contexts, 1)
    _round(pemn, side, contexts, 2)  # node 100 now provably holds version 1

    def garbage(reply: Message) -> None:
        reply.content["update"]["mask"] = b"garbage"

    _round(pemn, side, contexts, 3, spoil=garbage)  # it received version 2, its reply is lost
    assert side.strategy.rejected == 1
    # Round 4: the server no longer assumes node 100 holds version 1 (it holds 2 now), so it
    # sends a mask the node can decode (against version 0, which every node derives from the
    # seed, or packed), and the reply counts again. Before the fix the delta was against
    # version 1, the node failed to decode it, and it stayed out until version 1 left the
    # server's history.
    for r in (4, 5):
        sent, _ = _round(pemn, side, contexts, r)
        assert side.strategy.rejected == 0, r
    header = inspect_payload(bytes(next(m for m in sent if m.metadata.dst_node_id == 100)
                                   .content["config"]["mask"]))  # fmt: skip
    assert header.reference_id == 3  # round 5: a delta against what its round-4 reply proved


@pytest.mark.parametrize("module", [pemn, evolve_dither, qsgd, fedavg])
@pytest.mark.parametrize("value", [float("inf"), float("nan"), 2.0**63, -1.0, 2.5, 1e9])
def test_absurd_num_examples_are_rejected(module, value: float) -> None:  # noqa: ANN001
    side, contexts = _setup(module)

    def lie(reply: Message) -> None:
        reply.content["metrics"]["num-examples"] = value

    _, new = _round(module, side, contexts, 1, spoil=lie)
    assert side.strategy.rejected == 1 and new is not None
    assert all(np.isfinite(a).all() for a in new.to_numpy_ndarrays())


def _fedavg_spoilers():  # noqa: ANN202
    def wrong_keys(reply: Message) -> None:
        arrays = reply.content["arrays"]
        key = next(iter(arrays))
        arrays["not-a-layer"] = arrays[key]
        del arrays[key]

    def wrong_shape(reply: Message) -> None:
        arrays = reply.content["arrays"]
        key = next(iter(arrays))
        from flwr.app import Array

        arrays[key] = Array(np.zeros(3, dtype=np.float32))

    def nan(reply: Message) -> None:
        arrays = reply.content["arrays"]
        key = next(iter(arrays))
        from flwr.app import Array

        bad = arrays[key].numpy().copy()
        bad.flat[0] = np.nan
        arrays[key] = Array(bad)

    def no_arrays(reply: Message) -> None:
        del reply.content["arrays"]

    return [wrong_keys, wrong_shape, nan, no_arrays]


@pytest.mark.parametrize("spoil", _fedavg_spoilers(), ids=lambda f: f.__name__)
def test_fedavg_rejects_a_bad_reply_and_goes_on(spoil) -> None:  # noqa: ANN001
    side, contexts = _setup(fedavg)
    _, new = _round(fedavg, side, contexts, 1, spoil=spoil)
    assert side.strategy.rejected == 1 and new is not None
    assert all(np.isfinite(a).all() for a in new.to_numpy_ndarrays())
    # The next round runs normally, all three replies counted.
    _round(fedavg, side, contexts, 2)
    assert side.strategy.rejected == 0


def _scheduled_rounds(schedule: dict[int, list[int]]):  # noqa: ANN202
    side = scheduled(pemn, SETTINGS, PARTITIONS, schedule)
    ctxs = harness_contexts(PARTITIONS)
    sent_log = {}
    for one in run_rounds(side.strategy, sorted(schedule), pemn.METHOD.client_step, ctxs,
                          SETTINGS):  # fmt: skip
        assert side.strategy.rejected == 0, one.r
        sent_log[one.r] = {m.metadata.dst_node_id: m for m in one.sent}
    return side, ctxs, sent_log


def test_a_node_back_after_missed_rounds_gets_a_delta_against_what_it_holds() -> None:
    # Node 100 trains in rounds 1 and 2 (so it holds version 1), misses 3-5, returns in 6.
    schedule = {1: [0, 1, 2], 2: [0, 1, 2], 3: [1, 2], 4: [1, 2], 5: [1, 2], 6: [0, 1, 2]}
    side, ctxs, sent = _scheduled_rounds(schedule)
    header = inspect_payload(bytes(sent[6][100].content["config"]["mask"]))
    assert header.encoding == "delta" and header.reference_id == 1
    # The node decoded it (no rejection above) and now holds the version it was sent.
    assert int(ctxs[100].state["pemn-global-id"]["id"]) == 5


def test_past_the_history_a_returning_node_gets_the_packed_mask(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(mask_voting, "HISTORY", 2)
    schedule = {1: [0, 1, 2], 2: [0, 1, 2], 3: [1, 2], 4: [1, 2], 5: [1, 2], 6: [0, 1, 2]}
    side, ctxs, sent = _scheduled_rounds(schedule)
    header = inspect_payload(bytes(sent[6][100].content["config"]["mask"]))
    # Version 1 left the server's history, and version 0 too: the packed mask is what remains.
    assert header.encoding == "packed"


def test_stateful_clients_carry_their_own_scores() -> None:
    schedule = {1: [0, 1, 2], 2: [0, 1, 2]}
    _, ctxs, _ = _scheduled_rounds(schedule)
    scores_after_2 = ctxs[100].state["pemn-scores"].to_numpy_ndarrays()
    # Real-valued scores, not a 0/1 image of a mask: the client's own learning is kept.
    assert any(len(np.unique(s)) > 2 for s in scores_after_2)


# -- fault injection ---------------------------------------------------------------------
def _message(server_round: int) -> Message:
    from flwr.app import ArrayRecord

    content = RecordDict({"config": ConfigRecord({"server-round": server_round,
                                                  "mask": b"\x00" * 64}),
                          "arrays": ArrayRecord([np.zeros(16, dtype=np.float32)])})  # fmt: skip
    return Message(content=content, dst_node_id=100, message_type="train.pemn")


def test_fault_draws_are_seeded_by_round_and_hit_their_rates() -> None:
    import dataclasses

    from pemn_fl import faults

    settings = dataclasses.replace(SETTINGS, drop_rate=0.2, corrupt_rate=0.3)
    ctx = _setup(pemn)[1][100]
    draws = [faults.draw(settings, ctx, "pemn", _message(r))[0] for r in range(1, 4001)]
    again = [faults.draw(settings, ctx, "pemn", _message(r))[0] for r in range(1, 4001)]
    assert draws == again  # the same round gives the same fault, whatever happened before
    assert draws.count("drop") / 4000 == pytest.approx(0.2, abs=0.03)
    assert draws.count("corrupt") / 4000 == pytest.approx(0.3, abs=0.03)
    clean = dataclasses.replace(SETTINGS)
    assert faults.draw(clean, ctx, "pemn", _message(1)) == (None, 0)


def test_corrupt_flips_exactly_one_bit_of_each_payload() -> None:
    from pemn_fl import faults

    msg = _message(1)
    before_mask = bytes(msg.content["config"]["mask"])
    faults.corrupt(msg, seed=5)
    after_mask = bytes(msg.content["config"]["mask"])
    flipped = sum(bin(a ^ b).count("1") for a, b in zip(before_mask, after_mask, strict=True))
    raw = msg.content["arrays"].to_numpy_ndarrays()[0].view(np.uint8)
    assert flipped == 1 and int(np.unpackbits(raw).sum()) == 1


# -- Byzantine clients -------------------------------------------------------------------
def test_byzantine_clients_are_a_fixed_seeded_share() -> None:
    import dataclasses

    from pemn_fl import faults

    for share, n, expected in [(0.0, 20, 0), (0.1, 20, 2), (0.2, 20, 4), (0.3, 20, 6),
                               (0.2, 3, 1), (0.1, 3, 0)]:  # fmt: skip
        settings = dataclasses.replace(SETTINGS, methods="pemn,fedavg", byzantine=share)
        chosen = [p for p in range(n) if faults.is_byzantine(settings, p, n)]
        assert len(chosen) == expected, (share, n)
        assert chosen == [p for p in range(n) if faults.is_byzantine(settings, p, n)]
    a = dataclasses.replace(SETTINGS, methods="pemn", byzantine=0.3)
    b = dataclasses.replace(SETTINGS, methods="pemn", byzantine=0.3, seed=1)
    assert {p for p in range(20) if faults.is_byzantine(a, p, 20)} != {
        p for p in range(20) if faults.is_byzantine(b, p, 20)}


@pytest.mark.parametrize("options, words", [
    ({"byzantine": 0.5}, "[0, 0.5)"),
    ({"byzantine": -0.1}, "[0, 0.5)"),
    ({"byzantine": 0.2, "methods": "fedpm,fedavg"}, "no attack is defined for fedpm"),
    ({"robust": "krum"}, "robust"),
])  # fmt: skip
def test_bad_byzantine_settings_are_clear_errors(options: dict[str, object], words: str) -> None:

    from pemn_fl.config import SettingsError

    with pytest.raises(SettingsError, match=words.replace("[", r"\[").replace(")", r"\)")):
        changed(SETTINGS, **options)


def test_a_byzantine_pemn_client_sends_the_complement_of_its_mask() -> None:
    import dataclasses

    from pemn_fl import networks as N
    from pemn_fl.codec import decode_mask, encode_mask
    from pemn_fl.methods.frames import frozen

    settings = dataclasses.replace(SETTINGS, methods="pemn")
    _, proto = N.masked_model(settings)
    start = frozen.initial_mask(settings)
    down = encode_mask(start, fingerprint=proto.fingerprint)
    sent = {}
    for invert in (False, True):
        result = frozen.client_round(settings, 0, PARTITIONS, down, {}, 0, None, 1, invert=invert)
        sent[invert] = decode_mask(
            result.payload, fingerprint=proto.fingerprint, layer_sizes=proto.layer_sizes,
            references={0: start},
        )
    for honest, attack in zip(sent[False], sent[True], strict=True):
        np.testing.assert_array_equal(attack, ~honest)


@pytest.mark.parametrize("module_name", ["evolve", "evolve_lattice"])
def test_a_byzantine_evolve_client_votes_against_its_noise_mask(module_name: str) -> None:
    import dataclasses
    import importlib

    from pemn_fl import faults
    from pemn_fl.levels_codec import decode_levels

    module = importlib.import_module(f"pemn_fl.methods.{module_name}")
    honest_settings = dataclasses.replace(SETTINGS, methods=module_name)
    settings = dataclasses.replace(honest_settings, byzantine=0.34)
    attacker = next(p for p in range(PARTITIONS) if faults.is_byzantine(settings, p, PARTITIONS))
    side, _ = _setup(module)
    msg = next(m for m in side.strategy.configure_train(1, side.initial, ConfigRecord(), None)
               if m.metadata.dst_node_id == 100 + attacker)  # type: ignore[arg-type]  # fmt: skip
    stamp(msg, SUPERLINK_NODE_ID)
    signed = module.METHOD.name == "evolve_lattice"
    sent = []
    for s in (honest_settings, settings):
        ctx = context(attacker, PARTITIONS)
        payload = bytes(module.METHOD.client_step(msg, ctx, s).content["update"]["mask"])
        net = side.strategy.net  # type: ignore[attr-defined]
        sent.append(decode_levels(payload, fingerprint=net.fingerprint, tag=1,
                                  layer_sizes=net.sizes, max_level=2 if signed else 1))  # fmt: skip
    for honest, attack in zip(*sent, strict=True):
        if signed:  # ternary {-1, 0, 1} travels as {0, 1, 2}: negation is 2 - level
            np.testing.assert_array_equal(attack, 2 - honest)
        else:
            np.testing.assert_array_equal(attack, 1 - honest)
        assert honest.min() < honest.max()  # a real mask, not a constant


def test_a_byzantine_fedavg_client_sends_its_update_negated_and_scaled() -> None:
    import dataclasses

    from pemn_fl import faults

    honest_settings = dataclasses.replace(SETTINGS, methods="fedavg")
    settings = dataclasses.replace(honest_settings, byzantine=0.34)  # 1 of 3 partitions
    attacker = next(p for p in range(PARTITIONS) if faults.is_byzantine(settings, p, PARTITIONS))
    side, contexts = _setup(fedavg)
    msg = next(m for m in side.strategy.configure_train(1, side.initial, ConfigRecord(), None)
               if m.metadata.dst_node_id == 100 + attacker)  # type: ignore[arg-type]  # fmt: skip
    stamp(msg, SUPERLINK_NODE_ID)
    ctx = contexts[100 + attacker]
    honest = fedavg.client_step(msg, ctx, honest_settings).content["arrays"].to_numpy_ndarrays()
    attack = fedavg.client_step(msg, ctx, settings).content["arrays"].to_numpy_ndarrays()
    for w0, h, a in zip(side.initial.to_numpy_ndarrays(), honest, attack, strict=True):
        np.testing.assert_allclose(a - w0, -faults.ATTACK_SCALE * (h - w0), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("robust, kind", [("median", "FedMedian"),
                                          ("trimmed-mean", "FedTrimmedAvg")])  # fmt: skip
def test_robust_fedavg_is_flowers_own_strategy_and_shrugs_off_an_outlier(
    robust: str, kind: str
) -> None:

    from flwr.serverapp import strategy as flower

    settings = changed(SETTINGS, methods="fedavg", robust=robust)
    n = 5
    side = fedavg.METHOD.server(settings, RoundSampler({p: 100 + p for p in range(n)}, 1.0, 0))
    assert isinstance(side.strategy, getattr(flower, kind))
    received = []  # each reply's arrays as the server gets them (aggregating pops them)

    def outlier(r: int, reply: Message) -> Message:
        arrays = reply.content["arrays"]
        if reply.metadata.src_node_id == 100:  # one client sends a huge, finite model:
            for key in arrays:  # it passes every check
                arrays[key] = type(arrays[key])(arrays[key].numpy() * 1e6)
        received.append(arrays.to_numpy_ndarrays())
        return reply

    (one,) = run_rounds(side.strategy, [1], fedavg.client_step, harness_contexts(n), settings,
                        side.initial, tamper=outlier)  # fmt: skip
    new = one.arrays
    stacked = [np.stack(layer) for layer in zip(*received, strict=True)]
    assert side.strategy.rejected == 0
    for got, layer in zip(new.to_numpy_ndarrays(), stacked, strict=True):
        if robust == "median":
            np.testing.assert_allclose(got, np.median(layer, axis=0), rtol=1e-6, atol=1e-7)
        honest_range = np.abs(layer[1:]).max()
        assert np.abs(got).max() <= honest_range + 1e-6  # the outlier moved nothing
    mean = np.mean(stacked[0], axis=0)
    assert np.abs(mean).max() > 1e3  # while a plain mean would have been ruined


# -- stragglers --------------------------------------------------------------------------
def test_a_pemn_node_whose_reply_never_came_is_not_sent_a_delta_it_cannot_decode() -> None:
    side, contexts = _setup(pemn)
    _round(pemn, side, contexts, 1)
    _round(pemn, side, contexts, 2)  # node 100 provably holds version 1
    # Round 3: node 100 trains (so it now holds version 2) but its reply misses the deadline.
    _round(pemn, side, contexts, 3,
           tamper=lambda r, reply: None if reply.metadata.src_node_id == 100 else reply)
    # Round 4: no delta against version 1 (which the node no longer holds): it decodes.
    sent, _ = _round(pemn, side, contexts, 4)
    assert side.strategy.rejected == 0
    header = inspect_payload(bytes(next(m for m in sent if m.metadata.dst_node_id == 100)
                                   .content["config"]["mask"]))  # fmt: skip
    assert header.reference_id != 1


def test_straggler_draws_and_their_deadline_setting() -> None:
    import dataclasses

    from pemn_fl import faults
    from pemn_fl.config import SettingsError

    settings = dataclasses.replace(SETTINGS, straggler_rate=0.25, round_deadline=5.0)
    ctx = _setup(pemn)[1][100]
    draws = [faults.draw(settings, ctx, "pemn", _message(r))[0] for r in range(1, 4001)]
    assert draws.count("straggle") / 4000 == pytest.approx(0.25, abs=0.03)
    assert set(draws) == {"straggle", None}
    with pytest.raises(SettingsError, match="set --round-deadline"):
        dataclasses.replace(SETTINGS, straggler_rate=0.1)  # Flower's default: an hour
    with pytest.raises(SettingsError, match="at most 1"):
        dataclasses.replace(SETTINGS, straggler_rate=0.6, drop_rate=0.5, round_deadline=5.0)
    with pytest.raises(SettingsError, match="round-deadline"):
        dataclasses.replace(SETTINGS, round_deadline=0.0)


@pytest.mark.parametrize("module_name", ["pemn", "evolve"])
def test_trimmed_votes_leave_the_attacker_out_and_count_it(module_name: str) -> None:
    import dataclasses
    import importlib

    from pemn_fl import faults

    module = importlib.import_module(f"pemn_fl.methods.{module_name}")
    settings = dataclasses.replace(SETTINGS, methods=module_name, byzantine=0.34,
                                   trim_votes=0.34)  # fmt: skip
    attacker = next(p for p in range(PARTITIONS) if faults.is_byzantine(settings, p, PARTITIONS))
    node_of = {p: 100 + p for p in range(PARTITIONS)}
    side = module.METHOD.server(settings, RoundSampler(node_of, 1.0, seed=0))
    (one,) = run_rounds(side.strategy, [1], module.METHOD.client_step,
                        harness_contexts(PARTITIONS), settings, side.initial)  # fmt: skip
    new = one.arrays
    assert new is not None and side.strategy.rejected == 1  # the one trimmed vote
    honest = [r for r in one.replies if r.metadata.src_node_id != 100 + attacker]
    untrimmed = dataclasses.replace(settings, trim_votes=0.0)
    clean, _ = module.METHOD.server(untrimmed, RoundSampler(node_of, 1.0, seed=0)
                                    ).strategy.aggregate_train(1, honest)  # fmt: skip
    for a, b in zip(new.to_numpy_ndarrays(), clean.to_numpy_ndarrays(), strict=True):
        np.testing.assert_array_equal(a, b)  # as if the attacker had not voted at all
