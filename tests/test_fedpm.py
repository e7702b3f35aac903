"""FedPM (``fedpm``) and its carried-posterior variant (``fedpm_bayes``), in-process on real
Flower Messages: probabilistic masks learn, the Bernoulli codec round-trips at about the
cross-entropy and rejects what it cannot trust, every party holds the same posterior after
every round, and bytes equal the encoded lengths."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from flwr.app import ConfigRecord, Context, Message

import tests.harness as H
from pemn_fl import networks as N
from pemn_fl.accounting import payload_bytes
from pemn_fl.codec import decode_mask
from pemn_fl.config import RunSettings
from pemn_fl.methods import fedpm, fedpm_bayes
from pemn_fl.methods.frames import evolving as E
from pemn_fl.methods.frames import probmask as PM
from pemn_fl.task import evaluate
from tests.harness import changed

SETTINGS = RunSettings(dataset="synthetic", model="mlp", width=0.25, local_epochs=1,
                       batch_size=32, min_nodes=1)  # fmt: skip
PARTITIONS = 4


pytestmark = pytest.mark.usefixtures("flower_identity")


def _context(pid: int) -> Context:
    return H.context(pid, PARTITIONS)


def _strategy(module, schedule: dict[int, list[int]], settings: RunSettings = SETTINGS):  # noqa: ANN001, ANN202
    return H.scheduled(module, settings, PARTITIONS, schedule)


# -- probabilistic masks -----------------------------------------------------------------
def test_probabilistic_masks_learn_the_task() -> None:
    settings = dataclasses.replace(SETTINGS, local_epochs=3)
    data = N.dataset_of(settings)
    model = N.plain_model(settings)
    weights = list(E.network(settings).initial)
    theta = [np.full(s, 0.5) for s in E.network(settings).sizes]
    before = evaluate_sample(model, weights, theta, data)
    q, loss = PM.train_prob_mask(model, weights, theta, data.x_train, data.y_train,
                                 PM.train_config(settings), seed=3)  # fmt: skip
    assert all(((p >= 0) & (p <= 1)).all() for p in q) and np.isfinite(loss)
    after = evaluate_sample(model, weights, q, data)
    assert after > before + 0.2  # one sample of the trained probabilities beats a coin flip
    again, _ = PM.train_prob_mask(model, weights, theta, data.x_train, data.y_train,
                                  PM.train_config(settings), seed=3)  # fmt: skip
    assert all(np.array_equal(a, b) for a, b in zip(q, again, strict=True))  # reproducible


def evaluate_sample(model, weights, theta, data) -> float:  # noqa: ANN001
    from pemn_fl.methods.frames import evolving as E

    E.load_weights(model, PM.masked_weights(weights, PM.sample(theta, 0)))
    return evaluate(model, data.x_test, data.y_test)[1]


def test_coupled_samples_are_exact_and_differ_by_the_probability_gap() -> None:
    rng = np.random.default_rng(1)
    theta = [rng.random(200_000)]
    q = [np.clip(theta[0] + rng.normal(0, 0.05, theta[0].size), 0, 1)]
    m, r = PM.coupled_sample(q, theta, seed=9)
    assert m[0].mean() == pytest.approx(q[0].mean(), abs=0.005)  # a true sample of q
    assert r[0].mean() == pytest.approx(theta[0].mean(), abs=0.005)  # and of theta
    flips = (m[0] ^ r[0]).mean()
    assert flips == pytest.approx(np.abs(q[0] - theta[0]).mean(), abs=0.003)
    _, r_again = PM.coupled_sample(theta, theta, seed=9)  # the server's rebuild
    assert np.array_equal(r[0], r_again[0])


# -- FedPM as published ------------------------------------------------------------------
def test_fedpm_round_trip_floats_down_mask_samples_up() -> None:
    side = _strategy(fedpm, {1: [0, 1, 2], 2: [1, 2, 3]})
    strategy = side.strategy
    net = E.network(SETTINGS)
    for one in H.run_rounds(strategy, (1, 2), fedpm.METHOD.client_step, H.contexts(PARTITIONS),
                            SETTINGS):  # fmt: skip
        for m in one.sent:  # float32 probabilities, every one counted
            assert payload_bytes(m) == 4 * sum(net.sizes)
        masks = []
        for reply in one.replies:
            payload = bytes(reply.content["update"]["mask"])
            assert payload_bytes(reply) == len(payload) > 0
            masks.append(decode_mask(payload, fingerprint=net.fingerprint,
                                     layer_sizes=tuple(net.sizes),
                                     references={one.r: PM.mode(strategy.sent)}))  # fmt: skip
        assert one.arrays is not None and strategy.rejected == 0
        # Beta(1, 1) reset every round: (1 + votes) / (2 + K), from this round's samples only.
        votes = [sum(m[i].astype(float) for m in masks) for i in range(len(net.sizes))]
        for got, v in zip(one.arrays.to_numpy_ndarrays(), votes, strict=True):
            np.testing.assert_allclose(got, (1 + v) / (2 + len(masks)), rtol=1e-6)
    side.install(one.arrays)  # evaluates one sampled network


def test_fedpm_rejects_a_bad_reply_and_goes_on() -> None:
    strategy = _strategy(fedpm, {1: [0, 1]}).strategy

    def garbage(r: int, reply: Message) -> Message:
        if reply.metadata.src_node_id == H.FIRST_NODE:  # the first reply
            reply.content["update"]["mask"] = b"garbage"
        return reply

    (one,) = H.run_rounds(strategy, [1], fedpm.METHOD.client_step, H.contexts(PARTITIONS),
                          SETTINGS, tamper=garbage)  # fmt: skip
    assert one.arrays is not None and strategy.rejected == 1


# -- FedPM with the posterior carried ----------------------------------------------------
@pytest.mark.parametrize("decay", [1.0, 0.5])
def test_fedpm_bayes_every_party_holds_the_same_posterior(decay: float) -> None:
    settings = changed(SETTINGS, posterior_decay=decay)
    schedule = {1: [0, 1], 2: [1, 2], 3: [0, 3], 4: [0, 1, 2, 3]}
    strategy = _strategy(fedpm_bayes, schedule, settings).strategy
    contexts = H.contexts(PARTITIONS)
    for one in H.replicated_rounds(strategy, sorted(schedule), fedpm_bayes.METHOD.client_step,
                                   contexts, settings, "fedpm_bayes"):  # fmt: skip
        for m, reply in zip(one.sent, one.replies, strict=True):
            # Counted bytes = the relayed counts of every missed round + digest, and the
            # mask coded against the posterior both sides hold.
            relayed_rounds = len([k for k in m.content["config"] if k.startswith("counts-")])
            held_before = one.r - 1 - relayed_rounds
            assert held_before >= 0
            cfg = m.content["config"]
            relayed = sum(len(bytes(v)) for k, v in cfg.items() if k.startswith("counts-"))
            assert payload_bytes(m) == relayed + 8
            assert payload_bytes(reply) == len(bytes(reply.content["update"]["mask"])) > 0
    alpha = strategy.replica.state[: len(strategy.replica.state) // 2]
    total = sum(len(v) for v in schedule.values())
    if decay == 1.0:  # every vote kept: alpha + beta = 2 + all votes ever cast
        beta = strategy.replica.state[len(alpha):]
        assert all(np.all(a + b == 2 + total) for a, b in zip(alpha, beta, strict=True))
    assert any(np.abs(a - 1).max() > 0 for a in alpha)


def test_fedpm_bayes_rejects_a_wrong_digest_clearly() -> None:
    strategy = _strategy(fedpm_bayes, {1: [0], 2: [0]}).strategy
    contexts = H.contexts(PARTITIONS)
    (_,) = H.run_rounds(strategy, [1], fedpm_bayes.METHOD.client_step, contexts, SETTINGS)
    sent = list(strategy.configure_train(2, None, ConfigRecord(), None))  # type: ignore[arg-type]
    sent[0].content["config"]["digest"] = b"\x00" * 8
    with pytest.raises(RuntimeError, match="digest mismatch"):
        fedpm_bayes.METHOD.client_step(sent[0], contexts[H.FIRST_NODE], SETTINGS)


# -- known answers (not replays: each expected value is worked out by hand) --------------
def test_posterior_update_decays_the_old_votes_by_rho() -> None:
    # alpha = 1 + rho (alpha - 1) + c and beta = 1 + rho (beta - 1) + K - c, with K = 2:
    # edge 0 holds Beta(3, 5) and gets 1 vote, edge 1 holds Beta(1, 1) and gets 2.
    state = [np.array([3.0, 1.0], np.float32), np.array([5.0, 1.0], np.float32)]
    counts = [np.array([1, 2], np.int16)]
    halved = fedpm_bayes.apply_counts(state, counts, 2, decay=0.5)
    assert [a.tolist() for a in halved] == [[3.0, 3.0], [4.0, 1.0]]
    kept = fedpm_bayes.apply_counts(state, counts, 2, decay=1.0)
    assert [a.tolist() for a in kept] == [[4.0, 3.0], [6.0, 1.0]]


def test_fedpm_bayes_uniforms_are_fresh_every_round_and_partition() -> None:
    # The shared uniforms make each round's sample; reused across rounds they would draw the
    # same reference sample of a fixed theta every round (no longer independent draws).
    seeds = {(p, r): fedpm_bayes.uniforms_seed(SETTINGS, p, r) for p in range(3)
             for r in range(1, 4)}  # fmt: skip
    assert len(set(seeds.values())) == len(seeds)
    half = [np.full(20_000, 0.5)]
    _, r1 = PM.coupled_sample(half, half, seeds[0, 1])
    _, r2 = PM.coupled_sample(half, half, seeds[0, 2])
    assert 0.47 < float((r1[0] == r2[0]).mean()) < 0.53  # independent fair coins


def test_fedpm_bayes_posterior_counts_exactly_the_samples_the_clients_drew(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Clients whose trained probabilities are exactly 0 or 1 draw a known sample m = q
    # (u < 1 always, u < 0 never) whatever the uniforms, so the posterior is known by hand.
    # q alternates 0, 1; round 1: one client, round 2: three, decay 1/2:
    #   after round 1: alpha = 1 + q,                  beta = 1 + (1 - q)
    #   after round 2: alpha = 1 + (q) / 2 + 3 q,      beta = 1 + (1 - q) / 2 + 3 (1 - q)
    # so alpha = 4.5 where q = 1 (beta = 1), and beta = 4.5 where q = 0 (alpha = 1).
    net = E.network(SETTINGS)
    q = [(np.arange(n) % 2).astype(np.float64) for n in net.sizes]
    monkeypatch.setattr(PM, "local_round", lambda settings, theta, pid, n, r: (q, 0.5, 10))
    settings = changed(SETTINGS, posterior_decay=0.5)
    schedule = {1: [0], 2: [0, 1, 2]}
    strategy = _strategy(fedpm_bayes, schedule, settings).strategy
    for _ in H.run_rounds(strategy, sorted(schedule), fedpm_bayes.METHOD.client_step,
                          H.contexts(PARTITIONS), settings):  # fmt: skip
        assert strategy.rejected == 0
    half = len(strategy.replica.state) // 2
    for qi, alpha, beta in zip(q, strategy.replica.state[:half], strategy.replica.state[half:],
                               strict=True):  # fmt: skip
        assert alpha.tolist() == np.where(qi == 1, 4.5, 1.0).tolist()
        assert beta.tolist() == np.where(qi == 1, 1.0, 4.5).tolist()


def test_fedpm_resets_its_beta_prior_every_round(monkeypatch: pytest.MonkeyPatch) -> None:
    # Clients whose trained probabilities are exactly 0 or 1 send a known sample m = q.
    # Round 1, two clients with q = 0, 1, 0, 1, ...: theta = (1 + 2q) / (2 + 2) = 1/4 or 3/4.
    # Round 2, one client: the prior is reset, theta = (1 + q) / 3 = 1/3 or 2/3.
    net = E.network(SETTINGS)
    q = [(np.arange(n) % 2).astype(np.float64) for n in net.sizes]
    monkeypatch.setattr(PM, "local_round", lambda settings, theta, pid, n, r: (q, 0.5, 10))
    strategy = _strategy(fedpm, {1: [0, 1], 2: [2]}).strategy
    rounds = H.run_rounds(strategy, (1, 2), fedpm.METHOD.client_step, H.contexts(PARTITIONS),
                          SETTINGS)  # fmt: skip
    for one, expected in zip(rounds, ((0.25, 0.75), (1 / 3, 2 / 3)), strict=True):
        assert strategy.rejected == 0 and one.metrics["train-loss"] == pytest.approx(0.5)
        for got, qi in zip(one.arrays.to_numpy_ndarrays(), q, strict=True):
            np.testing.assert_allclose(got, np.where(qi == 1, expected[1], expected[0]),
                                       rtol=1e-6)  # fmt: skip


def test_a_fedpm_client_refuses_probabilities_that_do_not_fit() -> None:
    from flwr.app import ArrayRecord, RecordDict

    net = E.network(SETTINGS)
    for probs in ([np.full(n, 0.5, np.float32) for n in net.sizes[:-1]],  # a layer missing
                  [np.full(n, 1.5, np.float32) for n in net.sizes],
                  [np.full(n, np.nan, np.float32) for n in net.sizes],
                  [np.full(n, -0.1, np.float32) for n in net.sizes]):  # fmt: skip
        msg = Message(content=RecordDict({"config": ConfigRecord({"server-round": 1}),
                                          "probs": ArrayRecord(probs)}),
                      dst_node_id=100, message_type="train.fedpm")  # fmt: skip
        with pytest.raises(RuntimeError, match="rejected the downlink"):
            fedpm.METHOD.client_step(msg, _context(0), SETTINGS)


def test_the_evaluated_network_of_0_1_probabilities_is_that_mask() -> None:
    from flwr.app import ArrayRecord

    net = E.network(SETTINGS)
    mask = [(np.arange(n) % 3 == 0).astype(np.float32) for n in net.sizes]
    arrays = ArrayRecord(mask)
    assert all(np.array_equal(s, m) for s, m in zip(PM.sampled_mask(arrays), mask,
                                                     strict=True))  # fmt: skip
    compacted = PM.compact(SETTINGS, arrays).to_numpy_ndarrays()
    assert all(c.dtype == np.float32 and np.array_equal(c, m)
               for c, m in zip(compacted, mask, strict=True))  # fmt: skip
    model = N.plain_model(SETTINGS)
    PM.install_sampled(model, list(net.initial), arrays)
    installed = [p.detach().numpy().reshape(-1) for p in model.parameters()]
    for got, w0, m in zip(installed, net.initial, mask, strict=True):
        assert np.array_equal(got, w0 * m)


def test_probability_helpers_by_hand() -> None:
    assert PM.posterior_mean([np.array([3.0, 1.0])], [np.array([1.0, 3.0])])[0].tolist() == [
        0.75, 0.25]  # fmt: skip
    eps = PM.EPS
    got = PM.logits([np.array([0.0, 0.5, 1.0])])[0]
    edge = np.log((1 - eps) / eps)
    np.testing.assert_allclose(got, [-edge, 0.0, edge], rtol=1e-6)
    assert PM.sample([np.array([0.0, 1.0, 0.0, 1.0])], seed=3)[0].tolist() == [0, 1, 0, 1]
    half = PM.sample([np.full(20_000, 0.5)], seed=3)[0]
    assert half.dtype == np.uint8 and 0.48 < half.mean() < 0.52
    assert fedpm_bayes.theta_of([np.array([3.0]), np.array([1.0])])[0].tolist() == [0.75]


@pytest.mark.parametrize("k", [0, fedpm_bayes.MAX_VOTES + 1])
def test_fedpm_bayes_refuses_a_vote_count_outside_its_bounds(k: int) -> None:
    from pemn_fl.codec import MaskPayloadError

    apply = fedpm_bayes.apply_round(SETTINGS)
    state = fedpm_bayes.initial_state(SETTINGS)
    with pytest.raises(MaskPayloadError, match="vote count"):
        apply(state, 1, {"counts": b"", "k": k})


@pytest.mark.parametrize("module", [fedpm, fedpm_bayes])
def test_the_server_side_starts_from_theta_and_evaluates_a_sampled_network(module) -> None:  # noqa: ANN001
    """What the ServerApp gets: the initial probabilities (theta_0 as float32, evaluated as
    round 0) and ``install``, which puts one network sampled from them into the model."""
    from pemn_fl.sampling import RoundSampler

    sampler = RoundSampler({p: H.FIRST_NODE + p for p in range(PARTITIONS)}, 1.0, seed=0)
    side = module.METHOD.server(SETTINGS, sampler)
    theta = side.initial.to_numpy_ndarrays()
    assert [t.dtype for t in theta] == [np.float32] * len(theta)
    assert [t.size for t in theta] == E.network(SETTINGS).sizes
    side.install(side.initial)
    expected = PM.masked_weights(list(E.network(SETTINGS).initial), PM.sampled_mask(side.initial))
    got = [p.detach().numpy().ravel() for p in side.model.parameters()]
    assert all(np.array_equal(g, w.ravel()) for g, w in zip(got, expected, strict=True))
