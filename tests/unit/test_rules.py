"""Presence authorization decisions (RFC 5025 semantics, HSS model)."""

from __future__ import annotations

import pytest

from presence_sip.presence.rules import (
    Action,
    Aor,
    SubscriptionOutcome,
    decide,
    normalise_aor,
    parse_action,
    subscription_state_for,
)
from presence_sip.sip.errors import ConfigError

RULES = {
    "sip:alice@net-a.test": Action.ALLOW,
    "sip:*@net-a.test": Action.POLITE_BLOCK,
    "*@net-c.test": Action.BLOCK,
    "carol@net-c.test": Action.CONFIRM,
    "tel:+447700900123": Action.ALLOW,
    "not a uri at all": Action.ALLOW,
}


@pytest.mark.parametrize(
    ("watcher", "expected"),
    [
        ("sip:alice@net-a.test", Action.ALLOW),  # exact beats domain
        ("sips:ALICE@Net-A.Test:5061;transport=tls", Action.ALLOW),  # normalised
        ('"Alice" <sip:alice:secret@net-a.test>;tag=1', Action.ALLOW),  # name-addr
        ("pres:alice@net-a.test", Action.ALLOW),
        ("sip:dave@net-a.test", Action.POLITE_BLOCK),  # domain rule
        ("sip:eve@net-c.test", Action.BLOCK),
        ("sip:carol@NET-C.test", Action.CONFIRM),  # bare-key exact rule beats domain
        ("sip:mallory@sub.net-a.test", Action.CONFIRM),  # no subdomain matching -> default
        ("sip:net-a.test", Action.CONFIRM),  # no user: not "every user"
        ("tel:+447700900123;phone-context=x", Action.ALLOW),
        ("sip:+447700900123@net-a.test", Action.POLITE_BLOCK),  # sip user, not tel
        ("<sip:alice@net-a.test", Action.CONFIRM),  # unterminated name-addr
        ("sip:@", Action.CONFIRM),
        ("", Action.CONFIRM),
    ],
)
def test_decide(watcher, expected):
    assert decide(RULES, watcher, Action.CONFIRM) == expected


def test_no_rules_gives_the_default():
    assert decide({}, "sip:alice@net-a.test", Action.BLOCK) is Action.BLOCK


def test_several_matching_rules_combine_to_the_most_permissive():
    rules = {"sip:bob@x.test": Action.BLOCK, "sips:BOB@x.test": Action.POLITE_BLOCK}
    assert decide(rules, "sip:bob@x.test", Action.CONFIRM) is Action.POLITE_BLOCK
    rules = {"*@x.test": Action.BLOCK, "sip:*@X.TEST": Action.CONFIRM}
    assert decide(rules, "sip:zed@x.test", Action.BLOCK) is Action.CONFIRM


def test_domain_rule_does_not_match_tel():
    assert decide({"*@net-a.test": Action.BLOCK}, "tel:+1555", Action.ALLOW) is Action.ALLOW


@pytest.mark.parametrize(
    ("uri", "aor"),
    [
        ("sip:Alice@Net-A.test", Aor("sip", "alice", "net-a.test")),
        ("sip:+4477;npdi@net-b.test;user=phone?subject=x", Aor("sip", "+4477", "net-b.test")),
        ("sip:bob@[2001:DB8::1]:5060", Aor("sip", "bob", "[2001:db8::1]")),
        ("sip:bob@[2001:db8::1", None),
        ("sip:net-a.test:5060", Aor("sip", "", "net-a.test")),
        ("alice@net-a.test", Aor("sip", "alice", "net-a.test")),
        ("TEL:+1-555", Aor("tel", "+1-555", "")),
        ("tel:;x", None),
        ("sip:al ice@net a", None),
    ],
)
def test_normalise_aor(uri, aor):
    assert normalise_aor(uri) == aor


def test_aor_uri():
    assert Aor("sip", "alice", "net-a.test").uri == "sip:alice@net-a.test"
    assert Aor("sip", "", "net-a.test").uri == "sip:net-a.test"
    assert Aor("tel", "+1555", "").uri == "tel:+1555"


@pytest.mark.parametrize(
    ("text", "action"),
    [
        ("allow", Action.ALLOW),
        (" Block ", Action.BLOCK),
        ("polite-block", Action.POLITE_BLOCK),
        ("POLITE_BLOCK", Action.POLITE_BLOCK),
        ("confirm", Action.CONFIRM),
    ],
)
def test_parse_action(text, action):
    assert parse_action(text) is action


def test_parse_action_rejects_unknown():
    with pytest.raises(ConfigError, match="unknown presence rule action 'maybe'"):
        parse_action("maybe")


@pytest.mark.parametrize(
    ("action", "outcome"),
    [
        (Action.ALLOW, SubscriptionOutcome("active", None, 200, False, "active", "approved")),
        (Action.POLITE_BLOCK, SubscriptionOutcome("active", None, 200, True, "active", "approved")),
        (Action.CONFIRM, SubscriptionOutcome("pending", None, 200, False, "pending", "subscribe")),
        (
            Action.BLOCK,
            SubscriptionOutcome("terminated", "rejected", 403, False, "terminated", "rejected"),
        ),
    ],
)
def test_subscription_state_for(action, outcome):
    assert subscription_state_for(action) == outcome
