"""pemn-fl ClientApp: ``train.pemn`` learns a mask, ``train.fedavg`` trains dense weights.

Thin on purpose (as Flower's quickstart-pytorch): the protocol lives in ``protocol``; this
file only moves records in and out of Flower messages and keeps per-node state.
"""

from __future__ import annotations

import logging

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from pemn_fl import protocol as P
from pemn_fl.codec import MaskPayloadError
from pemn_fl.config import RunSettings
from pemn_fl.prototype import derived_seed
from pemn_fl.strategy import mask_to_record, record_to_mask
from pemn_fl.task import train

log = logging.getLogger("pemn_fl.client")


def _settings(context: Context, overrides: dict[str, object] | None) -> RunSettings:
    return RunSettings.from_run_config({**dict(context.run_config), **(overrides or {})})


def _partition(context: Context) -> tuple[int, int]:
    return int(context.node_config["partition-id"]), int(context.node_config["num-partitions"])


def _held_masks(context: Context) -> tuple[dict[int, P.Mask], list[np.ndarray] | None]:
    """The global mask this node last received (by version) and its own scores, if kept."""
    held: dict[int, P.Mask] = {}
    if P.STATE_GLOBAL in context.state:
        version = int(context.state[P.STATE_GLOBAL_ID]["id"])
        held[version] = record_to_mask(context.state[P.STATE_GLOBAL])
    scores = None
    if P.STATE_SCORES in context.state:
        scores = context.state[P.STATE_SCORES].to_numpy_ndarrays()
    return held, scores


def pemn_train(msg: Message, context: Context, settings: RunSettings) -> Message:
    cfg = msg.content[P.CONFIG_KEY]
    pid, n = _partition(context)
    held, prev_scores = _held_masks(context)
    mask_id, server_round = int(cfg[P.MASK_ID]), int(cfg[P.ROUND])
    try:
        result = P.client_round(
            settings, pid, n, bytes(cfg[P.MASK]), held, mask_id, prev_scores, server_round
        )
    except MaskPayloadError as exc:
        # Surfaces to the server as an error reply with this reason; the node keeps its state.
        raise RuntimeError(f"partition {pid} rejected the downlink mask: {exc}") from None
    context.state[P.STATE_GLOBAL] = mask_to_record(result.received)
    context.state[P.STATE_GLOBAL_ID] = ConfigRecord({"id": mask_id})
    if settings.client_init == "stateful":
        context.state[P.STATE_SCORES] = ArrayRecord(result.scores)
    content = RecordDict(
        {
            P.UPDATE_KEY: ConfigRecord({P.MASK: result.payload}),
            P.METRICS_KEY: MetricRecord(
                {"num-examples": result.num_examples, "train-loss": result.train_loss}
            ),
        }
    )
    return Message(content=content, reply_to=msg)


def fedavg_train(msg: Message, context: Context, settings: RunSettings) -> Message:
    pid, n = _partition(context)
    model = P.dense_model(settings)
    model.load_state_dict(msg.content["arrays"].to_torch_state_dict())
    x, y = P.client_data(settings, pid, n)
    server_round = int(msg.content["config"]["server-round"])
    loss = train(
        model, x, y, settings.train_config("fedavg"),
        seed=derived_seed(settings.seed, f"batches/{pid}/{server_round}"),
    )  # fmt: skip
    content = RecordDict(
        {
            "arrays": ArrayRecord(model.state_dict()),
            "metrics": MetricRecord({"num-examples": len(y), "train-loss": loss}),
        }
    )
    return Message(content=content, reply_to=msg)


def hello(msg: Message, context: Context) -> Message:
    """Handshake: tell the server which data partition this node serves."""
    pid, n = _partition(context)
    content = RecordDict({"node": ConfigRecord({"partition-id": pid, "num-partitions": n})})
    return Message(content=content, reply_to=msg)


def build_client_app(overrides: dict[str, object] | None = None) -> ClientApp:
    """A ClientApp whose settings are the run config plus ``overrides`` (the simulator's)."""
    app = ClientApp()
    torch.set_num_threads(1)  # one core per client; the engine runs clients side by side

    @app.train("pemn")
    def _pemn(msg: Message, context: Context) -> Message:
        return pemn_train(msg, context, _settings(context, overrides))

    @app.train("fedavg")
    def _fedavg(msg: Message, context: Context) -> Message:
        return fedavg_train(msg, context, _settings(context, overrides))

    @app.query("hello")
    def _hello(msg: Message, context: Context) -> Message:
        return hello(msg, context)

    return app


app = build_client_app()
