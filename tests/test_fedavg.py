"""FedAvg's server on hand-made replies whose average is known (no client training)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict

from pemn_fl.methods import fedavg
from pemn_fl.methods.frames import frozen, mask_voting
from pemn_fl.sampling import RoundSampler
from tests.harness import build_settings, run_rounds

pytestmark = pytest.mark.usefixtures("flower_identity")
NODES = {0: 11, 1: 12, 2: 13, 3: 14}


def _strategy(robust: str = "none") -> fedavg.SampledFedAvg:
    settings = build_settings(dataset="synthetic", model="mlp", robust=robust)
    return fedavg.sampled_strategy(settings, RoundSampler(NODES, 1.0, seed=0), max_examples=100)


def _round(strategy: fedavg.SampledFedAvg, replies: list[tuple[list[float], int]],
           extra: dict[int, Callable[[Message], Message]] | None = None,
           ) -> tuple[ArrayRecord | None, int]:  # fmt: skip
    """Round 1 on a one-tensor model ``w`` = (0, 0); node i answers ``replies[i]`` (its
    weights and examples) or ``extra[i](message)``; the other nodes never answer."""
    answers = {NODES[i]: _weights(w, n) for i, (w, n) in enumerate(replies)}
    answers.update({NODES[i]: make for i, make in (extra or {}).items()})

    def answer(msg: Message, ctx: None, settings: None) -> Message | None:
        make = answers.get(msg.metadata.dst_node_id)
        return None if make is None else make(msg)

    zeros = ArrayRecord({"w": Array(np.zeros(2, np.float32))})
    (one,) = run_rounds(strategy, [1], answer, arrays=zeros)
    return one.arrays, strategy.rejected


def _weights(w: list[float], n: int) -> Callable[[Message], Message]:
    """A reply of weights ``w`` trained on ``n`` examples."""

    def make(to: Message) -> Message:
        content = RecordDict({"arrays": ArrayRecord({"w": Array(np.array(w, np.float32))}),
                              "metrics": MetricRecord({"num-examples": n, "train-loss": 1.0})})
        return Message(content=content, reply_to=to)

    return make


def test_the_downlink_names_the_round_and_goes_to_the_sampled_nodes() -> None:
    strategy = _strategy()
    sent = list(strategy.configure_train(
        3, ArrayRecord({"w": Array(np.zeros(2, np.float32))}), ConfigRecord(), None))  # type: ignore[arg-type]
    assert sorted(m.metadata.dst_node_id for m in sent) == [11, 12, 13, 14]
    assert all(m.metadata.message_type == "train.fedavg" for m in sent)
    assert all(m.content["config"]["server-round"] == 3 for m in sent)


def test_fedavg_is_the_example_weighted_mean() -> None:
    # (10 * (1, 2) + 30 * (3, 6)) / 40 = (2.5, 5)
    arrays, rejected = _round(_strategy(), [([1, 2], 10), ([3, 6], 30)])
    assert rejected == 0 and arrays["w"].numpy().tolist() == [2.5, 5.0]


def test_a_reply_of_another_shape_or_with_a_nan_is_refused_and_the_rest_averaged() -> None:
    def wrong_shape(to: Message) -> Message:
        content = RecordDict({"arrays": ArrayRecord({"w": Array(np.zeros(3, np.float32))}),
                              "metrics": MetricRecord({"num-examples": 5})})  # fmt: skip
        return Message(content=content, reply_to=to)

    def not_finite(to: Message) -> Message:
        nan = Array(np.array([np.nan, 1], np.float32))
        content = RecordDict({"arrays": ArrayRecord({"w": nan}),
                              "metrics": MetricRecord({"num-examples": 5})})  # fmt: skip
        return Message(content=content, reply_to=to)

    def too_many_examples(to: Message) -> Message:
        content = RecordDict({"arrays": ArrayRecord({"w": Array(np.ones(2, np.float32))}),
                              "metrics": MetricRecord({"num-examples": 101})})  # fmt: skip
        return Message(content=content, reply_to=to)

    arrays, rejected = _round(_strategy(), [([1, 2], 10)],
                              {1: wrong_shape, 2: not_finite, 3: too_many_examples})
    assert rejected == 3 and arrays["w"].numpy().tolist() == [1.0, 2.0]
    arrays, rejected = _round(_strategy(), [], {0: wrong_shape})
    assert arrays is None and rejected == 1  # nothing valid: the model stays as it is


def test_robust_strategies_are_the_median_and_the_trimmed_mean() -> None:
    replies = [([0, 0], 10), ([1, 10], 10), ([2, 20], 10), ([100, -50], 10)]
    median, _ = _round(_strategy("median"), replies)
    assert median["w"].numpy().tolist() == [1.5, 5.0]  # coordinate-wise median of 4
    assert isinstance(_strategy("trimmed-mean"), fedavg.SampledFedTrimmedAvg)
    trimmed, _ = _round(_strategy("trimmed-mean"), replies)
    # TRIM = 0.2 of 4 values cuts int(0.8) = 0 at each end: the plain mean here.
    assert fedavg.TRIM == 0.2
    assert trimmed["w"].numpy().tolist() == [25.75, -5.0]
    assert type(_strategy()) is fedavg.SampledFedAvg


def test_fedavg_trains_on_the_shared_samplers_nodes_of_each_round() -> None:
    sampler = RoundSampler(NODES, 0.5, seed=3)
    settings = build_settings(dataset="synthetic", model="mlp")
    strategy = fedavg.sampled_strategy(settings, sampler)
    picked = []
    for r in range(1, 7):
        sent = strategy.configure_train(r, ArrayRecord({"w": Array(np.zeros(2, np.float32))}),
                                        ConfigRecord(), None)  # type: ignore[arg-type]
        nodes = sorted(m.metadata.dst_node_id for m in sent)
        assert nodes == sorted(sampler(r)) and len(nodes) == 2  # what every method trains on
        picked.append(tuple(nodes))
    assert len(set(picked)) > 1  # the sample moves with the round


def test_the_pemn_server_evaluates_the_mask_it_is_given() -> None:
    from pemn_fl.masked import get_masks

    settings = build_settings(dataset="synthetic", model="mlp", width=0.25)
    side = mask_voting.server(settings, RoundSampler(NODES, 1.0, seed=0), "pemn")
    sizes = side.strategy.layer_sizes
    mask = [(np.arange(n) % 2 == 1) for n in sizes]  # half of each layer: keep = 0.5
    side.install(frozen.mask_to_record(mask))
    got = [m.detach().numpy().reshape(-1).astype(bool) for m in get_masks(side.model)]
    assert all(np.array_equal(g, m) for g, m in zip(got, mask, strict=True))


def test_the_fedavg_client_trains_at_the_rounds_rate_on_the_run_seeds_batches(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The baseline's client: its step size follows ``--lr-schedule`` by the round it is
    asked to train, its minibatches are drawn from (the run's seed, partition, round), and it
    reports its loss as ``train-loss`` (what the round log reads)."""
    from pemn_fl.prototype import derived_seed
    from tests.harness import FIRST_NODE, contexts

    settings = build_settings(dataset="synthetic", model="mlp", width=0.25, dense_width=0.25,
                              lr_schedule="cosine", num_server_rounds=4, seed=7)  # fmt: skip
    calls: list[tuple[float, int]] = []
    real = fedavg.train

    def train(model, x, y, cfg, *, seed):  # noqa: ANN001, ANN202
        calls.append((cfg.lr, seed))
        return real(model, x, y, cfg, seed=seed)

    monkeypatch.setattr(fedavg, "train", train)
    sampler = RoundSampler({p: FIRST_NODE + p for p in range(2)}, 1.0, seed=0)
    side = fedavg.METHOD.server(settings, sampler)
    rounds = list(run_rounds(side.strategy, [1, 3], fedavg.client_step, contexts(2), settings,
                             side.initial))  # fmt: skip
    lr = settings["dense-lr"]
    expected = [(settings.scheduled(lr, r), derived_seed(7, f"batches/{p}/{r}"))
                for r in (1, 3) for p in (0, 1)]  # fmt: skip
    assert sorted(calls) == sorted(expected)
    assert settings.scheduled(lr, 1) != settings.scheduled(lr, 3)  # cosine: the round matters
    loss = rounds[0].replies[0].content["metrics"]["train-loss"]
    assert isinstance(loss, float) and np.isfinite(loss)


def test_the_fedavg_server_side_installs_the_global_arrays_into_its_model() -> None:
    settings = build_settings(dataset="synthetic", model="mlp", width=0.25, dense_width=0.25)
    sampler = RoundSampler({p: 100 + p for p in range(2)}, 1.0, seed=0)
    side = fedavg.METHOD.server(settings, sampler)
    state = {k: v.clone() + 1.0 for k, v in side.model.state_dict().items()}
    side.install(ArrayRecord(state))
    assert all(np.array_equal(side.model.state_dict()[k].numpy(), v.numpy())
               for k, v in state.items())  # fmt: skip
