"""The compressed-update baselines (signsgd, qsgd, topk), in-process on real Flower Messages.

Each: its payload round trip, every party holding bit-identical dense weights after every
round under partial participation (catch-up through ``replica``), counted bytes equal to the
encoded lengths in both directions, and a malformed reply rejected while the round goes on.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from flwr.app import ConfigRecord, Context, Message, MetricRecord, RecordDict

import tests.harness as H
from pemn_fl.accounting import payload_bytes
from pemn_fl.config import RunSettings, SettingsError
from pemn_fl.methods import qsgd, signsgd, topk
from pemn_fl.methods.frames.compressed import DenseNet, dense_net, weighted_mean
from tests.harness import build_settings, changed

SETTINGS = build_settings(dataset="synthetic", model="mlp", width=0.25, dense_width=0.25,
                       local_epochs=1, min_nodes=1, server_lr=0.01, topk_fraction=0.05)  # fmt: skip
PARTITIONS = 4
MODULES = {"signsgd": signsgd, "qsgd": qsgd, "topk": topk}


pytestmark = pytest.mark.usefixtures("flower_identity")


def _strategy(module, schedule: dict[int, list[int]], settings: RunSettings):  # noqa: ANN001, ANN202
    return H.scheduled(module, settings, PARTITIONS, schedule)


def _update(seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.normal(0, 0.01, n).astype(np.float32) for n in dense_net(SETTINGS).sizes]


# -- payload round trips -----------------------------------------------------------------
def test_signsgd_sends_signs_and_a_majority() -> None:
    net, delta = dense_net(SETTINGS), _update()
    fields, _ = signsgd.encode_up(SETTINGS, net, delta, None, 3)
    got = signsgd.decode_up(SETTINGS, net, fields, 3)
    assert all(np.array_equal(g, np.sign(d)) for g, d in zip(got, delta, strict=True))
    votes = [got, got, [-g for g in got]]
    step = signsgd.decode_down(SETTINGS, net, signsgd.aggregate(SETTINGS, net, votes,
                                                                [1, 1, 1], {}, 3), 3)  # fmt: skip
    assert all(np.allclose(s, 0.01 * np.sign(d)) for s, d in zip(step, delta, strict=True))


@pytest.mark.parametrize("bits", [8, 4, 2])
def test_qsgd_is_unbiased_and_within_a_level(bits: int) -> None:
    settings = changed(SETTINGS, bits=bits)
    net, delta = dense_net(settings), _update()
    s = qsgd.levels_of(settings)
    outs = []
    for seed in range(40):
        symbols, norms = qsgd.quantize(delta, s, seed)
        outs.append(qsgd.dequantize(symbols, norms, s))
    fields, _ = qsgd.encode_up(settings, net, delta, None, 2)
    assert len(fields["update"]) <= sum(net.sizes) * bits / 8 + 400  # never above b bits
    decoded = qsgd.decode_up(settings, net, fields, 2)
    for i, d in enumerate(delta):
        mean = np.mean([o[i] for o in outs], axis=0)
        bucket_norm = np.linalg.norm(d[: qsgd.BUCKET])
        # every value is within one level of the truth, and the mean over roundings is close
        assert np.abs(decoded[i] - d).max() <= np.linalg.norm(d) / s + 1e-6
        assert np.abs(mean - d)[: qsgd.BUCKET].mean() < 0.35 * bucket_norm / s


def test_topk_keeps_the_largest_and_feeds_back_the_rest() -> None:
    net, delta = dense_net(SETTINGS), _update()
    fields, residual = topk.encode_up(SETTINGS, net, delta, None, 1)
    sent = topk.decode(SETTINGS, net, fields, 1)
    for d, s_, r in zip(delta, sent, residual, strict=True):
        k = int(np.ceil(0.05 * d.size))
        assert np.count_nonzero(s_) == k and np.allclose(s_ + r, d)  # nothing lost
        assert np.abs(s_[s_ != 0]).min() >= np.abs(r).max()  # the largest were sent
    assert len(fields["values"]) == 4 * sum(np.count_nonzero(x) for x in sent)
    # The next round sends what was left plus the new update.
    fields2, residual2 = topk.encode_up(SETTINGS, net, delta, residual, 2)
    sent2 = topk.decode(SETTINGS, net, fields2, 2)
    for d, old, s_, r in zip(delta, residual, sent2, residual2, strict=True):
        assert np.allclose(s_ + r, d + old)  # error feedback: the residual is carried


def test_settings_reject_bad_compressor_knobs() -> None:
    with pytest.raises(SettingsError, match="bits"):
        build_settings(bits=3)
    with pytest.raises(SettingsError, match="topk-fraction"):
        build_settings(topk_fraction=0.0)


# -- rounds on real messages -------------------------------------------------------------
@pytest.mark.parametrize("name", list(MODULES))
def test_every_party_holds_the_same_weights_and_bytes_are_the_payloads(name: str) -> None:
    module = MODULES[name]
    schedule = {1: [0, 1], 2: [1, 2], 3: [0, 3], 4: [0, 1, 2, 3]}
    strategy = _strategy(module, schedule, SETTINGS).strategy
    for one in H.replicated_rounds(strategy, sorted(schedule), module.METHOD.client_step,
                                   H.contexts(PARTITIONS), SETTINGS, name):  # fmt: skip
        for m, reply in zip(one.sent, one.replies, strict=True):
            cfg = m.content["config"]
            relayed = sum(len(v) for k, v in cfg.items() if isinstance(v, bytes) and k != "digest")
            assert payload_bytes(m) == relayed + 8 and (one.r == 1 or relayed > 0)
            up = reply.content["update"]
            assert payload_bytes(reply) == sum(len(v) for v in up.values()) > 0
    moved = sum(float(np.abs(a - b).sum()) for a, b in
                zip(strategy.replica.state, dense_net(SETTINGS).initial, strict=True))  # fmt: skip
    assert moved > 0


@pytest.mark.parametrize("name", list(MODULES))
def test_a_malformed_reply_is_rejected_and_the_round_goes_on(name: str) -> None:
    module = MODULES[name]
    strategy = _strategy(module, {1: [0, 1, 2]}, SETTINGS).strategy

    def malform(r: int, reply: Message) -> Message:
        update = reply.content["update"]
        if reply.metadata.src_node_id == H.FIRST_NODE:  # the first reply: not a payload
            update["update"] = b"not a payload"
        elif reply.metadata.src_node_id == H.FIRST_NODE + 1:  # the second: none at all
            del update["update"]
        return reply

    (one,) = H.run_rounds(strategy, [1], module.METHOD.client_step, H.contexts(PARTITIONS),
                          SETTINGS, tamper=malform)  # fmt: skip
    assert one.arrays is not None and strategy.rejected == 2


# -- known answers (not replays: each expected value is worked out by hand) --------------
FP = "0123456789abcdef"


def _tiny_net(n: int = 4) -> DenseNet:
    """A one-tensor dense model of ``n`` weights, for hand-checked aggregates."""
    return DenseNet(("w",), ((n,),), (np.zeros(n, np.float32),), FP)


def test_weighted_mean_weights_each_update_by_its_examples() -> None:
    # (1 * 1 + 3 * 3) / (1 + 3) = 2.5 and (1 * 2 + 3 * -2) / 4 = -1, per tensor.
    got = weighted_mean([[np.array([1.0]), np.array([2.0])], [np.array([3.0]), np.array([-2.0])]],
                        [1.0, 3.0])  # fmt: skip
    assert [g.tolist() for g in got] == [[2.5], [-1.0]]
    assert all(g.dtype == np.float32 for g in got)


def test_signsgd_majority_of_a_tie_is_zero_and_a_zero_update_votes_zero() -> None:
    net, settings = _tiny_net(), changed(SETTINGS, server_lr=0.5)
    # Two clients: +1/-1 is a tie (0), +1/+1 is +1, -1/-1 is -1, 0/0 is 0. One vote per
    # client, so unequal example counts change nothing.
    votes = [[np.array([1, 1, -1, 0], np.float32)], [np.array([-1, 1, -1, 0], np.float32)]]
    fields = signsgd.aggregate(settings, net, votes, [1.0, 100.0], {}, 3)
    assert signsgd.decode_down(settings, net, fields, 3)[0].tolist() == [0.0, 0.5, -0.5, 0.0]
    up, _ = signsgd.encode_up(settings, net, [np.array([0, 2, -3, 0], np.float32)], None, 3)
    assert signsgd.decode_up(settings, net, up, 3)[0].tolist() == [0.0, 1.0, -1.0, 0.0]


def test_topk_server_sends_what_its_residual_held_back() -> None:
    # k = 1 of 4. Round 1: mean [3, 2, 0, 0] -> sends [3, 0, 0, 0], keeps [0, 2, 0, 0].
    # Round 2: mean [0, 1, 0, 0] + residual [0, 2, 0, 0] -> sends [0, 3, 0, 0].
    net, settings = _tiny_net(), changed(SETTINGS, topk_fraction=0.25)
    state: dict = {}
    first = topk.aggregate(settings, net, [[np.array([3, 2, 0, 0], np.float32)]], [1.0], state, 1)
    assert topk.decode(settings, net, first, 1)[0].tolist() == [3.0, 0.0, 0.0, 0.0]
    second = topk.aggregate(settings, net, [[np.array([0, 1, 0, 0], np.float32)]], [1.0], state,
                            2)  # fmt: skip
    assert topk.decode(settings, net, second, 2)[0].tolist() == [0.0, 3.0, 0.0, 0.0]


def test_a_non_finite_update_is_rejected_and_the_step_is_the_finite_ones() -> None:
    # Two replies: one whose only non-zero is 0.25 at weight 0, one holding a NaN. The NaN
    # one is refused; the step is the finite one alone (top-k keeps its one non-zero).
    strategy = _strategy(topk, {1: [0, 1]}, SETTINGS).strategy
    net = dense_net(SETTINGS)
    good = [np.zeros(n, np.float32) for n in net.sizes]
    good[0][0] = 0.25
    bad = [np.zeros(n, np.float32) for n in net.sizes]
    bad[0][0] = np.nan
    answer = _hand_replies(net, {100: (good, 10, 0.5), 101: (bad, 10, 0.5)})
    (one,) = H.run_rounds(strategy, [1], answer, H.contexts(PARTITIONS), SETTINGS)
    assert one.arrays is not None and strategy.rejected == 1
    new = strategy.replica.state
    assert all(np.isfinite(w).all() for w in new)
    assert new[0][0] == np.float32(net.initial[0][0] + np.float32(0.25))
    assert np.array_equal(new[0][1:], net.initial[0][1:])
    assert all(np.array_equal(a, b) for a, b in zip(new[1:], net.initial[1:], strict=True))


def test_qsgd_levels_per_bit_width() -> None:
    assert [qsgd.levels_of(changed(SETTINGS, bits=b)) for b in (2, 4, 8)] == [1, 7,
                                                                                          127]


def test_qsgd_values_on_a_level_quantise_exactly_per_bucket() -> None:
    # Bucket 1 holds (-3, 4): norm 5, with s = 5 levels |v| * s / norm = 3, 4 exactly, so the
    # symbols are sign * xi + s = 2, 9. Bucket 2 (from weight 512) holds (6, 8): norm 10,
    # r = 3, 4 again. Everything else is 0: symbol s, and a zero bucket has norm 0.
    v = np.zeros(3 * qsgd.BUCKET, np.float32)
    v[[0, 1, 512, 513]] = [-3, 4, 6, 8]
    symbols, norms = qsgd.quantize([v], 5, seed=0)
    assert norms.tolist() == [5.0, 10.0, 0.0] and norms.dtype == np.float32
    assert symbols[0][[0, 1, 2, 512, 513, 514, 1535]].tolist() == [2, 9, 5, 8, 9, 5, 5]
    assert symbols[0].dtype == np.int16 and symbols[0].size == v.size
    back = qsgd.dequantize(symbols, norms, 5)
    assert np.array_equal(back[0], v) and back[0].dtype == np.float32


def test_qsgd_rounds_between_levels_to_a_neighbour_with_the_right_odds() -> None:
    # 0.6 * s / norm = 0.6 with s = 1, norm 1 (0.6, 0.8): xi is 1 with probability 0.6.
    v = np.tile(np.array([0.6, 0.8] + [0.0] * (qsgd.BUCKET - 2), np.float32), 200)
    symbols, norms = qsgd.quantize([v], 1, seed=4)
    first = symbols[0][:: qsgd.BUCKET]
    assert set(np.unique(first).tolist()) == {1, 2} and norms[0] == np.float32(1.0)
    assert 0.5 < float((first == 2).mean()) < 0.7
    again, _ = qsgd.quantize([v], 1, seed=4)
    assert np.array_equal(again[0], symbols[0])


def test_qsgd_refuses_norms_that_do_not_fit() -> None:
    net = dense_net(SETTINGS)
    fields, _ = qsgd.encode_up(SETTINGS, net, _update(), None, 2)
    buckets = sum(-(-n // qsgd.BUCKET) for n in net.sizes)
    assert len(fields["norms"]) == 4 * buckets
    for norms, words in ((fields["norms"][:-4], "bytes of norms"),
                         (np.full(buckets, -1.0, "<f4").tobytes(), "non-negative"),
                         (np.full(buckets, np.nan, "<f4").tobytes(), "finite")):  # fmt: skip
        from pemn_fl.codec import MaskPayloadError

        with pytest.raises(MaskPayloadError, match=words):
            qsgd.decode_up(SETTINGS, net, {**fields, "norms": norms}, 2)


def test_qsgd_server_step_is_the_quantised_weighted_mean() -> None:
    # Two updates on a level grid whose example-weighted mean (1:3) is on the grid too.
    net, settings = _tiny_net(), changed(SETTINGS, bits=4)  # s = 7
    a, b = np.array([7, 0, 0, 0], np.float32), np.array([-7, 0, 0, 0], np.float32)
    fields = qsgd.aggregate(settings, net, [[a], [b]], [3.0, 1.0], {}, 5)
    # mean = (3 * 7 - 7) / 4 = 3.5: norm 3.5, r = 7 exactly -> back to 3.5.
    assert qsgd.CODEC.decode_down(settings, net, fields, 5)[0].tolist() == [3.5, 0, 0, 0]


def _hand_replies(net: DenseNet, sends: dict[int, tuple[list[np.ndarray], int, float]]):  # noqa: ANN202
    """A client step built by hand: node ``n`` sends the delta of ``sends[n] = (delta,
    examples, loss)``, top-k coded, and those metrics."""

    def answer(msg: Message, ctx: Context, settings: RunSettings) -> Message:
        delta, n, loss = sends[msg.metadata.dst_node_id]
        fields, _ = topk.encode_up(SETTINGS, net, delta, None, 1)
        content = RecordDict({"update": ConfigRecord(fields), "metrics": MetricRecord(
            {"num-examples": n, "train-loss": loss})})  # fmt: skip
        return Message(content=content, reply_to=msg)

    return answer


@pytest.mark.parametrize("weighting, step, loss", [("examples", 0.625, 2.5),
                                                    ("uniform", 0.5, 2.0)])  # fmt: skip
def test_the_server_step_and_loss_weigh_replies_by_examples_or_uniformly(
    weighting: str, step: float, loss: float,
) -> None:
    # Deltas 0.25 and 0.75 at weight 0, 10 and 30 examples, losses 1 and 3:
    # by examples (2.5 + 22.5) / 40 = 0.625 and loss (10 + 90) / 40 = 2.5; uniform 0.5, 2.
    settings = dataclasses.replace(SETTINGS, vote_weighting=weighting)
    strategy = _strategy(topk, {1: [0, 1]}, settings).strategy
    net = strategy.net
    sends = {}
    for node, value, examples, node_loss in ((100, 0.25, 10, 1.0), (101, 0.75, 30, 3.0)):
        d = [np.zeros(size, np.float32) for size in net.sizes]
        d[0][0] = value
        sends[node] = (d, examples, node_loss)
    (one,) = H.run_rounds(strategy, [1], _hand_replies(net, sends), H.contexts(PARTITIONS),
                          settings)  # fmt: skip
    assert strategy.rejected == 0 and one.metrics["train-loss"] == pytest.approx(loss)
    new = one.arrays.to_numpy_ndarrays()
    assert new[0][0] == np.float32(net.initial[0][0] + np.float32(step))
    assert np.array_equal(new[0][1:], net.initial[0][1:])
    assert all(np.array_equal(a, strategy.replica.state[i]) for i, a in enumerate(new))


def test_topk_refuses_values_that_do_not_match_the_kept_count() -> None:
    from pemn_fl.codec import MaskPayloadError

    net, settings = _tiny_net(), changed(SETTINGS, topk_fraction=0.5)
    fields, residual = topk.encode_up(settings, net, [np.array([1, -4, 2, 0], np.float32)],
                                      None, 1)  # fmt: skip
    assert topk.decode(settings, net, fields, 1)[0].tolist() == [0, -4, 2, 0]  # k = 2 of 4
    assert residual[0].tolist() == [1, 0, 0, 0]
    with pytest.raises(MaskPayloadError, match="bytes of values for 2 kept"):
        topk.decode(settings, net, {**fields, "values": fields["values"][:4]}, 1)


def test_topk_keeps_at_least_one_and_at_most_every_weight() -> None:
    kept, rest = topk.sparsify([np.array([0.5, -2.0, 1.0], np.float32)], 0.01)  # ceil -> 1
    assert kept[0].tolist() == [0, 1, 0] and rest[0].tolist() == [0.5, 0.0, 1.0]
    kept, rest = topk.sparsify([np.array([0.5, -2.0, 1.0], np.float32)], 1.0)
    assert kept[0].tolist() == [1, 1, 1] and rest[0].tolist() == [0.0, 0.0, 0.0]


@pytest.mark.parametrize("name", ["topk", "signsgd"])
def test_a_client_sends_its_trained_weights_minus_the_ones_it_held(
    name: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Local training replaced by a known one: every weight + 0.5. With top-k keeping every
    # weight, the update on the wire is 0.5 everywhere (its sign +1 for signSGD), and top-k's
    # residual is what it left out: nothing.
    import torch

    from pemn_fl.methods.frames import compressed

    def plus_half(model, x, y, cfg, seed):  # noqa: ANN001, ANN202
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.5)
        return 0.25

    monkeypatch.setattr(compressed, "train", plus_half)
    settings = changed(SETTINGS, topk_fraction=1.0)
    module = MODULES[name]
    strategy = _strategy(module, {1: [0]}, settings).strategy
    contexts = H.contexts(PARTITIONS)
    (one,) = H.run_rounds(strategy, [1], module.METHOD.client_step, contexts, settings)
    reply, ctx = one.replies[0], contexts[H.FIRST_NODE]
    delta = module.CODEC.decode_up(settings, strategy.net, reply.content["update"], 1)
    want = 1.0 if name == "signsgd" else 0.5
    for d in delta:
        np.testing.assert_allclose(d, want, atol=1e-6)
    assert reply.content["metrics"]["train-loss"] == 0.25
    if name == "topk":
        assert all(not r.any() for r in ctx.state["topk-residual"].to_numpy_ndarrays())
    else:
        assert "signsgd-residual" not in ctx.state


# -- the compressed-update frame's wiring (each compressor alike) ------------------------
def test_a_compressor_node_beyond_the_history_takes_the_snapshot(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A node that missed more rounds than the server keeps gets the weights whole and
    trains from them (the replica check: it then holds what the server held)."""
    from pemn_fl.methods.frames import replica as R

    monkeypatch.setattr(R, "HISTORY", 2)
    schedule = {1: [0, 1], 2: [1], 3: [1], 4: [0, 1]}  # node 0 misses rounds 2-3
    strategy = _strategy(qsgd, schedule, SETTINGS).strategy
    rounds = list(H.replicated_rounds(strategy, sorted(schedule), qsgd.METHOD.client_step,
                                      H.contexts(PARTITIONS), SETTINGS, "qsgd"))  # fmt: skip
    to_node0 = next(m for m in rounds[-1].sent if m.metadata.dst_node_id == H.FIRST_NODE)
    assert R.SNAPSHOT in to_node0.content.array_records


