"""Evolving-prototype methods, in-process on real Flower Messages: every party's weights agree.

Drives ``EvolvingVotes`` and the client steps of ``evolve`` / ``evolve_dither`` round by
round with partial participation, and checks after every round that each client that took
part holds bit-identical weights to the server (by digest), that catch-up works from any
gap (deltas, or a snapshot beyond the history), and that bytes equal the encoded lengths.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from flwr.app import ConfigRecord, Context, Message

import tests.harness as H
from pemn_fl import networks as N
from pemn_fl.accounting import payload_bytes
from pemn_fl.config import RunSettings
from pemn_fl.levels_codec import decode_levels
from pemn_fl.masked import GetSubnet
from pemn_fl.methods import evolve, evolve_dither, evolve_lattice, evolve_momentum
from pemn_fl.methods.frames import evolving as E
from pemn_fl.methods.frames import evolving_round as ER
from pemn_fl.methods.frames import replica as R
from tests.harness import build_settings, changed

SETTINGS = build_settings(
    dataset="synthetic", model="mlp", width=0.25, local_epochs=1, batch_size=32,
    noise_scale=0.5, density=0.05, min_nodes=1,
)  # fmt: skip
PARTITIONS = 4


pytestmark = pytest.mark.usefixtures("flower_identity")


def _deliver(msg: Message, step, ctx: Context) -> Message:  # noqa: ANN001
    return H.deliver(msg, step, ctx, SETTINGS)


def _run(module, name: str, schedule: dict[int, list[int]], history: int | None = None,  # noqa: ANN001
         monkeypatch: pytest.MonkeyPatch | None = None,
         ) -> tuple[object, dict[int, Context], dict[int, list[Message]]]:  # fmt: skip
    if history is not None and monkeypatch is not None:
        monkeypatch.setattr(R, "HISTORY", history)
    # The schedule picks the nodes per round (every node in rounds it does not name).
    strategy = H.scheduled(module, SETTINGS, PARTITIONS, schedule).strategy
    contexts = H.contexts(PARTITIONS)
    # Every node that took part holds exactly the weights (W, and V with momentum) the round
    # started from.
    rounds = H.replicated_rounds(strategy, sorted(schedule), module.METHOD.client_step,
                                 contexts, SETTINGS, name)  # fmt: skip
    log = {one.r: one.sent for one in rounds}
    return strategy, contexts, log


def _weights_before(strategy, r: int) -> list[np.ndarray]:  # noqa: ANN001
    """Server weights at the start of round r, replayed from W_0 and the stored updates."""
    scheme = strategy.scheme
    state = ER.state_of(SETTINGS, scheme)
    for t in range(1, r):
        payload = strategy.replica.updates[t]["update"]
        denom, max_level, offset = strategy.replica.updates[t]["levels"]
        levels = decode_levels(payload, fingerprint=strategy.net.fingerprint, tag=t,
                               layer_sizes=strategy.net.sizes, max_level=max_level)  # fmt: skip
        state = ER.step(SETTINGS, scheme, state, t,
                            ER.Levels(levels, denom, max_level, offset))  # fmt: skip
    return state[: len(strategy.net.sizes)]


@pytest.mark.parametrize("module,name", [(evolve, "evolve"), (evolve_dither, "evolve_dither"),
                                         (evolve_lattice, "evolve_lattice"),
                                         (evolve_momentum, "evolve_momentum")])
def test_every_party_holds_the_same_weights_after_every_round(module, name: str) -> None:  # noqa: ANN001
    # Partial participation with gaps of 1-3 rounds: catch-up by relayed updates.
    schedule = {1: [0, 1], 2: [1, 2], 3: [0, 3], 4: [2, 3], 5: [0, 1, 2, 3]}
    strategy, contexts, log = _run(module, name, schedule)
    final = R.digest(strategy.weights)
    assert final == R.digest(_weights_before(strategy, 6))
    assert strategy.replica.round == 5
    # The weights moved (the votes did something) and stayed finite.
    moved = sum(float(np.abs(a - b).sum()) for a, b in zip(strategy.weights,
                                                           strategy.net.initial, strict=True))
    assert moved > 0 and all(np.isfinite(w).all() for w in strategy.weights)


def test_a_node_beyond_the_history_gets_a_counted_snapshot(monkeypatch: pytest.MonkeyPatch) -> None:
    schedule = {1: [0, 1], 2: [1], 3: [1], 4: [0, 1]}  # node 0 misses rounds 2-3
    strategy, contexts, log = _run(evolve, "evolve", schedule, history=2, monkeypatch=monkeypatch)
    # In round 4 node 0 holds round 0 and needs updates 1..3; with HISTORY=2 update 1 is
    # gone, so it got W_3 as float32 (and _run checked it then matched the server).
    to_node0 = next(m for m in log[4] if m.metadata.dst_node_id == 100)
    to_node1 = next(m for m in log[4] if m.metadata.dst_node_id == 101)
    assert "snapshot" in to_node0.content.array_records
    assert "snapshot" not in to_node1.content.array_records
    floats = 4 * sum(strategy.net.sizes)
    assert payload_bytes(to_node0) == floats + 8  # the float32 weights + the digest
    assert payload_bytes(to_node1) < floats // 8  # node 1 only needed round 3's levels
    assert int(contexts[100].state["evolve-round"]["round"]) == 3


def test_bytes_equal_the_encoded_lengths() -> None:
    schedule = {1: [0, 1, 2], 2: [0, 1, 2]}
    strategy, contexts, log = _run(evolve, "evolve", schedule)
    (three,) = H.run_rounds(strategy, [3], evolve.METHOD.client_step, contexts, SETTINGS)
    payload = strategy.replica.updates[2]["update"]
    for m in three.sent:
        cfg = m.content["config"]
        assert bytes(cfg["update-2"]) == payload
        # Node 3 missed rounds 1-2, so it also gets round 1's update: every one is counted.
        rounds = [1, 2] if m.metadata.dst_node_id == 103 else [2]
        sizes = sum(len(strategy.replica.updates[t]["update"]) for t in rounds)
        assert payload_bytes(m) == sizes + len(bytes(cfg["digest"])) > 0
    for reply in three.replies:
        assert payload_bytes(reply) == len(reply.content["update"]["mask"]) > 0


def test_a_replayed_catch_up_is_not_applied_twice() -> None:
    schedule = {1: [0, 1], 2: [0, 1]}
    strategy, contexts, log = _run(evolve, "evolve", schedule)
    # The server believes node 0 still holds round 0 (e.g. its last reply was lost): the
    # node skips the updates it already applied and still lands on the server's weights.
    strategy.replica.holds[100] = 0
    sent = [m for m in strategy.configure_train(3, None, ConfigRecord(), None)  # type: ignore[arg-type]
            if m.metadata.dst_node_id == 100]  # fmt: skip
    _deliver(sent[0], evolve.METHOD.client_step, contexts[100])
    held = contexts[100].state["evolve-weights"].to_numpy_ndarrays()
    assert R.digest(held) == R.digest(strategy.weights)


def test_a_wrong_digest_is_a_clear_error_and_keeps_the_node_state() -> None:
    strategy, contexts, log = _run(evolve, "evolve", {1: [0]})
    sent = list(strategy.configure_train(2, None, ConfigRecord(), None))  # type: ignore[arg-type]
    sent = [m for m in sent if m.metadata.dst_node_id == 100] or sent
    sent[0].content["config"]["digest"] = b"\x00" * 8
    before = contexts[100].state["evolve-weights"].to_numpy_ndarrays()
    with pytest.raises(RuntimeError, match="digest mismatch"):
        evolve.METHOD.client_step(sent[0], contexts[100], SETTINGS)
    after = contexts[100].state["evolve-weights"].to_numpy_ndarrays()
    assert R.digest(before) == R.digest(after)


def test_dither_rule_is_unbiased_and_binary() -> None:
    f = [np.full(200_000, 0.3)]
    one_bit = changed(SETTINGS, dither_levels=1)
    upd = ER.dither_rule(f, 10, one_bit, 2, {})
    assert upd.denom == 1 and upd.max_level == 1 and set(np.unique(upd.levels[0])) <= {0, 1}
    assert upd.levels[0].mean() == pytest.approx(0.3, abs=0.005)
    again = ER.dither_rule(f, 10, one_bit, 2, {})
    assert np.array_equal(upd.levels[0], again.levels[0])


def test_dither_with_more_levels_is_unbiased_with_less_spread() -> None:
    f = [np.full(200_000, 0.3)]
    one = ER.dithered(f, 1, seed=1, server_round=2)
    four = ER.dithered(f, 4, seed=1, server_round=2)
    assert set(np.unique(four[0])) <= {1, 2}
    assert (four[0] / 4).mean() == pytest.approx(0.3, abs=0.005)
    assert (four[0] / 4).std() < one[0].std()


def test_counts_rule_is_the_vote_count() -> None:
    f = [np.array([0.0, 0.25, 0.5, 1.0])]
    upd = evolve.counts_rule(f, 4, SETTINGS, 1, {})
    assert upd.levels[0].tolist() == [0, 1, 2, 4] and upd.denom == upd.max_level == 4


def test_sigma_delta_loses_nothing_a_vote_asked_for() -> None:
    rng = np.random.default_rng(0)
    state: dict = {}
    total = np.zeros(1000)
    steps = np.zeros(1000)
    for r in range(1, 30):
        f = [rng.choice([-1.0, -0.1, 0.0, 0.1, 0.3], size=1000)]
        total += f[0]
        upd = evolve_lattice.sigma_delta_rule(f, 10, SETTINGS, r, state)
        assert upd.offset == 2 and upd.denom == 1
        steps += upd.levels[0] - upd.offset
        assert np.abs(total - steps).max() <= 0.5 + 1e-9  # only delayed, never lost


# -- known answers (not replays: each expected value is worked out by hand) --------------
def test_apply_levels_moves_by_signed_steps_over_the_denominator() -> None:
    # W + N * (level - offset) / denom: levels 0..4 with offset 2 are the steps -2..2, and
    # over denom 2 they move W by -1, -1/2, 0, 1/2, 1 times N (all exact in float32).
    w = [np.ones(5, np.float32)]
    n = [np.array([0.5, 0.5, 0.5, 0.5, -0.5], np.float32)]
    levels = [np.arange(5, dtype=np.int16)]
    got = E.apply_levels(w, n, levels, denom=2, offset=2)
    assert got[0].tolist() == [0.5, 0.75, 1.0, 1.25, 0.5]
    assert E.apply_levels(w, n, levels, denom=4)[0].tolist() == [1.0, 1.125, 1.25, 1.375, 0.5]


def test_a_lattice_round_of_zero_steps_leaves_the_weights_and_max_steps_move_them() -> None:
    # evolve_lattice sends step s as level s + MAX_STEP: all-MAX_STEP levels are a round of
    # zero steps, and all-(MAX_STEP + 1) levels move every weight up by one lattice step.
    net = E.network(SETTINGS)
    state = ER.state_of(SETTINGS, evolve_lattice.SCHEME)
    mid = evolve_lattice.MAX_STEP
    still = ER.Levels([np.full(n, mid, np.int16) for n in net.sizes], 1, 2 * mid, mid)
    after = ER.step(SETTINGS, evolve_lattice.SCHEME, state, 1, still)
    assert all(np.array_equal(a, b) for a, b in zip(after, state, strict=True))
    up = ER.Levels([np.full(n, mid + 1, np.int16) for n in net.sizes], 1, 2 * mid, mid)
    moved = ER.step(SETTINGS, evolve_lattice.SCHEME, state, 1, up)
    for a, b, shape in zip(moved, state, net.shapes, strict=True):
        fan_in = int(np.prod(shape.shape[1:]))  # He std sqrt(2 / fan_in), times noise-scale
        step = SETTINGS[E.NOISE_SCALE] * np.sqrt(2 / fan_in)
        np.testing.assert_allclose(a - b, step, rtol=1e-5)


def test_each_round_has_its_own_noise_and_a_replay_draws_the_same() -> None:
    # N_r is drawn from (seed, r): rounds 1 and 2 must be independent sign patterns (about
    # half the signs agree), and round 1 drawn again must be bit-identical.
    one, two = E.noise(SETTINGS, 1), E.noise(SETTINGS, 2)
    signs_one, signs_two = (np.concatenate([np.sign(x) for x in n]) for n in (one, two))
    assert set(np.unique(signs_one)) == {-1.0, 1.0}
    assert 0.45 < float((signs_one == signs_two).mean()) < 0.55
    again = E.noise(SETTINGS, 1)
    assert all(np.array_equal(a, b) for a, b in zip(one, again, strict=True))


def test_the_noise_is_the_runs_own_a_seed_draws_another() -> None:
    """N_r comes from (the run's seed, r): two runs with other seeds share no noise (about
    half the signs agree), so a seed group's members really are independent."""
    one = np.concatenate([np.sign(x) for x in E.noise(SETTINGS, 1)])
    reseeded = changed(SETTINGS, seed=SETTINGS.seed + 1)
    other = np.concatenate([np.sign(x) for x in E.noise(reseeded, 1)])
    assert 0.45 < float((one == other).mean()) < 0.55


