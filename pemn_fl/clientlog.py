"""``clients.csv``: one row per sampled client and round, what the time model needs.

``rounds.csv`` says what a round cost in total; the time and energy a round takes depend on
who sent what (a synchronous round lasts as long as its slowest client, and each HTTP call
costs a round trip). So every run also records, per sampled client and round:

* ``status``: how its round ended (``replied``, ``error``, ``late``, ``none``;
  ``accounting.ClientTraffic``);
* ``examples`` and ``train_flops``: the examples it trained on (its partition's size) and
  the FLOPs of that local training (``pemn_fl.compute``: counted once per model, times
  examples and epochs; 0 for a client that failed, whose work is unknown);
* each direction's calls, as the transport model enumerates them (``pemn_fl.transport``):
  their number, request and response bytes summed, payload bytes (and of the downlink's,
  those that only catch the node up on rounds it missed), and the calls themselves
  in Flower's order (``down_calls_detail``: ``code:request+response`` per call, codes in
  ``CODES``), so that ``pemn_fl.timeline`` can replay them one by one, post hoc, exactly as
  it does in the loop.

Written as each round ends (like ``rounds.csv``); a resumed run keeps the rows of the rounds
its checkpoint covers and drops the rest.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from pemn_fl.accounting import ClientTraffic
from pemn_fl.transport import Call

COLUMNS = [
    "method", "round", "partition", "status", "examples", "train_flops",
    "down_calls", "down_request_bytes", "down_response_bytes", "down_payload_bytes",
    "down_catchup_payload_bytes",
    "up_calls", "up_request_bytes", "up_response_bytes", "up_payload_bytes",
    "down_calls_detail", "up_calls_detail",
]  # fmt: skip
CODES = {"pull-messages": "pm", "pull-object": "po", "confirm-message-received": "cm",
         "push-messages": "sm", "push-object": "so"}  # fmt: skip
NAMES = {code: name for name, code in CODES.items()}
STATUSES = ("replied", "error", "late", "none")


def rounded(calls: Iterable[Call]) -> list[Call]:
    """The calls as recorded: bytes to the cent (what ``encode_calls`` keeps), so the time
    model replays a record exactly as it ran in the loop."""
    return [Call(c.name, round(c.request, 2), round(c.response, 2)) for c in calls]


def encode_calls(calls: Iterable[Call]) -> str:
    """``code:request+response`` per call, space-separated (bytes to two decimals, the
    precision of the transport model's header constants)."""
    return " ".join(f"{CODES[c.name]}:{_bytes(c.request)}+{_bytes(c.response)}" for c in calls)


def _bytes(value: float) -> str:
    return f"{value:.2f}".rstrip("0").rstrip(".")


def decode_calls(text: object) -> list[Call]:
    """The calls of ``encode_calls``; ``ValueError`` on anything else."""
    if not isinstance(text, str) or not text.strip():
        return []
    calls = []
    for token in text.split():
        code, _, sizes = token.partition(":")
        request, _, response = sizes.partition("+")
        if code not in NAMES or not request or not response:
            raise ValueError(f"not a call: {token!r}")
        calls.append(Call(NAMES[code], float(request), float(response)))
    return calls


@dataclass(frozen=True)
class Work:
    """What a method's client trains per example, and on how many examples each partition."""

    train_flops_per_example: int  # compute.TRAIN_FLOPS_PER_FORWARD x forward FLOPs
    epochs: int
    examples: Mapping[int, int]  # partition id -> training examples

    def train_flops(self, partition: int) -> int:
        """FLOPs of ``partition``'s local training in one round."""
        return self.train_flops_per_example * self.examples.get(partition, 0) * self.epochs


def rows(method: str, server_round: int, clients: Mapping[int, ClientTraffic],
         partition_of: Mapping[int, int], work: Work) -> list[dict[str, object]]:  # fmt: skip
    """The round's rows, in partition order (node ids are random per run)."""
    out = []
    for node, share in clients.items():
        partition = partition_of.get(node, -1)
        examples = work.examples.get(partition, 0)
        trained = share.status in ("replied", "late")
        down, up = rounded(share.down), rounded(share.up)
        out.append({
            "method": method, "round": server_round, "partition": partition,
            "status": share.status, "examples": examples,
            "train_flops": work.train_flops(partition) if trained else 0,
            "down_calls": len(down), "down_request_bytes": round(sum(c.request for c in down)),
            "down_response_bytes": round(sum(c.response for c in down)),
            "down_payload_bytes": share.down_payload_bytes,
            "down_catchup_payload_bytes": share.down_catchup_payload_bytes,
            "up_calls": len(up), "up_request_bytes": round(sum(c.request for c in up)),
            "up_response_bytes": round(sum(c.response for c in up)),
            "up_payload_bytes": share.up_payload_bytes,
            "down_calls_detail": encode_calls(down), "up_calls_detail": encode_calls(up),
        })  # fmt: skip
    return sorted(out, key=lambda row: int(row["partition"]))  # type: ignore[call-overload]


def append(path: Path, new_rows: list[dict[str, object]]) -> None:
    """Add rows to ``path`` (the header first if the file is new): a crash keeps every
    finished round's rows."""
    if not new_rows:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(new_rows, columns=COLUMNS).to_csv(path, mode="a", header=not path.exists(),
                                                   index=False)  # fmt: skip


def keep_rounds(path: Path, kept: set[tuple[str, int]]) -> None:
    """A resumed run: keep only the rows of the (method, round) pairs its checkpoint covers."""
    if not path.is_file():
        return
    frame = read(path, torn_ok=True)
    mask = [(str(m), int(r)) in kept for m, r in zip(frame["method"], frame["round"],
                                                    strict=True)]  # fmt: skip
    frame[mask].to_csv(path, index=False)


class ClientsFileError(ValueError):
    """A ``clients.csv`` that is not one a run wrote."""


def read(path: Path, torn_ok: bool = False) -> pd.DataFrame:
    """A run's ``clients.csv``, checked: every column, known statuses, counts >= 0.

    ``torn_ok`` (a resume reading back what a killed run wrote): a last line without its
    newline is a row cut short by the kill and is dropped. The server checkpoint is written
    after a round's rows, so such a row always belongs to a round the resume runs again."""
    try:
        text = path.read_text()
        if torn_ok and text and not text.endswith("\n"):
            text = text[: text.rfind("\n") + 1]
        frame = pd.read_csv(io.StringIO(text), keep_default_na=False,
                            dtype={"down_calls_detail": str, "up_calls_detail": str})
    except (OSError, pd.errors.EmptyDataError, pd.errors.ParserError,
            UnicodeDecodeError) as exc:  # fmt: skip
        raise ClientsFileError(f"{path}: not a clients.csv written by a run "
                               f"({type(exc).__name__})") from None  # fmt: skip
    missing = [c for c in COLUMNS if c not in frame.columns]
    if missing:
        raise ClientsFileError(f"{path}: lacks the column(s) {', '.join(missing)}")
    numeric = [c for c in COLUMNS if c not in ("method", "status", "down_calls_detail",
                                               "up_calls_detail")]  # fmt: skip
    for column in numeric:
        values = pd.to_numeric(frame[column], errors="coerce")
        bad = values.isna() | ((values < 0) & (column != "partition"))
        if bad.any():
            line = int(bad.to_numpy().nonzero()[0][0]) + 2
            raise ClientsFileError(f"{path}, line {line}: {column} is not a count >= 0")
        frame[column] = values.astype("int64")
    for column in ("down_calls_detail", "up_calls_detail"):  # what the time model replays
        for line, text in enumerate(frame[column], start=2):
            try:
                decode_calls(text)
            except ValueError as exc:
                raise ClientsFileError(f"{path}, line {line}: {column} is not a list of calls "
                                       f"({exc})") from None  # fmt: skip
    unknown = ~frame["status"].isin(STATUSES)
    if unknown.any():
        line = int(unknown.to_numpy().nonzero()[0][0]) + 2
        raise ClientsFileError(f"{path}, line {line}: status {frame['status'].iloc[line - 2]!r}"
                               f" is not one of {', '.join(STATUSES)}")  # fmt: skip
    return frame
