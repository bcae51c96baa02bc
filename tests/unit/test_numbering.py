"""Number plan (longest prefix wins) and ported-number overrides."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from presence_sip.gateway.numbering import NumberPlan, Resolution, candidate_prefixes
from presence_sip.hss.records import PlanEntry, PortEntry

PLAN = NumberPlan(
    {"+44": "net-b.test", "+4477": "net-a.test", "+447700900": "net-c.test", "+1": "net-us.test"},
    {"+447700900999": "net-b.test", "+15550100": "net-a.test"},
)


def test_candidate_prefixes_longest_first() -> None:
    assert candidate_prefixes("+4477009") == [
        "+4477009",
        "+447700",
        "+44770",
        "+4477",
        "+447",
        "+44",
        "+4",
    ]


@pytest.mark.parametrize("text", ["", "+", "4477", "sip:+4477@x", "+0123"])
def test_candidate_prefixes_of_non_canonical_is_empty(text: str) -> None:
    assert candidate_prefixes(text) == []


@pytest.mark.parametrize(
    ("msisdn", "network"),
    [
        ("+441234567890", "net-b.test"),  # only +44 matches
        ("+447711111111", "net-a.test"),  # +4477 beats +44
        ("+447700900123", "net-c.test"),  # +447700900 beats +4477 and +44
        ("+447700900999", "net-b.test"),  # ported: override beats every prefix
        ("+15550100", "net-a.test"),
        ("+15550101", "net-us.test"),
        ("+33123456789", None),
        ("not-a-number", None),
    ],
)
def test_network_for(msisdn: str, network: str | None) -> None:
    assert PLAN.network_for(msisdn) == network


def test_resolution_tells_why() -> None:
    assert PLAN.resolve("+447711111111") == Resolution(network="net-a.test", prefix="+4477")
    ported = PLAN.resolve("+447700900999")
    assert ported == Resolution(network="net-b.test", prefix=None)
    assert ported is not None
    assert ported.ported
    assert PLAN.resolve("+33123456789") is None


def test_a_prefix_equal_to_the_whole_number_matches() -> None:
    plan = NumberPlan({"+447700900123": "net-x.test", "+44": "net-b.test"}, {})
    assert plan.network_for("+447700900123") == "net-x.test"
    assert plan.network_for("+447700900124") == "net-b.test"


def test_from_entries_and_networks() -> None:
    plan = NumberPlan.from_entries(
        [PlanEntry("+44", "net-b.test"), PlanEntry("+4477", "net-a.test")],
        [PortEntry("+441111111", "net-c.test")],
    )
    assert plan.network_for("+447712345") == "net-a.test"
    assert plan.network_for("+441111111") == "net-c.test"
    assert plan.networks() == {"net-a.test", "net-b.test", "net-c.test"}


def test_plan_is_a_copy_of_its_input() -> None:
    prefixes = {"+44": "net-b.test"}
    plan = NumberPlan(prefixes, {})
    prefixes["+44"] = "changed.test"
    assert plan.network_for("+447700900123") == "net-b.test"


@given(
    st.dictionaries(st.from_regex(r"\+[1-9][0-9]{0,5}", fullmatch=True), st.sampled_from("abc")),
    st.from_regex(r"\+[1-9][0-9]{2,14}", fullmatch=True),
)
def test_longest_prefix_wins_against_a_brute_force_oracle(
    prefixes: dict[str, str], msisdn: str
) -> None:
    matching = [prefix for prefix in prefixes if msisdn.startswith(prefix)]
    expected = prefixes[max(matching, key=len)] if matching else None
    assert NumberPlan(prefixes, {}).network_for(msisdn) == expected