def test_num_params_counts_every_weight_of_the_run_s_network() -> None:
    """The bits-per-parameter denominator: every masked weight of this run's network (a
    wider network has more)."""
    model = N.plain_model(SETTINGS)
    assert E.num_params(SETTINGS) == sum(w.size for w in E.network(SETTINGS).initial)
    assert E.num_params(SETTINGS) == sum(p.numel() for p in model.parameters())
    wider = changed(SETTINGS, width=SETTINGS.width * 2)
    assert E.num_params(wider) > E.num_params(SETTINGS)


def test_vote_fraction_is_the_weighted_mean_and_refuses_ragged_votes() -> None:
    """Any positive weights (a sum under 1 too: only the ratios matter), float64; a vote
    with a layer too few or too many, or a weight per vote missing, is refused, never
    silently cut to the shortest."""
    a = [np.array([1, 0, 1, 0], dtype=np.int8), np.array([1, 1], dtype=np.int8)]
    b = [np.array([0, 0, 1, 1], dtype=np.int8), np.array([0, 1], dtype=np.int8)]
    for weights in ([0.1, 0.3], [1, 3], [25.0, 75.0]):
        got = E.vote_fraction([a, b], weights)
        assert [g.dtype for g in got] == [np.float64, np.float64]
        assert np.allclose(got[0], [0.25, 0.0, 1.0, 0.75]) and np.allclose(got[1], [0.25, 1.0])
    for ragged in ([a, b[:1]], [a, [*b, np.array([1], dtype=np.int8)]]):
        with pytest.raises(ValueError):
            E.vote_fraction(ragged, [1, 1])
    with pytest.raises(ValueError):
        E.vote_fraction([a, b], [1.0])
    for bad in ([0.0, 0.0], [float("inf"), 1.0]):
        with pytest.raises(ValueError, match="positive finite weight sum"):
            E.vote_fraction([a, b], bad)