def test_a_compressor_follows_the_runs_sampler_and_installs_its_arrays() -> None:
    """The server asks the run's own sampler (here half the nodes); ``install`` puts the
    global arrays into the evaluation model."""
    from pemn_fl.sampling import RoundSampler

    node_of = {p: H.FIRST_NODE + p for p in range(PARTITIONS)}
    sampler = RoundSampler(node_of, 0.5, seed=3)
    side = qsgd.METHOD.server(SETTINGS, sampler)
    sent = list(side.strategy.configure_train(1, side.initial, ConfigRecord(), None))
    assert sorted(m.metadata.dst_node_id for m in sent) == sorted(sampler(1)) and len(sent) == 2
    side.install(side.initial)
    installed = np.concatenate([p.detach().numpy().ravel() for p in side.model.parameters()])
    assert np.array_equal(installed, np.concatenate(side.initial.to_numpy_ndarrays()))
    _, replies, arrays = H.first_round("qsgd", SETTINGS)
    side.install(arrays)
    installed = np.concatenate([p.detach().numpy().ravel() for p in side.model.parameters()])
    assert np.array_equal(installed, np.concatenate(arrays.to_numpy_ndarrays()))


def test_a_compressor_reply_without_a_train_loss_counts_with_a_nan_loss() -> None:
    """train-loss is informative: a reply without it is still a valid update."""
    side, replies, _ = H.first_round("qsgd", SETTINGS)
    reply = replies[0]
    metrics = reply.content["metrics"]
    assert "train-loss" in metrics
    del metrics["train-loss"]
    delta, num_examples, loss = side.strategy.check(1)(reply)
    assert num_examples > 0 and len(delta) == len(dense_net(SETTINGS).sizes)
    assert loss != loss  # NaN


