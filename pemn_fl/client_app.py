"""pemn-fl ClientApp: one ``train.<method>`` handler per registered method, plus the handshake.

Thin on purpose (as Flower's quickstart-pytorch): each method's client step lives in its own
module under ``pemn_fl/methods``; this file only routes messages and builds the settings.
"""

from __future__ import annotations

import logging
import time
from functools import lru_cache
from pathlib import Path

import torch
from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.clientapp import ClientApp

from pemn_fl import checkpoint, faults
from pemn_fl import messages as M
from pemn_fl.config import RunSettings
from pemn_fl.methods import ClientStep, get, is_plugin, registry, settings_from
from pemn_fl.methods.base import partition_of


def hello(msg: Message, context: Context) -> Message:
    """Handshake: tell the server which data partition this node serves."""
    pid, n = partition_of(context)
    content = RecordDict({"node": ConfigRecord({"partition-id": pid, "num-partitions": n})})
    return Message(content=content, reply_to=msg)


def _round_key(settings: RunSettings, name: str, msg: Message) -> tuple[int, int]:
    """(method index, server round) of a training message: orders a node's saved states."""
    specs = settings.method_list  # a plug-in's spec is its module path, not its name
    index = next((i for i, spec in enumerate(specs) if get(spec).name == name), -1)
    try:
        return index, int(msg.content[M.CONFIG][M.ROUND])  # type: ignore[arg-type]
    except (KeyError, TypeError, ValueError):  # malformed: the method's own step rejects it
        return index, 0


def _resume_state(directory: Path, context: Context, key: tuple[int, int]) -> None:
    """A node's first message in this process: take its state from the checkpoint, if the
    run is a resumed one (the newest state saved before this round; none in a fresh run)."""
    if "checkpoint" in context.state:
        return
    saved = checkpoint.load_client(directory, partition_of(context)[0], before=key)
    for record_name, record in (saved or {}).items():
        context.state[record_name] = record
    context.state["checkpoint"] = ConfigRecord({"loaded": 1})


class _RebuiltClientApp(ClientApp):
    """A ClientApp that pickles as its recipe (the run's settings), not its contents.

    The Simulation Engine hands the ClientApp to a Ray actor as an argument of every
    message, so Ray pickles it once per message in the driver. By value that is ~20 ms of
    the driver's time per message (cloudpickle walks every handler closure), serially: on
    the digits classroom setting it was ~0.4 s of a ~1.5 s round. By recipe it is
    microseconds, and each actor process builds the app once (``_cached_client_app``).
    """

    def __init__(self, settings: RunSettings | None) -> None:
        super().__init__()
        self._recipe = settings

    def __reduce__(self) -> tuple[object, tuple[object, ...]]:
        return _cached_client_app, (self._recipe,)


class _NoShutdownWarning(logging.Filter):
    """Drops the Simulation Engine's "Manually terminating ClientAppActor" warning: every
    actor logs it when the run ends as planned, and a class reads a WARNING as an error."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Manually terminating")


def quiet_actor_shutdown() -> None:
    """Install the filter on Flower's logger in this (actor) process, once."""
    logger = logging.getLogger("flwr")
    if not any(isinstance(f, _NoShutdownWarning) for f in logger.filters):
        logger.addFilter(_NoShutdownWarning())


@lru_cache(maxsize=8)
def _cached_client_app(settings: RunSettings | None) -> ClientApp:
    return build_client_app(settings)


def build_client_app(settings: RunSettings | None = None) -> ClientApp:
    """A ClientApp for the run's ``settings`` (the simulator's, handed over as they are), or,
    without, for the settings of each message's run config (a SuperNode of its own).

    In the Simulation Engine the round deadline is judged on this client's own work
    (``faults``: a straggler answers at once with a late reply instead of holding a shared
    actor); a SuperNode's straggler really sleeps.
    """
    app = _RebuiltClientApp(settings)
    torch.set_num_threads(1)  # one core per client; the engine runs clients side by side
    simulated = settings is not None
    if simulated:
        quiet_actor_shutdown()

    run = settings

    def route(name: str, step: ClientStep):  # noqa: ANN202 - a Flower handler
        def handler(msg: Message, context: Context) -> Message:
            started = time.thread_time()  # this client's own work: its CPU time, not the queue's
            settings = run if run is not None else settings_from(dict(context.run_config))
            saving = Path(settings.checkpoint_dir) if settings.checkpoint_dir else None
            if saving is not None:  # --resume: load before the round, save after it
                key = _round_key(settings, name, msg)
                _resume_state(saving, context, key)
            fault, seed = faults.draw(settings, context, name, msg)
            if fault == "drop":
                raise RuntimeError("fault injection: this client failed (--drop-rate)")
            reply = step(msg, context, settings)
            if fault == "corrupt":
                faults.corrupt(reply, seed)
            if saving is not None:
                checkpoint.save_client(saving, partition_of(context)[0], key, context.state)
            delay = settings.round_deadline + faults.STRAGGLE_AFTER if fault == "straggle" else 0
            # In simulation the deadline is judged on this client's own work, not the queue's;
            # with --link, on simulated time, by the server's time model (pemn_fl.timeline),
            # so only an injected straggler is late here.
            if simulated and (delay or not settings.link):
                took = time.thread_time() - started + delay
                if took > settings.round_deadline:
                    return faults.late_reply(msg, took, settings.round_deadline, bool(delay))
            elif delay and not simulated:  # trained, but answers after the server stopped waiting
                time.sleep(delay)
            return reply

        return handler

    methods = list(registry().values())
    # Plug-in methods (module paths in the simulator's --methods) get a handler too.
    specs = settings.method_list if settings is not None else []
    methods += [get(spec) for spec in specs if is_plugin(spec)]
    for method in methods:
        app.train(method.name)(route(method.name, method.client_step))

    @app.query("hello")
    def _hello(msg: Message, context: Context) -> Message:
        return hello(msg, context)

    return app


app = build_client_app()