def test_load_weights_refuses_a_list_of_the_wrong_length() -> None:
    """An evaluation model takes exactly its network's weights: one too few or too many is
    an error, not a model half the prototype's."""
    model = N.plain_model(SETTINGS)
    weights = [w.copy() for w in E.network(SETTINGS).initial]
    E.load_weights(model, weights)
    installed = [p.detach().numpy().ravel() for p in model.parameters()]
    assert all(np.array_equal(p, w.ravel()) for p, w in zip(installed, weights, strict=True))
    for wrong in (weights[:-1], [*weights, weights[-1]]):
        with pytest.raises(ValueError):
            E.load_weights(model, wrong)


def test_the_dither_is_fresh_every_round_and_every_layer() -> None:
    # A vote fraction of 1/2 on one level: floor(1/2 + u) is 1 exactly when u >= 1/2, so two
    # independent draws agree on about half the weights; the same round again agrees on all.
    f = [np.full(20_000, 0.5), np.full(20_000, 0.5)]
    one_bit = changed(SETTINGS, dither_levels=1)
    r1 = ER.dither_rule(f, 4, one_bit, 1, {}).levels
    r2 = ER.dither_rule(f, 4, one_bit, 2, {}).levels
    assert 0.47 < float((r1[0] == r2[0]).mean()) < 0.53  # round 1 vs round 2
    assert 0.47 < float((r1[0] == r1[1]).mean()) < 0.53  # layer 0 vs layer 1
    again = ER.dither_rule(f, 4, one_bit, 1, {}).levels
    assert all(np.array_equal(a, b) for a, b in zip(r1, again, strict=True))