def test_a_compressor_client_draws_its_batches_from_the_run_seed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Minibatch order: from (the run's seed, partition, round), so another seed reshuffles
    (a seed group's members differ in every draw)."""
    from pemn_fl.methods.frames import compressed as C
    from pemn_fl.prototype import derived_seed

    seeds: list[int] = []
    real = C.train

    def train(*args, seed: int, **kwargs):  # noqa: ANN002, ANN003, ANN202
        seeds.append(seed)
        return real(*args, seed=seed, **kwargs)

    monkeypatch.setattr(C, "train", train)
    for run_seed in (0, 1):
        H.first_round("qsgd", changed(SETTINGS, seed=run_seed), partitions=1)
    assert seeds == [derived_seed(0, "batches/0/1"), derived_seed(1, "batches/0/1")]


# -- merged catch-up (signsgd --merged-catch-up) -------------------------------------------
def test_signsgd_merges_the_rounds_a_node_missed_and_everyone_agrees() -> None:
    from pemn_fl.levels_codec import decode_steps
    from pemn_fl.methods.frames import compressed as C

    merged = changed(SETTINGS, merged_catch_up=True)
    assert C.integer_state(merged, signsgd.CODEC) and not C.integer_state(merged, qsgd.CODEC)
    schedule = {1: [0, 1], 2: [1, 2], 3: [1, 3], 4: [0, 2, 3]}
    strategy = _strategy(signsgd, schedule, merged).strategy
    contexts = H.contexts(PARTITIONS)
    rounds = {one.r: one for one in H.replicated_rounds(  # every node agrees with the server
        strategy, sorted(schedule), signsgd.METHOD.client_step, contexts, merged, "signsgd")}
    # Round 4: node 0 (holds round 0) and node 2 (holds round 1) get one update each, the
    # sum of the rounds' signs; node 3 (holds round 2) needs round 3 alone.
    sent = {m.metadata.dst_node_id - 100: m.content["config"] for m in rounds[4].sent}
    net = strategy.net
    for node, first in ((0, 1), (2, 2)):
        assert sorted(k for k in sent[node] if "update" in k) == ["merged-update"]
        got = decode_steps(bytes(sent[node]["merged-update"]), fingerprint=net.fingerprint,
                           tag=first, layer_sizes=net.sizes)  # fmt: skip
        want = [sum(decode_steps(bytes(strategy.replica.updates[t]["update"]),
                                 fingerprint=net.fingerprint, tag=t, layer_sizes=net.sizes)[i]
                    for t in range(first, 4)) for i in range(len(net.sizes))]  # fmt: skip
        assert all(np.array_equal(a, b) for a, b in zip(got, want, strict=True))
    assert sorted(k for k in sent[3] if "update" in k) == ["update-3"]
    # The state is the summed signs; the weights W_0 + server-lr * S, as every party computes.
    state, lr = strategy.replica.state, np.float32(0.01)
    assert all(np.array_equal(s, np.round(s)) for s in state) and any(s.any() for s in state)
    weights = strategy.global_arrays().to_numpy_ndarrays()
    for w, w0, s in zip(weights, net.initial, state, strict=True):
        assert np.array_equal(w.reshape(-1), (w0 + s * lr).astype(np.float32))
    with pytest.raises(SettingsError, match="merged-catch-up sums the rounds' steps"):
        changed(merged, lr_schedule="cosine")
