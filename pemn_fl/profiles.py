"""Who the clients are: their links and devices, from cited profiles, a mix, or a trace.

``profiles.toml`` (beside this module) holds named link profiles (uplink and downlink
bandwidth, round-trip time, the radio's power model) and device profiles (compute
throughput, power while computing), every number with its source. A run's clients draw from
them:

* a **mix**, ``lte:0.6,3g:0.3,geo:0.1`` (or one name, ``3g``): each partition gets one
  profile, in exactly those proportions (largest remainder, so 20 clients at 0.6 are 12),
  placed by a permutation seeded by the run seed: reproducible, and the same clients for
  every method of the run;
* a **trace**, a CSV file like FedScale's client traces: either one row per client
  (a ``partition`` column) or one row per class of client (a ``share`` column, drawn like a
  mix), with the link's ``uplink_mbps``, ``downlink_mbps``, ``rtt_ms`` and optionally
  ``radio`` (the name of a link profile whose power model applies), and the device's
  ``flops_per_s`` and optionally ``power_w``. A trace may give only link columns, or only
  device columns; the rest comes from ``--link`` / ``--device``.

Bad input is one ``ProfileError`` naming what was wrong and how to mend it.
"""

from __future__ import annotations

import csv
import math
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from pemn_fl.prototype import derived_seed

PROFILES_FILE = Path(__file__).with_name("profiles.toml")
LINK_FIELDS = ("uplink_mbps", "downlink_mbps", "rtt_ms")
DEVICE_FIELDS = ("flops_per_s",)


# How sentences name the profiles ("on 3G links"); a mix or a trace is named as given.
DISPLAY = {"fibre": "wired broadband", "wifi": "Wi-Fi", "lte": "LTE", "3g": "3G",
           "nbiot": "NB-IoT", "geo": "GEO satellite", "leo": "LEO satellite", "phone": "phone",
           "phone2018": "2018 phone", "oldphone": "old phone", "mcu": "microcontroller",
           "laptop": "laptop"}  # fmt: skip


def display(spec: str) -> str:
    """A profile's name for a sentence; a mix or a trace as given."""
    return DISPLAY.get(spec, spec)


class ProfileError(ValueError):
    """A bad profile name, mix or trace; the message says what and how to fix it."""


@dataclass(frozen=True)
class Radio:
    """A radio's power model (Huang et al. 2012 as AT&T ARO implements it; see the file)."""

    active_w: float
    up_w_per_mbps: float
    down_w_per_mbps: float
    tail: tuple[tuple[float, float], ...]  # (seconds, watts) stages after the last byte
    promotion_s: float
    promotion_w: float

    @property
    def tail_s(self) -> float:
        return sum(seconds for seconds, _ in self.tail)

    def tail_energy(self, seconds: float) -> float:
        """Joules of the first ``seconds`` of the tail (all of it past its length)."""
        joules, left = 0.0, seconds
        for length, watts in self.tail:
            used = min(length, max(left, 0.0))
            joules += used * watts
            left -= length
        return joules


@dataclass(frozen=True)
class Link:
    name: str
    label: str
    uplink_mbps: float
    downlink_mbps: float
    rtt_ms: float
    radio: Radio | None = None

    @property
    def uplink_bps(self) -> float:
        return self.uplink_mbps * 1e6 / 8  # bytes per second

    @property
    def downlink_bps(self) -> float:
        return self.downlink_mbps * 1e6 / 8

    @property
    def rtt_s(self) -> float:
        return self.rtt_ms / 1000


@dataclass(frozen=True)
class Device:
    name: str
    label: str
    flops_per_s: float
    power_w: float | None = None


@lru_cache(maxsize=4)
def catalogue(path: Path = PROFILES_FILE) -> dict[str, dict]:
    """The profile file as read (``link``, ``device``, ``source`` tables)."""
    with path.open("rb") as handle:
        return tomllib.load(handle)