def test_round_noise_is_plus_or_minus_scale_times_he_std_per_layer() -> None:
    # He std is sqrt(2 / fan_in): layers of fan-in 8 and 2 at scale 0.5 -> +-0.25 and +-0.5.
    shapes = [E.LayerShape("a", (3, 8)), E.LayerShape("b", (4000, 2))]
    noise = E.round_noise(3, "noise/1", shapes, 0.5)
    assert [n.dtype for n in noise] == [np.float32, np.float32]
    assert set(np.abs(noise[0]).tolist()) == {0.25} and set(np.abs(noise[1]).tolist()) == {0.5}
    assert 0.45 < float((noise[1] > 0).mean()) < 0.55  # fair signs
    other = E.round_noise(3, "noise/2", shapes, 0.5)[1]
    assert 0.45 < float((np.sign(other) == np.sign(noise[1])).mean()) < 0.55
    assert np.array_equal(E.round_noise(3, "noise/1", shapes, 0.5)[1], noise[1])
    assert E.lattice_steps(shapes, 0.5)[0].tolist() == [0.25] * 24


def test_vote_fraction_is_the_weighted_mean_of_the_masks() -> None:
    # Weights 1 and 3: (1 * m0 + 3 * m1) / 4, ternary votes too.
    masks = [[np.array([1, 0, 1, -1], np.int8)], [np.array([0, 0, 1, 1], np.int8)]]
    got = E.vote_fraction(masks, [1.0, 3.0])
    assert got[0].tolist() == [0.25, 0.0, 1.0, 0.5] and got[0].dtype == np.float64
    for bad in ([0.0, 0.0], [1.0, float("inf")]):
        with pytest.raises(ValueError, match="positive finite"):
            E.vote_fraction(masks, bad)
    with pytest.raises(ValueError, match="at least one mask"):
        E.vote_fraction([], [])


