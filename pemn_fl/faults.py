"""Fault injection (``--drop-rate``, ``--corrupt-rate``, ``--byzantine``): what goes wrong
between a client and the server, drawn from the run seed so a faulty run is as reproducible
as a clean one.

* **drop**: the sampled client fails before it trains (an error reply, as a crashed client or
  a dead node gives): the server records it in ``clients_failed`` and goes on.
* **corrupt**: the client trains, and one random bit of each payload in its reply is flipped
  in transit (a ``bytes`` payload, or the raw data of a float array). Coded payloads carry a
  CRC and are rejected (``clients_rejected``); FedAvg's float arrays carry none, so a flipped
  bit reaches the average unless it makes a value non-finite: the honest difference.

* **straggle**: the client trains and answers ``STRAGGLE_AFTER`` seconds past the round
  deadline (``--round-deadline``), which the server does not wait for: a failed client whose
  late reply never reaches the ServerApp (nor the meter), as on a real SuperLink.

  **The deadline in simulation is judged on each client's own work.** On a SuperLink every
  node works in parallel, so the deadline is wall-clock time. In the Simulation Engine a few
  Ray actors serve every client in turn: a straggler sleeping in an actor would hold it, and
  the clients queued behind it would miss the deadline for no fault of theirs (and a long
  round would miss it as a whole). So in simulation a client times its own step (the CPU
  time of the thread that runs it, ``time.thread_time``: what the client computed, whatever
  else runs on the machine); if that, plus a straggler's delay, passes the deadline it
  answers at once with a *late* reply
  (``late_reply``), which the server's meter drops on arrival (``is_late``) as if it had
  never come: no bytes, no vote, a failed client. A deployment's client really sleeps.
* **byzantine**: a fixed share of the clients (the same partitions all run, drawn from the
  seed) attack every time they are sampled, each method as its ``Method.attack`` says
  (PEMN-FL: the complement of the trained mask; FedAvg: the local update negated and
  scaled by ``ATTACK_SCALE``), with well-formed payloads that pass every check.

Each draw is seeded by (run seed, method, partition, round), so the same command injects the
same faults, and a client that failed once is not doomed to fail again.
"""

from __future__ import annotations

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Error, Message

from pemn_fl import messages as M
from pemn_fl.config import RunSettings
from pemn_fl.prototype import derived_seed

COUNTER = "fault-messages"
STRAGGLE_AFTER = 1.0  # seconds past the round deadline a straggler's reply is sent
ATTACK_SCALE = 5.0  # a Byzantine FedAvg client sends W - 5 * (its update) instead of W + update
# Error codes of simulated late replies (Flower's own codes are below 1000): a client whose
# own work passed the deadline, and an injected straggler.
LATE, STRAGGLED = 4108, 4109


def is_byzantine(settings: RunSettings, partition_id: int, num_partitions: int) -> bool:
    """Whether this partition's client is one of the run's ``round(byzantine * n)`` attackers."""
    count = int(settings.byzantine * num_partitions + 0.5)
    if count == 0:
        return False
    order = np.random.default_rng(derived_seed(settings.seed, "byzantine")).permutation(
        num_partitions
    )
    return partition_id in set(order[:count].tolist())


def round_of(msg: Message) -> int | None:
    """The round a training message belongs to: every built-in method sends it as
    ``config["server-round"]`` (the ``Method`` convention); ``None`` if absent."""
    try:
        return int(msg.content[M.CONFIG][M.ROUND])
    except (KeyError, TypeError, ValueError):
        return None


def draw(settings: RunSettings, context: Context, method: str, msg: Message
         ) -> tuple[str | None, int]:  # fmt: skip
    """``("drop" | "corrupt" | "straggle" | None, seed)`` for this node's message of ``method``.

    Seeded by the message's round, so a failure does not shift later draws (a failed client
    keeps no state); a message without a round (a plug-in method) falls back to a per-node
    count of the messages it completed.
    """
    if not (settings.drop_rate or settings.corrupt_rate or settings.straggler_rate):
        return None, 0
    index = round_of(msg)
    if index is None:
        key = f"{COUNTER}-{method}"
        index = -1 - (int(context.state[key]["n"]) if key in context.state else 0)
        context.state[key] = ConfigRecord({"n": -index})
    return fault_of(settings, method, int(context.node_config["partition-id"]), index)


def fault_of(settings: RunSettings, method: str, partition_id: int, index: int
             ) -> tuple[str | None, int]:  # fmt: skip
    """The fault drawn for partition ``partition_id``'s message ``index`` (its round) of
    ``method``, and the draw's seed: a pure function, so anyone can tell which it was."""
    seed = derived_seed(settings.seed, f"faults/{method}/{partition_id}/{index}")
    u = np.random.default_rng(seed).random()
    if u < settings.drop_rate:
        return "drop", seed
    if u < settings.drop_rate + settings.corrupt_rate:
        return "corrupt", seed
    if u < settings.drop_rate + settings.corrupt_rate + settings.straggler_rate:
        return "straggle", seed
    return None, seed


def corrupt(reply: Message, seed: int) -> None:
    """Flip one random bit of every payload in ``reply``, in place."""
    rng = np.random.default_rng(seed)
    for record in reply.content.values():
        if isinstance(record, ConfigRecord):
            for key, value in list(record.items()):
                if isinstance(value, bytes) and value:
                    data = bytearray(value)
                    data[int(rng.integers(len(data)))] ^= 1 << int(rng.integers(8))
                    record[key] = bytes(data)
        elif isinstance(record, ArrayRecord):
            for key in list(record.keys()):
                arr = record[key].numpy().copy()
                if arr.size:
                    raw = arr.reshape(-1).view(np.uint8)
                    raw[int(rng.integers(raw.size))] ^= np.uint8(1 << int(rng.integers(8)))
                    record[key] = Array(arr)


def late_reply(msg: Message, seconds: float, deadline: float, straggler: bool) -> Message:
    """What a simulated client sends when its work (``seconds``, a straggler's delay
    included) passed ``deadline``: a marker the server drops on arrival, so it costs no
    bytes and counts as no reply."""
    if straggler:
        return Message(Error(code=STRAGGLED, reason="an injected straggler (--straggler-rate)"),
                       reply_to=msg)  # fmt: skip
    reason = f"its own work took {seconds:.2f} s, past the {deadline:g} s round deadline"
    return Message(Error(code=LATE, reason=reason), reply_to=msg)


def is_late(reply: Message) -> bool:
    """A simulated late reply (``late_reply``): in a deployment it would never have arrived."""
    return reply.has_error() and reply.error.code in (LATE, STRAGGLED)