def _radio(table: Mapping[str, object] | None) -> Radio | None:
    if table is None:
        return None
    tail = tuple((float(s), float(w)) for s, w in table["tail"])  # type: ignore[union-attr]
    return Radio(float(table["active_w"]), float(table["up_w_per_mbps"]),  # type: ignore[arg-type]
                 float(table["down_w_per_mbps"]), tail, float(table["promotion_s"]),  # type: ignore[arg-type]
                 float(table["promotion_w"]))  # type: ignore[arg-type]  # fmt: skip


def links(path: Path = PROFILES_FILE) -> dict[str, Link]:
    """Every link profile by name."""
    return {name: Link(name, t["label"], float(t["uplink_mbps"]), float(t["downlink_mbps"]),
                       float(t["rtt_ms"]), _radio(t.get("radio")))
            for name, t in catalogue(path)["link"].items()}  # fmt: skip


def devices(path: Path = PROFILES_FILE) -> dict[str, Device]:
    """Every device profile by name."""
    return {name: Device(name, t["label"], float(t["flops_per_s"]),
                         None if "power_w" not in t else float(t["power_w"]))
            for name, t in catalogue(path)["device"].items()}  # fmt: skip


def parse_mix(text: str, known: Sequence[str], what: str, flag: str = ""
              ) -> list[tuple[str, float]]:  # fmt: skip
    """``lte:0.6,3g:0.4`` (or one name) as (name, share) pairs whose shares sum to 1
    (``what``: link or device; ``flag``: the option that gave it, for the message)."""
    flag = flag or what
    pairs: list[tuple[str, float]] = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        name, sep, share_text = part.partition(":")
        if name not in known:
            raise ProfileError(f"--{flag} {text}: unknown {what} profile {name!r}; choose from "
                               f"{', '.join(known)} (or give a trace CSV)")  # fmt: skip
        try:
            share = float(share_text) if sep else 1.0
        except ValueError:
            share = math.nan
        if not (math.isfinite(share) and share > 0):
            raise ProfileError(f"--{flag} {text}: the share of {name!r} must be a number > 0, "
                               f"e.g. {name}:0.5")  # fmt: skip
        if any(name == other for other, _ in pairs):
            raise ProfileError(f"--{flag} {text}: {name!r} is named twice")
        pairs.append((name, share))
    if not pairs:
        raise ProfileError(f"--{flag} {text!r}: name a profile, e.g. --{flag} lte or a mix "
                           f"--{flag} lte:0.6,3g:0.4")  # fmt: skip
    total = sum(share for _, share in pairs)
    if len(pairs) > 1 and abs(total - 1.0) > 1e-6:
        raise ProfileError(f"--{flag} {text}: the shares sum to {total:g}; they must sum to 1")
    return [(name, share / total) for name, share in pairs]


def assign(mix: Sequence[tuple[str, float]], partitions: Sequence[int], seed: int,
           salt: str) -> dict[int, str]:  # fmt: skip
    """Each partition's profile: exact proportions (largest remainder, ties in mix order),
    placed by a permutation seeded by ``seed`` and ``salt``."""
    n = len(partitions)
    exact = [share * n for _, share in mix]
    counts = [int(math.floor(x)) for x in exact]
    order = sorted(range(len(mix)), key=lambda i: (-(exact[i] - counts[i]), i))
    for i in order[: n - sum(counts)]:
        counts[i] += 1
    names = [name for (name, _), count in zip(mix, counts, strict=True) for _ in range(count)]
    rng = np.random.default_rng(derived_seed(seed, f"profiles/{salt}"))
    placed = rng.permutation(n)
    ordered = sorted(partitions)
    return {ordered[int(slot)]: names[i] for i, slot in enumerate(placed)}


def _number(row: Mapping[str, str], column: str, line: int, path: Path) -> float:
    try:
        value = float(row[column])
    except (TypeError, ValueError):
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise ProfileError(f"{path}, line {line}: {column} must be a number > 0, not "
                           f"{row.get(column)!r}")  # fmt: skip
    return value


@dataclass(frozen=True)
class Trace:
    """A client trace: per partition, or per class with shares; links and/or devices."""

    links: dict[str, Link]
    devices: dict[str, Device]
    by_partition: dict[int, str] | None  # partition -> row key; None: classes with shares
    shares: list[tuple[str, float]]


