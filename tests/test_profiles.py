"""Profiles: every number has a cited source; mixes and traces give each client a profile,
reproducibly; bad ones are one clear error."""

from __future__ import annotations

from pathlib import Path

import pytest

from pemn_fl import profiles as P

NUMBERS = ("uplink_mbps", "downlink_mbps", "rtt_ms", "flops_per_s", "power_w", "radio")


def test_every_number_in_the_profiles_names_a_source_that_exists() -> None:
    data = P.catalogue()
    sources = data["source"]
    for kind in ("link", "device"):
        for name, table in data[kind].items():
            cited = table["sources"]
            for key in NUMBERS:
                if key in table:
                    assert key in cited, f"{kind}.{name}.{key} has no source"
                    assert cited[key] in sources, f"{kind}.{name}.{key}: {cited[key]} missing"
            assert set(cited) <= set(table), f"{kind}.{name} cites a field it lacks"
    for key, source in sources.items():
        assert source["cite"] and source["url"].startswith("http") and source["quote"], key


def test_the_issue_s_link_kinds_are_all_there_with_rates_and_round_trips() -> None:
    links = P.links()
    for name in ("fibre", "wifi", "lte", "3g", "nbiot", "geo", "leo"):
        link = links[name]
        assert link.uplink_mbps > 0 and link.downlink_mbps > 0 and link.rtt_ms > 0
    # Mobile uplinks are slower than their downlinks; the satellite is round-trip bound.
    assert links["3g"].uplink_mbps < links["3g"].downlink_mbps / 3
    assert links["geo"].rtt_ms > 10 * links["lte"].rtt_ms
    assert links["lte"].radio is not None and links["lte"].radio.tail_s == pytest.approx(10.12)
    assert links["3g"].radio.tail_energy(6.0) == pytest.approx(4 * 1.02 + 2 * 0.40)
    assert links["fibre"].radio is None
    assert {"phone", "oldphone", "mcu", "laptop"} <= set(P.devices())


def test_a_mix_gives_exact_proportions_placed_by_the_seed() -> None:
    mix = P.parse_mix("lte:0.6,3g:0.3,geo:0.1", list(P.links()), "link")
    drawn = P.assign(mix, list(range(20)), seed=1, salt="link")
    names = list(drawn.values())
    assert (names.count("lte"), names.count("3g"), names.count("geo")) == (12, 6, 2)
    assert P.assign(mix, list(range(20)), seed=1, salt="link") == drawn
    assert P.assign(mix, list(range(20)), seed=2, salt="link") != drawn
    # Largest remainder: 7 clients at 0.6 / 0.3 / 0.1 are 4 / 2 / 1.
    seven = list(P.assign(mix, list(range(7)), seed=1, salt="link").values())
    assert (seven.count("lte"), seven.count("3g"), seven.count("geo")) == (4, 2, 1)
    assert set(P.assign([("3g", 1.0)], [0, 1, 2], 0, "link").values()) == {"3g"}


@pytest.mark.parametrize(("text", "says"), [
    ("5g", "unknown link profile '5g'"),
    ("lte:0.5,3g:0.3", "sum to 0.8"),
    ("lte:x", "must be a number > 0"),
    ("lte:-1", "must be a number > 0"),
    ("lte:0.5,lte:0.5", "named twice"),
    ("", "name a profile"),
])  # fmt: skip
def test_a_bad_mix_is_one_clear_error(text: str, says: str) -> None:
    with pytest.raises(P.ProfileError, match=says):
        P.parse_mix(text, list(P.links()), "link")


def test_a_trace_per_client_and_per_class(tmp_path: Path) -> None:
    per_client = tmp_path / "clients.csv"
    per_client.write_text("partition,uplink_mbps,downlink_mbps,rtt_ms,radio,flops_per_s\n"
                          "0,1,10,50,lte,1e9\n1,2,20,600,,2e9\n")  # fmt: skip
    pop = P.population(str(per_client), str(per_client), [0, 1], seed=0)
    assert pop.links[0].uplink_mbps == 1 and pop.links[0].radio == P.links()["lte"].radio
    assert pop.links[1].rtt_ms == 600 and pop.links[1].radio is None
    assert pop.devices[1].flops_per_s == 2e9 and pop.devices[1].power_w is None
    per_class = tmp_path / "classes.csv"
    per_class.write_text("share,uplink_mbps,downlink_mbps,rtt_ms\n3,1,10,50\n1,5,50,20\n")
    pop = P.population(str(per_class), "phone", list(range(8)), seed=0)
    ups = sorted(link.uplink_mbps for link in pop.links.values())
    assert ups == [1] * 6 + [5] * 2  # shares 3 : 1 of 8 clients
    assert all(d.name == "phone" for d in pop.devices.values())


@pytest.mark.parametrize(("body", "says"), [
    ("partition,uplink_mbps,downlink_mbps,rtt_ms\n0,1,10,-5\n", "rtt_ms must be a number > 0"),
    ("partition,uplink_mbps,downlink_mbps,rtt_ms\n0,1,10,5\n0,1,10,5\n", "partition must be a new"),
    ("partition,uplink_mbps,downlink_mbps,rtt_ms,radio\n0,1,10,5,5g\n", "radio '5g' is no link"),
    ("partition,share,uplink_mbps,downlink_mbps,rtt_ms\n0,1,1,10,5\n", "either a partition"),
    ("partition,speed\n0,1\n", "needs the link columns"),
    ("", "no rows"),
])  # fmt: skip
def test_a_bad_trace_is_one_clear_error(tmp_path: Path, body: str, says: str) -> None:
    path = tmp_path / "trace.csv"
    path.write_text(body)
    with pytest.raises(P.ProfileError, match=says):
        P.population(str(path), "phone", [0], seed=0)


def test_a_trace_missing_a_client_or_a_kind_says_so(tmp_path: Path) -> None:
    path = tmp_path / "trace.csv"
    path.write_text("partition,uplink_mbps,downlink_mbps,rtt_ms\n0,1,10,5\n")
    with pytest.raises(P.ProfileError, match="no row for partition"):
        P.population(str(path), "phone", [0, 1], seed=0)
    with pytest.raises(P.ProfileError, match="has no device columns"):
        P.population("lte", str(path), [0], seed=0)
    with pytest.raises(P.ProfileError, match="cannot read"):
        P.population(str(tmp_path / "absent.csv"), "phone", [0], seed=0)


def test_the_docs_profile_tables_are_the_profiles_file() -> None:
    doc = (Path(__file__).resolve().parents[1] / "docs" / "time-and-energy.md").read_text()
    block = doc.split("<!-- profiles -->\n", 1)[1].split("<!-- /profiles -->", 1)[0]
    assert block == P.markdown(), "regenerate docs/time-and-energy.md's profile tables"