def test_weight_shapes_refuse_biases_and_weights_install_in_order() -> None:
    import torch
    from torch import nn

    model = nn.Sequential(nn.Linear(3, 2, bias=False), nn.ReLU(), nn.Linear(2, 1, bias=False))
    shapes = E.weight_shapes(model)
    assert [(s.name, s.shape) for s in shapes] == [("0.weight", (2, 3)), ("2.weight", (1, 2))]
    tensors = {"0.weight": torch.arange(6.0).view(2, 3), "2.weight": torch.tensor([[7.0, 8.0]])}
    flat = E.initial_weights(tensors, shapes)
    assert [f.tolist() for f in flat] == [[0, 1, 2, 3, 4, 5], [7, 8]]
    assert all(f.dtype == np.float32 for f in flat)
    E.load_weights(model, [np.full(6, 2.0, np.float32), np.array([1.0, -1.0], np.float32)])
    assert model[0].weight.tolist() == [[2.0] * 3] * 2 and model[2].weight.tolist() == [[1, -1]]
    with pytest.raises(ValueError, match="bias-free"):
        E.weight_shapes(nn.Linear(3, 2))


def test_a_noise_mask_keeps_exactly_the_density_and_is_seeded() -> None:
    net = E.network(SETTINGS)
    data = N.dataset_of(SETTINGS)
    x, y = data.x_train[:64], data.y_train[:64]
    cfg = ER.train_config(SETTINGS)
    weights, noise = [w.copy() for w in net.initial], E.noise(SETTINGS, 1)
    masks, loss = ER.train_noise_mask(N.plain_model(SETTINGS), weights, noise, x, y, cfg,
                                     density=0.05, seed=1)  # fmt: skip
    # round(0.05 * 4096) = 205 and round(0.05 * 640) = 32 edges per layer, 0/1, int8.
    assert [int(m.sum()) for m in masks] == [205, 205, 32] and np.isfinite(loss)
    assert all(m.dtype == np.int8 and set(np.unique(m).tolist()) <= {0, 1} for m in masks)
    signed, _ = ER.train_noise_mask(N.plain_model(SETTINGS), weights, noise, x, y, cfg,
                                   density=0.05, seed=1, signed=True)  # fmt: skip
    assert [int(np.abs(m).sum()) for m in signed] == [205, 205, 32]
    assert all(set(np.unique(m).tolist()) == {-1, 0, 1} for m in signed[:2])
    again, _ = ER.train_noise_mask(N.plain_model(SETTINGS), weights, noise, x, y, cfg,
                                  density=0.05, seed=1)  # fmt: skip
    assert all(np.array_equal(a, b) for a, b in zip(masks, again, strict=True))


