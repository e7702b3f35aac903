"""pemn-fl ClientApp: one ``train.<method>`` handler per registered method, plus the handshake.

Thin on purpose (as Flower's quickstart-pytorch): each method's client step lives in its own
module under ``pemn_fl/methods``; this file only routes messages and builds the settings.
"""

from __future__ import annotations

import time

import torch
from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.clientapp import ClientApp

from pemn_fl import faults
from pemn_fl.config import RunSettings
from pemn_fl.methods import ClientStep, get, is_plugin, registry
from pemn_fl.methods.base import partition_of


def _settings(context: Context, overrides: dict[str, object] | None) -> RunSettings:
    return RunSettings.from_run_config({**dict(context.run_config), **(overrides or {})})


def hello(msg: Message, context: Context) -> Message:
    """Handshake: tell the server which data partition this node serves."""
    pid, n = partition_of(context)
    content = RecordDict({"node": ConfigRecord({"partition-id": pid, "num-partitions": n})})
    return Message(content=content, reply_to=msg)


def build_client_app(overrides: dict[str, object] | None = None) -> ClientApp:
    """A ClientApp whose settings are the run config plus ``overrides`` (the simulator's)."""
    app = ClientApp()
    torch.set_num_threads(1)  # one core per client; the engine runs clients side by side

    def route(name: str, step: ClientStep):  # noqa: ANN202 - a Flower handler
        def handler(msg: Message, context: Context) -> Message:
            settings = _settings(context, overrides)
            fault, seed = faults.draw(settings, context, name, msg)
            if fault == "drop":
                raise RuntimeError("fault injection: this client failed (--drop-rate)")
            reply = step(msg, context, settings)
            if fault == "corrupt":
                faults.corrupt(reply, seed)
            if fault == "straggle":  # trained, but answers after the server stopped waiting
                time.sleep(settings.round_deadline + faults.STRAGGLE_AFTER)
            return reply

        return handler

    methods = list(registry().values())
    # Plug-in methods (module paths in the simulator's --methods) get a handler too.
    specs = str((overrides or {}).get("methods", "")).split(",")
    methods += [get(spec.strip()) for spec in specs if is_plugin(spec.strip())]
    for method in methods:
        app.train(method.name)(route(method.name, method.client_step))

    @app.query("hello")
    def _hello(msg: Message, context: Context) -> Message:
        return hello(msg, context)

    return app


app = build_client_app()
