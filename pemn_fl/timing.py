"""The time model applied to a run: post hoc on its record, or in the loop as it runs.

``pemn_fl.timeline`` is the model (a round's calls and work on each client's link and
device). Here it meets a run: ``replay`` reads a recorded run (``rounds.csv`` and
``clients.csv``) and adds the model's columns (``TIME_COLUMNS``) to its rounds, each method
from time 0 on the same population; ``LiveClock`` runs the same model inside the ServerApp,
judging each round's replies on simulated time as they arrive. Both feed the model the
same numbers (the calls rounded as ``clients.csv`` records them, the same FLOPs), so a run
in the loop without a deadline and its post-hoc replay give the same seconds to the bit.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import pandas as pd
from flwr.app import Message

from pemn_fl.accounting import Traffic
from pemn_fl.clientlog import decode_calls, rounded
from pemn_fl.profiles import Device, Link
from pemn_fl.timeline import ClientRound, RoundInput, RoundTiming, Timeline
from pemn_fl.transport import Call, uplink_calls

# The columns the time model adds to rounds.csv: each round's simulated duration and energy,
# cumulated, and the sampled clients whose reply counted (arrived in time).
TIME_COLUMNS = ["time_s", "cumulative_time_s", "energy_j", "cumulative_energy_j",
                "clients_counted"]  # fmt: skip


def client_rounds(clients: pd.DataFrame) -> dict[tuple[str, int], list[ClientRound]]:
    """``clients.csv`` rows as ``ClientRound``s, by (method, round)."""
    out: dict[tuple[str, int], list[ClientRound]] = {}
    for row in clients.itertuples(index=False):
        out.setdefault((str(row.method), int(row.round)), []).append(ClientRound(
            int(row.partition), str(row.status), tuple(decode_calls(row.down_calls_detail)),
            tuple(decode_calls(row.up_calls_detail)), int(row.train_flops)))  # fmt: skip
    return out


def replay(rounds: pd.DataFrame, clients: pd.DataFrame, links: Mapping[int, Link],
           devices: Mapping[int, Device], server: Device, *, transport: str = "flower",
           deadline: float | None = None, seed: int = 0) -> pd.DataFrame:  # fmt: skip
    """``rounds`` with the time model's columns (``TIME_COLUMNS``), each method replayed
    from time 0 on the same population: what the run's rounds take on these links."""
    if "server_flops" not in rounds.columns:
        raise ValueError("this run predates the time model's record (no server_flops in "
                         "rounds.csv, no clients.csv): run it again to time it")
    by_round = client_rounds(clients)
    out = []
    for method, frame in rounds.groupby("method", sort=False):
        line = Timeline(links, devices, server, transport=transport, deadline=deadline,
                        seed=seed)  # fmt: skip
        clock, joules = 0.0, 0.0
        for row in frame.sort_values("round").itertuples(index=False):
            inputs = RoundInput(int(row.round), tuple(by_round.get((str(method), int(row.round)),
                                                                   [])), int(row.server_flops))
            timing = line.round(inputs)
            clock, joules = timing.next_start, joules + timing.energy_j
            out.append({"method": method, "round": int(row.round),
                        "time_s": timing.duration, "cumulative_time_s": clock,
                        "energy_j": timing.energy_j, "cumulative_energy_j": joules,
                        "clients_counted": sum(c.counted for c in timing.clients)})  # fmt: skip
    timed = pd.DataFrame(out, columns=["method", "round", *TIME_COLUMNS])
    base = rounds.drop(columns=[c for c in TIME_COLUMNS if c in rounds.columns])
    return base.merge(timed, on=["method", "round"], how="left", validate="one_to_one")


class LiveClock:
    """The time model in the loop: judges each training round's replies on simulated time.

    ``MeteredGrid`` calls it with the round's traffic and replies before any reply reaches
    the strategy; it replays the round on the ``Timeline`` (each client's calls, rounded as
    ``clients.csv`` records them, and its training FLOPs) and names the replies that reach
    the server after the deadline: the grid drops them as late, uncounted, so slow links
    and devices become the stragglers. ``finish`` closes the round with the server's work
    and returns its timing (the row's time columns). Replaying a run's ``clients.csv``
    post hoc (``replay``) gives the same seconds: the inputs are the same numbers.
    """

    def __init__(self, timeline: Timeline, partition_of: Mapping[int, int],
                 train_flops: Callable[[int], int]) -> None:  # fmt: skip
        self.timeline = timeline
        self.partition_of = dict(partition_of)
        self.train_flops = train_flops
        self.pending: RoundTiming | None = None
        self.rounds = 0

    def __call__(self, traffic: Traffic, replies: Sequence[Message]
                 ) -> dict[int, tuple[list[Call], str]]:  # fmt: skip
        stored = set(traffic.stored_objects)
        up = {r.metadata.src_node_id: rounded(uplink_calls(r, stored)) for r in replies}
        errors = {r.metadata.src_node_id for r in replies if r.has_error()}
        clients = []
        for node, share in traffic.clients.items():
            status = ("late" if share.status == "late" else "error" if node in errors
                      else "replied" if node in up else "none")  # fmt: skip
            partition = self.partition_of.get(node, -1)
            trained = status in ("replied", "late")
            clients.append(ClientRound(partition, status, tuple(rounded(share.down)),
                                       tuple(up.get(node, ())),
                                       self.train_flops(partition) if trained else 0))
        clients.sort(key=lambda c: c.partition)
        self.rounds += 1
        self.pending = self.timeline.start_round(self.rounds, clients)
        node_of = {p: n for n, p in self.partition_of.items()}
        return {node_of[t.partition]: (up.get(node_of[t.partition], []),
                                       f"its reply reached the server at {t.arrived:.1f} s of "
                                       "simulated time, past the round deadline")
                for t in self.pending.clients
                if not t.counted and node_of.get(t.partition) in up}  # fmt: skip

    def finish(self, server_flops: int) -> RoundTiming:
        """Close the round (or round 0, the initial evaluation) with the server's work."""
        timing = self.pending or self.timeline.start_round(self.rounds, [])
        self.timeline.finish_round(timing, server_flops)
        self.pending = None
        return timing