def test_momentum_keeps_a_velocity_every_party_can_rebuild() -> None:
    # beta = 0.5, a basis of ones, every level 1 over denom 1: the update is 1 per weight.
    # Round 1: V = 0.5 * 0 + 1 = 1, W = W0 + 1; round 2: V = 0.5 * 1 + 1 = 1.5, W = W0 + 2.5.
    net = E.network(SETTINGS)
    scheme = ER.Scheme(rule=evolve.counts_rule,
                           basis=lambda s, r: [np.ones(n, np.float32) for n in net.sizes],
                           momentum=lambda s: 0.5)  # fmt: skip
    state = ER.state_of(SETTINGS, scheme)
    assert len(state) == 2 * len(net.sizes) and not any(v.any() for v in state[3:])
    assert ER.state_sizes(SETTINGS, scheme) == net.sizes + net.sizes
    ones = ER.Levels([np.ones(n, np.int16) for n in net.sizes], 1, 1)
    for _ in range(2):
        state = ER.step(SETTINGS, scheme, state, 1, ones)
    w0 = net.initial[0][:3]
    np.testing.assert_allclose(state[0][:3], w0 + np.float32(2.5), rtol=1e-6)
    assert state[3][:3].tolist() == [1.5, 1.5, 1.5]
    assert evolve_momentum.SCHEME.momentum is not None
    assert evolve_momentum.SCHEME.momentum(changed(SETTINGS, weight_momentum=0.7)
                                           ) == 0.7  # fmt: skip
    assert evolve_momentum.SCHEME.rule is ER.dither_rule


def test_counts_rule_rounds_example_weighted_fractions_to_k_steps() -> None:
    # K = 3 valid replies: 0.5 of the weight -> round(1.5) = 2 (half to even), 0.1 -> 0.
    upd = evolve.counts_rule([np.array([0.5, 0.1, 2 / 3, 1.0])], 3, SETTINGS, 1, {})
    assert upd.levels[0].tolist() == [2, 0, 2, 3] and upd.levels[0].dtype == np.int16
    assert (upd.denom, upd.max_level, upd.offset) == (3, 3, 0)


def test_sigma_delta_steps_are_whole_and_carry_the_remainder() -> None:
    # f = 0.4 each round: A = 0.4, 0.8, 1.2, 1.6, 2.0 -> steps 0, 1, 0, 1, 0 (A - S rounds).
    state: dict = {}
    steps = []
    for r in range(1, 6):
        upd = evolve_lattice.sigma_delta_rule([np.array([0.4, -1.0])], 2, SETTINGS, r, state)
        assert (upd.denom, upd.max_level, upd.offset) == (1, 4, 2)
        steps.append((upd.levels[0] - upd.offset).tolist())
    assert [s[0] for s in steps] == [0, 1, 0, 1, 0]
    assert [s[1] for s in steps] == [-1] * 5
    assert state["sent"][0].tolist() == [2, -5]


@pytest.mark.parametrize("weighting, level, loss", [("examples", 2, 2.5), ("uniform", 1, 2.0)])
def test_the_server_weighs_votes_by_examples_or_uniformly(weighting: str, level: int,
                                                          loss: float) -> None:  # fmt: skip
    # Two replies: node 0 votes for edge 0 only (30 examples, loss 3), node 1 for nothing
    # (10 examples, loss 1). By examples the fraction is 0.75 -> level round(1.5) = 2 of K = 2,
    # so W moves by N_1 * 2 / 2; uniformly 0.5 -> level 1, W moves by N_1 / 2.
    from flwr.app import MetricRecord, RecordDict

    from pemn_fl.levels_codec import encode_levels

    settings = dataclasses.replace(SETTINGS, vote_weighting=weighting)
    side = H.scheduled(evolve, settings, PARTITIONS, {1: [0, 1]})
    strategy, net = side.strategy, E.network(settings)
    votes = {100: (1, 30, 3.0), 101: (0, 10, 1.0)}  # node: (vote, examples, loss)

    def answer(msg: Message, ctx: Context, s: RunSettings) -> Message:
        vote, n, train_loss = votes[msg.metadata.dst_node_id]
        mask = [np.zeros(size, np.int16) for size in net.sizes]
        mask[0][0] = vote
        payload = encode_levels(mask, fingerprint=net.fingerprint, tag=1, max_level=1)
        return Message(content=RecordDict({"update": ConfigRecord({"mask": payload}),
                                           "metrics": MetricRecord({"num-examples": n,
                                                                    "train-loss": train_loss})}),
                       reply_to=msg)  # fmt: skip

    (one,) = H.run_rounds(strategy, [1], answer, H.contexts(PARTITIONS), settings)
    assert strategy.rejected == 0 and one.metrics["train-loss"] == pytest.approx(loss)
    n1 = E.noise(settings, 1)
    moved = strategy.weights[0] - net.initial[0]
    np.testing.assert_allclose(moved[0], n1[0][0] * level / 2, rtol=1e-5)
    assert not moved[1:].any()
    assert all(np.array_equal(w, w0)
               for w, w0 in zip(strategy.weights[1:], net.initial[1:], strict=True))