def read_trace(path: Path) -> Trace:
    """A trace CSV (module docstring); every bad line is one ``ProfileError``."""
    try:
        with path.open(newline="") as handle:
            rows = list(csv.DictReader(handle))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise ProfileError(f"{path}: cannot read the trace ({exc})") from None
    if not rows:
        raise ProfileError(f"{path}: no rows; give a header and one row per client or class")
    columns = set(rows[0])
    has_link = all(c in columns for c in LINK_FIELDS)
    has_device = all(c in columns for c in DEVICE_FIELDS)
    if not has_link and not has_device:
        raise ProfileError(f"{path}: needs the link columns {', '.join(LINK_FIELDS)} and/or "
                           f"the device column {', '.join(DEVICE_FIELDS)}")  # fmt: skip
    per_client, per_class = "partition" in columns, "share" in columns
    if per_client == per_class:
        raise ProfileError(f"{path}: give either a partition column (one row per client) or "
                           "a share column (one row per class of client)")  # fmt: skip
    known = links()
    trace_links: dict[str, Link] = {}
    trace_devices: dict[str, Device] = {}
    by_partition: dict[int, str] = {}
    shares: list[tuple[str, float]] = []
    for line, row in enumerate(rows, start=2):
        key = f"{path.stem}:{line}"
        if has_link:
            radio_name = (row.get("radio") or "").strip()
            if radio_name and radio_name not in known:
                raise ProfileError(f"{path}, line {line}: radio {radio_name!r} is no link "
                                   f"profile; choose from {', '.join(known)}")  # fmt: skip
            trace_links[key] = Link(key, f"trace {path.name}, line {line}",
                                    _number(row, "uplink_mbps", line, path),
                                    _number(row, "downlink_mbps", line, path),
                                    _number(row, "rtt_ms", line, path),
                                    known[radio_name].radio if radio_name else None)
        if has_device:
            power = (row.get("power_w") or "").strip()
            trace_devices[key] = Device(key, f"trace {path.name}, line {line}",
                                        _number(row, "flops_per_s", line, path),
                                        _number(row, "power_w", line, path) if power else None)
        if per_client:
            try:
                partition = int(row["partition"])
            except (TypeError, ValueError):
                partition = -1
            if partition < 0 or partition in by_partition:
                raise ProfileError(f"{path}, line {line}: partition must be a new integer "
                                   f">= 0, not {row.get('partition')!r}")  # fmt: skip
            by_partition[partition] = key
        else:
            shares.append((key, _number(row, "share", line, path)))
    if shares:
        total = sum(s for _, s in shares)
        shares = [(k, s / total) for k, s in shares]
    return Trace(trace_links, trace_devices, by_partition if per_client else None, shares)


@dataclass(frozen=True)
class Population:
    """Each partition's link and device, and what they were drawn from (for the record)."""

    links: dict[int, Link]
    devices: dict[int, Device]
    link_spec: str
    device_spec: str

    def describe(self) -> str:
        """One line per profile: how many clients have it."""
        out = []
        for kind, table in (("link", self.links), ("device", self.devices)):
            counts: dict[str, int] = {}
            for profile in table.values():
                counts[profile.name] = counts.get(profile.name, 0) + 1
            out.append(f"{kind}s: " + ", ".join(f"{name} x{n}" for name, n in counts.items()))
        return "; ".join(out)


def _draw(spec: str, kind: str, known: Mapping[str, object], partitions: Sequence[int],
          seed: int, flag: str) -> dict[int, object]:  # fmt: skip
    """``spec`` (a mix or a trace CSV) for ``kind`` ("link" or "device")."""
    if spec.endswith(".csv"):
        trace = read_trace(Path(spec))
        table = trace.links if kind == "link" else trace.devices
        if not table:
            raise ProfileError(f"--{flag} {spec}: the trace has no {kind} columns "
                               f"({', '.join(LINK_FIELDS if kind == 'link' else DEVICE_FIELDS)})")
        if trace.by_partition is not None:
            missing = [p for p in partitions if p not in trace.by_partition]
            if missing:
                raise ProfileError(f"--{flag} {spec}: no row for partition(s) "
                                   f"{', '.join(map(str, missing[:5]))}; give one per client")
            return {p: table[trace.by_partition[p]] for p in partitions}
        chosen = assign(trace.shares, partitions, seed, kind)
        return {p: table[key] for p, key in chosen.items()}
    mix = parse_mix(spec, list(known), kind, flag)
    return {p: known[name] for p, name in assign(mix, partitions, seed, kind).items()}


