"""MaskVoting on real Flower Messages: downlink deltas, voting, and rejecting bad replies."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from flwr.app import ConfigRecord, Error, Message, MetricRecord, RecordDict

from pemn_fl import messages as M
from pemn_fl.accounting import message_bytes, payload_bytes
from pemn_fl.codec import decode_mask, encode_mask
from pemn_fl.methods.frames import frozen
from pemn_fl.methods.frames.frozen import record_to_mask
from pemn_fl.methods.frames.mask_voting import MaskVoting
from pemn_fl.sampling import RoundSampler
from tests.harness import run_rounds

FP = "0123456789abcdef"
SIZES = (6, 4)


# Messages need a run id; Flower's simulation sets it the same way (restored after each test).
pytestmark = pytest.mark.usefixtures("flower_identity")


def _mask(bits: str) -> np.ndarray:
    return np.array([c == "1" for c in bits])


def _strategy(nodes: list[int]) -> MaskVoting:
    initial = [_mask("111000"), _mask("1100")]
    return MaskVoting(
        sampler=lambda r: nodes, fingerprint=FP, layer_sizes=SIZES, initial_mask=initial,
        keep=0.5, seed=0,
    )  # fmt: skip


def _reply(
    to: Message, mask: list[np.ndarray], n: int, ref: list[np.ndarray], ref_id: int
) -> Message:
    payload = encode_mask(mask, fingerprint=FP, reference=ref, reference_id=ref_id)
    content = RecordDict({
        M.UPDATE: ConfigRecord({frozen.MASK: payload}),
        M.METRICS: MetricRecord({"num-examples": n, "train-loss": 1.0}),
    })  # fmt: skip
    return Message(content=content, reply_to=to)


def _votes(votes: dict[int, tuple[list[np.ndarray], int]], ref: list[np.ndarray],
           ref_id: int):  # noqa: ANN202
    """A client step built by hand: node ``n`` sends the mask and examples of ``votes[n]``,
    coded against ``ref`` (version ``ref_id``)."""
    return lambda msg, ctx, settings: _reply(msg, *votes[msg.metadata.dst_node_id], ref, ref_id)


def test_vote_majority_wins_and_version_advances() -> None:
    strategy = _strategy([11, 12, 13])
    ref = strategy.current
    # Two of three clients (by examples: 30 vs 10) move edge 2 -> edge 3 in layer 0.
    moved = [_mask("110100"), _mask("1100")]
    votes = {11: (moved, 10), 12: (moved, 20), 13: (ref, 10)}
    (one,) = run_rounds(strategy, [1], _votes(votes, ref, 0))
    assert [m.metadata.dst_node_id for m in one.sent] == [11, 12, 13]
    arrays, metrics = one.arrays, one.metrics
    assert arrays is not None and metrics is not None
    new = record_to_mask(arrays)
    assert new[0].tolist() == _mask("110100").tolist()
    assert new[1].tolist() == _mask("1100").tolist()
    assert strategy.version == 1 and strategy.rejected == 0
    assert metrics["global-flips"] == 2


def test_bad_replies_are_rejected_logged_and_the_round_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    strategy = _strategy([11, 12, 13, 14])
    ref = strategy.current
    corrupt_payload = bytearray(encode_mask(ref, fingerprint=FP))
    corrupt_payload[-6] ^= 0xFF

    def mask_reply(payload: bytes, to: Message) -> Message:
        return Message(
            content=RecordDict({
                M.UPDATE: ConfigRecord({frozen.MASK: payload}),
                M.METRICS: MetricRecord({"num-examples": 10}),
            }),  # fmt: skip
            reply_to=to,
        )

    answers = {
        11: lambda to: _reply(to, ref, 10, ref, 0),  # good
        12: lambda to: mask_reply(bytes(corrupt_payload), to),  # corrupt
        13: lambda to: mask_reply(encode_mask(ref, fingerprint="f" * 16), to),  # wrong_fp
        14: lambda to: Message(Error(code=0, reason="client crashed"), reply_to=to),  # failed
    }  # fmt: skip
    with caplog.at_level(logging.WARNING, logger="pemn_fl.server"):
        (one,) = run_rounds(strategy, [1],
                            lambda msg, ctx, s: answers[msg.metadata.dst_node_id](msg))
    assert strategy.rejected == 3
    assert one.arrays is not None  # the good reply still counted
    text = caplog.text
    assert "CRC" in text and "fingerprint" in text and "client crashed" in text


def test_downlink_is_a_delta_against_what_the_node_holds() -> None:
    strategy = _strategy([11])
    first = list(strategy.configure_train(1, None, ConfigRecord(), None))  # type: ignore[arg-type]
    payload = first[0].content[M.CONFIG][frozen.MASK]
    # Round 1: the node holds version 0 (derived from the seed), which equals the global mask.
    got = decode_mask(payload, fingerprint=FP, layer_sizes=SIZES, references={0: strategy.current})
    assert [g.tolist() for g in got] == [m.tolist() for m in strategy.current]
    assert payload_bytes(first[0]) == len(payload)
    assert message_bytes(first[0]) > len(payload)


def test_sampler_is_seeded_and_maps_partitions_to_nodes() -> None:
    mapping = {p: 1000 + 7 * p for p in range(20)}
    a = RoundSampler(mapping, 0.25, seed=3)
    b = RoundSampler(dict(reversed(list(mapping.items()))), 0.25, seed=3)
    assert a(1) == b(1) and len(a(1)) == 5
    assert set(a(1)) <= set(mapping.values())
    assert any(a(r) != a(1) for r in range(2, 6))


def test_logs_name_a_node_by_its_partition() -> None:
    from pemn_fl.methods.base import node_label
    from pemn_fl.sampling import RoundSampler

    sampler = RoundSampler({0: 111, 3: 444}, 1.0, seed=0)
    assert node_label(sampler, 444) == "partition 3 (node 444)"
    assert node_label(sampler, 999) == "node 999"  # not in this run's map
    assert node_label(lambda r: [], 444) == "node 444"  # a bare sampler: the id only


def test_screen_refuses_error_replies_and_bad_payloads_and_keeps_partition_order() -> None:
    from pemn_fl.methods.base import screen

    sampler = RoundSampler({0: 11, 1: 12, 2: 13, 3: 14}, 1.0, seed=0)
    sent = {n: Message(content=RecordDict(), dst_node_id=n, message_type="train.x")
            for n in (11, 12, 13, 14)}  # fmt: skip

    def reply(node: int, examples: object) -> Message:
        content = RecordDict({M.METRICS: MetricRecord({"num-examples": examples})})
        return Message(content=content, reply_to=sent[node])

    def check(msg: Message) -> float:
        value = float(msg.content[M.METRICS]["num-examples"])
        if value < 0:
            raise ValueError("negative")
        return value

    # Arrival order 14, 13, 12, 11: node 13 crashed (an error reply), node 12's payload is
    # refused by ``check``; 11 and 14 are kept, in partition order.
    replies = [reply(14, 40), Message(Error(code=0, reason="crashed"), reply_to=sent[13]),
               reply(12, -1), reply(11, 10)]  # fmt: skip
    kept, refused = screen(replies, sampler, 1, check)
    assert kept == [(11, 10.0), (14, 40.0)]
    assert refused == 2


@pytest.mark.parametrize("weighting, expected", [("examples", "110100"), ("uniform", "111000")])
def test_uniform_weighting_gives_each_client_one_vote(weighting: str, expected: str) -> None:
    # Client 11 (30 examples) moves edge 2 -> 3; clients 12 and 13 (10 each) keep the mask.
    # By examples edge 3 gets 30 of 50 votes against edge 2's 20: it wins. One vote each,
    # edge 2 keeps 2 of 3 and stays.
    strategy = MaskVoting(sampler=lambda r: [11, 12, 13], fingerprint=FP, layer_sizes=SIZES,
                          initial_mask=[_mask("111000"), _mask("1100")], keep=0.5, seed=0,
                          weighting=weighting)  # fmt: skip
    ref = strategy.current
    moved = [_mask("110100"), _mask("1100")]
    (one,) = run_rounds(strategy, [1], _votes({11: (moved, 30), 12: (ref, 10), 13: (ref, 10)},
                                              ref, 0))  # fmt: skip
    assert record_to_mask(one.arrays)[0].tolist() == _mask(expected).tolist()
    assert one.metrics["global-flips"] == (2 if weighting == "examples" else 0)


def test_the_round_loss_is_the_example_weighted_mean_of_the_replies() -> None:
    strategy = _strategy([11, 12])
    ref = strategy.current
    sends = {11: (10, 1.0), 12: (30, 3.0)}  # node: (examples, loss)

    def answer(msg: Message, ctx: None, settings: None) -> Message:
        n, loss = sends[msg.metadata.dst_node_id]
        content = RecordDict({
            M.UPDATE: ConfigRecord({frozen.MASK: encode_mask(ref, fingerprint=FP, reference=ref,
                                                            reference_id=0)}),
            M.METRICS: MetricRecord({"num-examples": n, "train-loss": loss}),
        })  # fmt: skip
        return Message(content=content, reply_to=msg)

    (one,) = run_rounds(strategy, [1], answer)
    assert one.metrics["train-loss"] == pytest.approx((10 * 1.0 + 30 * 3.0) / 40)
    assert strategy.holds == {11: 0, 12: 0} and strategy.version == 1


def test_the_server_forgets_what_a_silent_node_holds() -> None:
    # Rounds 1-2: both nodes reply (each then holds the version it was sent: 1 after round
    # 2). Round 3: node 12 never answers; whether it holds version 2 is unknown, so the
    # server forgets it (next time it gets a mask it can decode from the seeded version 0).
    strategy = _strategy([11, 12])

    def answer(msg: Message, ctx: None, settings: None) -> Message:  # the mask it was sent
        ref = strategy.current
        return _reply(msg, ref, 10, ref, strategy.version)

    def silent_in_round_3(r: int, reply: Message) -> Message | None:
        return None if r == 3 and reply.metadata.src_node_id == 12 else reply

    for one in run_rounds(strategy, (1, 2, 3), answer, tamper=silent_in_round_3):
        if one.r == 2:
            assert strategy.holds == {11: 1, 12: 1}
    assert strategy.holds == {11: 2} and strategy.version == 3