def test_the_straight_through_top_k_selects_forward_and_passes_the_gradient_back() -> None:
    import torch

    scores = torch.tensor([-3.0, 1.0, 0.5, 2.0], requires_grad=True)
    # Half the edges: signed keeps the two largest |s| with their signs; unsigned the two
    # largest s.
    signed = GetSubnet.apply(scores, 0.5, True)
    assert signed.tolist() == [-1.0, 0.0, 0.0, 1.0]
    unsigned = GetSubnet.apply(scores, 0.5, False)
    assert unsigned.tolist() == [0.0, 1.0, 0.0, 1.0]
    (signed * torch.tensor([1.0, 2.0, 3.0, 4.0])).sum().backward()
    assert scores.grad.tolist() == [1.0, 2.0, 3.0, 4.0]  # identity backward


# -- merged catch-up (evolve_lattice --merged-catch-up) ------------------------------------
MERGED = changed(SETTINGS, merged_catch_up=True)
GAPS = {1: [0, 1], 2: [1, 2], 3: [1, 3], 4: [0, 2, 3], 5: [0, 1, 2, 3]}


def _merged_run(schedule: dict[int, list[int]], settings: RunSettings = MERGED,
                tamper=None,  # noqa: ANN001
                ) -> tuple[object, dict[int, Context], dict[int, list[Message]]]:  # fmt: skip
    strategy = H.scheduled(evolve_lattice, settings, PARTITIONS, schedule).strategy
    contexts = H.contexts(PARTITIONS)
    step = evolve_lattice.METHOD.client_step
    if tamper is None:
        rounds = list(H.replicated_rounds(strategy, sorted(schedule), step, contexts, settings,
                                          "evolve_lattice"))  # fmt: skip
    else:
        rounds = list(H.run_rounds(strategy, sorted(schedule), step, contexts, settings,
                                   tamper=tamper))  # fmt: skip
    return strategy, contexts, {one.r: one.sent for one in rounds}


def _to(sent: list[Message], partition: int) -> ConfigRecord:
    return next(m for m in sent if m.metadata.dst_node_id == 100 + partition).content["config"]


def test_merged_catch_up_sends_one_update_for_every_missed_round_and_everyone_agrees() -> None:
    # replicated_rounds checks that every node that took part holds the server's state.
    strategy, contexts, log = _merged_run(GAPS)
    plain, _, plain_log = _run(evolve_lattice, "evolve_lattice", GAPS)
    # Round 4: node 0 missed rounds 1-3 (it holds round 0), node 2 rounds 2-3: one merged
    # update each; node 3 took part in round 3, so it needs round 3 alone, as without merging.
    for partition, first in ((0, 1), (2, 2)):
        cfg = _to(log[4], partition)
        assert int(cfg["from-round"]) == first
        assert sorted(k for k in cfg if "update" in k or "levels" in k) == [
            "merged-levels", "merged-update"]
        unmerged = _to(plain_log[4], partition)
        assert len(bytes(cfg["merged-update"])) < sum(
            len(bytes(unmerged[f"update-{t}"])) for t in range(first, 4))
    assert sorted(k for k in _to(log[4], 3) if k.startswith("update")) == ["update-3"]
    # The state is the summed integer steps, the weights W_0 + basis * S.
    state = strategy.replica.state
    assert all(np.array_equal(s, np.round(s)) for s in state) and any(s.any() for s in state)
    basis = evolve_lattice.lattice(MERGED, 1)
    for w, w0, b, s in zip(strategy.weights, strategy.net.initial, basis, state, strict=True):
        assert np.array_equal(w, (w0 + b * s).astype(np.float32))
    # After one round both arithmetics are the same operation (W_0 + basis * step); later the
    # float32 sums differ in their last bits, and the runs' masks with them.
    one, _, _ = _merged_run({1: [0, 1]})
    plain_one, _, _ = _run(evolve_lattice, "evolve_lattice", {1: [0, 1]})
    assert R.digest(one.weights) == R.digest(plain_one.weights)