def check_spec(spec: str, kind: str, flag: str = "") -> None:
    """``spec`` is a usable ``--link`` / ``--client-device`` value (a mix of known profiles,
    or a readable trace with that kind's columns); else ``ProfileError``."""
    if spec.endswith(".csv"):
        trace = read_trace(Path(spec))
        if not (trace.links if kind == "link" else trace.devices):
            raise ProfileError(f"--{flag or kind} {spec}: the trace has no {kind} columns")
        return
    parse_mix(spec, list(links() if kind == "link" else devices()), kind, flag)


def population(link_spec: str, device_spec: str, partitions: Sequence[int],
               seed: int) -> Population:  # fmt: skip
    """Each partition's link and device from ``--link`` and ``--client-device`` (mixes or
    traces)."""
    drawn_links = _draw(link_spec, "link", links(), partitions, seed, "link")
    drawn_devices = _draw(device_spec, "device", devices(), partitions, seed, "client-device")
    return Population(drawn_links, drawn_devices, link_spec, device_spec)  # type: ignore[arg-type]


def server_device(name: str) -> Device:
    """The server's device profile (aggregation and evaluation time)."""
    known = devices()
    if name not in known:
        raise ProfileError(f"--server-device {name}: unknown; choose from {', '.join(known)}")
    return known[name]


def markdown(path: Path = PROFILES_FILE) -> str:
    """The profiles and their sources as markdown tables (docs/time-and-energy.md holds this
    text between its ``profiles`` markers; a test keeps the two equal)."""
    data = catalogue(path)
    sources = data["source"]
    keys: list[str] = []

    def ref(table: Mapping[str, object], field: str) -> str:
        key = str(table["sources"][field])  # type: ignore[index]
        if key not in keys:
            keys.append(key)
        return f"[{keys.index(key) + 1}]"

    lines = ["| link | uplink Mbps | downlink Mbps | RTT ms | radio power model |",
             "|---|---|---|---|---|"]  # fmt: skip
    for name, t in data["link"].items():
        radio = t.get("radio")
        if radio:
            tail = " then ".join(f"{s:g} s at {w:g} W" for s, w in radio["tail"])
            model = (f"{radio['active_w']:g} W active + {radio['up_w_per_mbps']:g} / "
                     f"{radio['down_w_per_mbps']:g} W per Mbps up / down; tail {tail}; "
                     f"promotion {radio['promotion_s']:g} s at {radio['promotion_w']:g} W "
                     f"{ref(t, 'radio')}")  # fmt: skip
        else:
            model = "none (mains-powered or not found)"
        lines.append(f"| `{name}`: {t['label']} | {t['uplink_mbps']:g} {ref(t, 'uplink_mbps')} "
                     f"| {t['downlink_mbps']:g} {ref(t, 'downlink_mbps')} "
                     f"| {t['rtt_ms']:g} {ref(t, 'rtt_ms')} | {model} |")
    lines += ["", "| device | FLOP/s | power while computing |", "|---|---|---|"]
    for name, t in data["device"].items():
        power = f"{t['power_w']:g} W {ref(t, 'power_w')}" if "power_w" in t else "not found"
        lines.append(f"| `{name}`: {t['label']} | {t['flops_per_s']:.3g} "
                     f"{ref(t, 'flops_per_s')} | {power} |")
    lines += ["", "Sources:", ""]
    for i, key in enumerate(keys, start=1):
        source = sources[key]
        lines.append(f"{i}. {source['cite']}. <{source['url']}> — \"{source['quote']}\"")
    return "\n".join(lines) + "\n"
