"""The ClientApp as the Simulation Engine ships it: pickled with every message."""

from __future__ import annotations

import ray.cloudpickle as cloudpickle
from flwr.app import ConfigRecord, Message, RecordDict
from flwr.supercore.task_identity import TaskIdentity

from pemn_fl import client_app
from pemn_fl.client_app import build_client_app
from pemn_fl.methods import settings_from
from tests import harness


def _as_flower_sends_it(app: object) -> bytes:
    """Flower's engine passes a closure returning the app to a Ray actor on every message."""

    def _load() -> object:  # as flwr.server.superlink.fleet.vce.vce_api._load
        return app

    return cloudpickle.dumps(_load)


def test_client_app_pickles_as_its_recipe_and_rebuilds_with_the_same_handlers() -> None:
    settings = settings_from({"methods": "pemn,fedavg", "num-server-rounds": 3, "lr": 0.5})
    app = build_client_app(settings)
    data = _as_flower_sends_it(app)
    # By value it was ~13 KB and ~20 ms of the driver's time per message.
    assert len(data) < 2_000
    client_app._cached_client_app.cache_clear()  # rebuild it, as a fresh actor process does
    rebuilt = cloudpickle.loads(data)()
    assert rebuilt is not app
    assert sorted(rebuilt._registered_funcs) == sorted(app._registered_funcs)
    assert rebuilt._recipe == app._recipe
    assert cloudpickle.loads(data)() is rebuilt  # one build per actor process, then cached

    # The rebuilt app answers as the original does.
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 4702154239133451237, 1, 7
    content = RecordDict({"config": ConfigRecord()})
    msg = Message(content, dst_node_id=11, message_type="query.hello")
    reply = rebuilt(msg, harness.context(4, 9))
    assert reply.content["node"]["partition-id"] == 4
    assert reply.content["node"]["num-partitions"] == 9


def test_the_settings_are_the_recipe() -> None:
    a = build_client_app(settings_from({"lr": 0.5}))
    b = build_client_app(settings_from({"lr": 0.25}))
    assert cloudpickle.loads(_as_flower_sends_it(a))()._recipe != b._recipe
    assert cloudpickle.loads(_as_flower_sends_it(a))()._recipe == settings_from({"lr": 0.5})
    assert build_client_app()._recipe is None  # a SuperNode's: settings from each run config