def test_a_merged_update_is_exactly_the_rounds_applied_one_by_one() -> None:
    strategy, _, _ = _merged_run({1: [0, 1], 2: [1, 2], 3: [2, 3], 4: [0, 3]})
    made = [(t, strategy.replica.updates[t]) for t in (2, 3, 4)]
    apply = ER.apply_round(MERGED, evolve_lattice.SCHEME)
    one_by_one = ER.state_of(MERGED, evolve_lattice.SCHEME)
    for t, fields in made:
        one_by_one = apply(one_by_one, t, fields)
    merged = apply(ER.state_of(MERGED, evolve_lattice.SCHEME), 2, strategy.merge(2, made))
    assert all(np.array_equal(a, b) for a, b in zip(merged, one_by_one, strict=True))
    levels = strategy.merge(2, made)["levels"]
    assert levels[0] == 1 and levels[1] == 2 * levels[2] >= 2  # whole steps, symmetric range


def test_a_node_whose_reply_was_lost_gets_the_rounds_one_by_one() -> None:
    # Node 0's reply of round 2 is lost after it caught up: the server cannot know what it
    # holds, so round 4 sends it every round since the last reply it saw, not one merged
    # update; the node steps over what it already applied and lands on the server's state.
    def lose(r: int, reply: Message) -> Message | None:
        return None if (r, reply.metadata.src_node_id) == (2, 100) else reply

    schedule = {1: [0, 1], 2: [0, 1], 3: [1, 2], 4: [0, 3]}
    strategy, contexts, log = _merged_run(schedule, tamper=lose)
    cfg = _to(log[4], 0)
    # Its last reply the server saw was round 1's (it held round 0 then); it holds round 1.
    assert int(cfg["from-round"]) == 1 and not any(k.startswith("merged-") for k in cfg)
    assert sorted(k for k in cfg if k.startswith("update")) == ["update-1", "update-2",
                                                                "update-3"]  # fmt: skip
    held = contexts[100].state["evolve_lattice-weights"].to_numpy_ndarrays()
    assert int(contexts[100].state["evolve_lattice-round"]["round"]) == 3
    assert R.digest(held) == R.digest(_state_before(strategy, 4))
    assert strategy.replica.holds[100] == 3  # its round-4 reply was valid


def _state_before(strategy, r: int) -> list[np.ndarray]:  # noqa: ANN001
    """The integer state at the start of round r, from S_0 and the logged updates."""
    apply = ER.apply_round(MERGED, evolve_lattice.SCHEME)
    state = ER.state_of(MERGED, evolve_lattice.SCHEME)
    for t in range(1, r):
        state = apply(state, t, strategy.replica.updates[t])
    return state


def test_merged_catch_up_needs_a_constant_step_and_a_fixed_basis() -> None:
    with pytest.raises(ValueError, match="merged-catch-up sums the rounds' steps"):
        changed(MERGED, lr_schedule="cosine")
    # evolve's basis is fresh noise every round: the option leaves it as it is.
    assert not ER.integer_state(changed(SETTINGS, merged_catch_up=True), evolve.SCHEME)
    assert ER.integer_state(MERGED, evolve_lattice.SCHEME)
    assert not ER.integer_state(SETTINGS, evolve_lattice.SCHEME)


@pytest.mark.parametrize("tamper", ["flip", "levels", "huge"])
def test_a_damaged_merged_update_is_refused_in_one_line_and_the_node_keeps_its_state(
        tamper: str) -> None:  # fmt: skip
    strategy, contexts, _ = _merged_run({1: [1], 2: [1], 3: [1]})  # node 0 missed rounds 1-2
    (msg,) = [m for m in strategy.configure_train(4, None, ConfigRecord(), None)  # type: ignore[arg-type]
              if m.metadata.dst_node_id == 100]  # fmt: skip
    cfg = msg.content["config"]
    if tamper == "flip":
        damaged = bytearray(bytes(cfg["merged-update"]))
        damaged[len(damaged) // 2] ^= 0xFF
        cfg["merged-update"] = bytes(damaged)
    else:  # a denominator no integer state takes, or a header bound far past the codec's
        cfg["merged-levels"] = [2, 2, 1] if tamper == "levels" else [1, 2**40, 1]
    with pytest.raises(RuntimeError, match="partition 0 rejected the downlink") as info:
        evolve_lattice.METHOD.client_step(msg, contexts[100], MERGED)
    assert "\n" not in str(info.value)
    assert "evolve_lattice-weights" not in contexts[100].state  # nothing half-applied
