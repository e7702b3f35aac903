"""Rounds to test the headline code on (``pemn_fl.seeds``, ``pemn_fl.report``,
``bench.levers``, ``pemn_fl.timesummary``): a builder of ``rounds.csv`` frames, and one
hand-made seed group whose every headline number is worked out by hand in
``tests/test_headline_known.py``.

The group is chosen so that no rule can be replaced by a look-alike without changing a
number: seeds given out of order, three methods, FedAvg's seed-mean curve peaking mid-run,
a seed whose FedAvg never finished, budgets on the default MB grid with rounds ending exactly
on a budget, a lead between the two methods' spreads.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import pandas as pd

from pemn_fl.report import COLUMNS

# Per direction and round, a message is its wire bytes less this many HTTP bytes, and its
# payload this many fewer again: the three byte levels never coincide.
HTTP_BYTES, PROTOBUF_BYTES = 1_000, 100
WIRE = ("uplink_wire_bytes", "downlink_wire_bytes")


def rounds(curves: Mapping[str, tuple[Sequence[float], int, int]], *, replied: int = 2,
           wire: bool = True) -> pd.DataFrame:  # fmt: skip
    """One run's rounds.csv rows, methods in the given order: ``method -> (accuracy by round
    from round 0, wire bytes up per round, wire bytes down per round)``. Round 0 sends
    nothing; ``replied`` clients answer every later round; ``wire=False``: a run recorded
    before the wire level (no wire columns)."""
    rows = []
    for method, (accuracies, up, down) in curves.items():
        cumulative = 0
        for r, acc in enumerate(accuracies):
            w_up, w_down = (up, down) if r else (0, 0)
            m_up, m_down = (w_up - HTTP_BYTES, w_down - HTTP_BYTES) if r else (0, 0)
            p_up, p_down = (m_up - PROTOBUF_BYTES, m_down - PROTOBUF_BYTES) if r else (0, 0)
            cumulative += m_up + m_down
            rows.append({**{c: 0 for c in COLUMNS}, "method": method, "round": r,
                         "clients_sampled": 2 if r else 0,
                         "clients_replied": replied if r else 0,
                         "uplink_payload_bytes": p_up, "downlink_payload_bytes": p_down,
                         "uplink_bytes": m_up, "downlink_bytes": m_down,
                         "uplink_wire_bytes": w_up, "downlink_wire_bytes": w_down,
                         "cumulative_bytes": cumulative, "accuracy": acc, "loss": 1.0})  # fmt: skip
    frame = pd.DataFrame(rows, columns=COLUMNS)
    return frame if wire else frame.drop(columns=list(WIRE))


MB = 1_000_000
# Wire bytes per round (up, down): evolve 0.25 MB, qsgd 2 MB, FedAvg 2.5 MB, both directions.
SIZES = {"evolve": (150_000, 100_000), "qsgd": (MB, MB), "fedavg": (1_250_000, 1_250_000)}
# Accuracy by round (round 0 first), per seed. Seed 2's run was killed in FedAvg's round 4
# (FedAvg runs last): its FedAvg has rounds 0-3 only.
ACCURACY = {
    1: {"evolve": [0.09, 0.70, 0.80, 0.815, 0.83],
        "qsgd": [0.12, 0.80, 0.80, 0.85, 0.86],
        "fedavg": [0.10, 0.60, 0.825, 0.78, 0.83]},
    2: {"evolve": [0.09, 0.75, 0.82, 0.80, 0.81],
        "qsgd": [0.12, 0.81, 0.79, 0.80, 0.805],
        "fedavg": [0.10, 0.80, 0.83, 0.79]},
    3: {"evolve": [0.09, 0.60, 0.78, 0.80, 0.812],
        "qsgd": [0.12, 0.74, 0.83, 0.84, 0.85],
        "fedavg": [0.10, 0.50, 0.81, 0.88, 0.83]},
}  # fmt: skip


def seed_frame(seed: int, wire: bool = True) -> pd.DataFrame:
    """The hand-made group's run of ``seed``."""
    return rounds({m: (acc, *SIZES[m]) for m, acc in ACCURACY[seed].items()}, wire=wire)


def group() -> dict[int, pd.DataFrame]:
    """The hand-made group, seeds in the order 3, 1, 2 (a dict in no particular order)."""
    return {seed: seed_frame(seed) for seed in (3, 1, 2)}


# -- random groups for the property and oracle tests -----------------------------------------
def learning_curves(draw: Callable, rounds_: int, methods: Sequence[str]) -> dict[str, list[int]]:
    """Accuracies in hundredths by round, per method: a start near chance, then steps that
    mostly climb (some fall), each method with its own pace; so methods reach targets, tie,
    lead clearly or not, as real runs do."""
    from hypothesis import strategies as st

    out = {}
    for method in methods:
        pace = draw(st.integers(0, 8))
        acc = [draw(st.integers(5, 15))]
        for _ in range(rounds_):
            acc.append(min(95, max(5, acc[-1] + 3 + draw(st.integers(-9, 9)) + pace)))
        out[method] = acc
    return out


def random_group(draw: Callable, methods: Sequence[str], max_seeds: int = 4, old: bool = False
                 ) -> dict[int, pd.DataFrame]:  # fmt: skip
    """1-``max_seeds`` seeds (numbers and order arbitrary) of ``methods`` in a drawn run order,
    each with its own wire bytes a round, 2-5 training rounds; a (seed, method) is cut short
    now and then (a run killed or still going). ``old``: now and then a seed recorded before
    the wire level (no wire columns)."""
    from hypothesis import strategies as st

    def now_and_then(one_in: int) -> bool:  # False is the simplest draw, so the usual case
        return draw(st.sampled_from([False] * (one_in - 1) + [True]))

    seeds = draw(st.lists(st.integers(0, 50), min_size=1, max_size=max_seeds, unique=True))
    old_seed = draw(st.sampled_from(seeds)) if old and now_and_then(3) else None
    names = draw(st.permutations(list(methods)))
    size = {m: (draw(st.integers(2_000, 3_000_000)), draw(st.integers(2_000, 3_000_000)))
            for m in names}  # fmt: skip
    length = draw(st.integers(1, 4).map(lambda n: 6 - n))  # 2-5; simplest: 5 rounds
    frames = {}
    for seed in seeds:
        curves = learning_curves(draw, length, names)
        for m in names:
            if len(curves[m]) > 1 and now_and_then(8):  # cut short (simplest: one round less)
                curves[m] = curves[m][: len(curves[m]) - draw(st.integers(1, len(curves[m]) - 1))]
        frames[seed] = rounds({m: ([a / 100 for a in acc], *size[m]) for m, acc in curves.items()},
                              wire=seed != old_seed)  # fmt: skip
    return frames
