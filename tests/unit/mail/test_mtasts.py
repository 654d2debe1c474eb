"""MTA-STS text formats (RFC 8461 §3.1, §3.2): the TXT record's id, the policy file, MX matching."""

from __future__ import annotations

import pytest

from relate.config import ConfigError, from_mapping
from relate.mail.mtasts import MAX_POLICY_BYTES, Policy, PolicyError, parse_policy, txt_id


def test_txt_id_of_one_valid_record() -> None:
    """The id of the one v=STSv1 record; none, two, a bad id or no id give None; other TXT records do not count."""
    assert txt_id(["v=STSv1; id=20261207T1500", "v=spf1 -all"]) == "20261207T1500"
    assert txt_id(["v=STSv1;id=abc ; ext=1"]) == "abc"
    assert txt_id([]) is None
    assert txt_id(["v=STSv1; id=1", "v=STSv1; id=2"]) is None
    assert txt_id(["v=STSv1;"]) is None
    assert txt_id(["v=STSv1; id=bad-id"]) is None
    assert txt_id(["v=STSv1; id=" + "a" * 33]) is None


def test_policy_parsed_with_lf_or_crlf_and_written_back() -> None:
    """Both line ends, unknown keys ignored, several mx; text() writes what parses back to the same policy."""
    body = b"version: STSv1\nmode: enforce\nmx: mail.example.com\nmx: *.example.net\nmax_age: 86400\nfoo: bar\n"
    policy = parse_policy(body)
    assert policy == Policy("enforce", ("mail.example.com", "*.example.net"), 86400)
    assert parse_policy(policy.text().encode()) == policy
    assert parse_policy(body.replace(b"\n", b"\r\n")) == policy


@pytest.mark.parametrize(
    "body",
    [
        b"mode: enforce\nmx: a.example\nmax_age: 1\n",  # no version
        b"version: STSv2\nmode: enforce\nmx: a.example\nmax_age: 1\n",
        b"version: STSv1\nmode: strict\nmx: a.example\nmax_age: 1\n",
        b"version: STSv1\nmode: enforce\nmax_age: 1\n",  # no mx
        b"version: STSv1\nmode: enforce\nmx: a.example\nmax_age: 31557601\n",
        b"version: STSv1\nmode: enforce\nmx: a.example\nmax_age: -1\n",
        b"version: STSv1\nmode: enforce\nmx: bad_host!\nmax_age: 1\n",
        b"version: STSv1\nmode: enforce\nmx: a.*.example\nmax_age: 1\n",
        b"\xff\xfe",
        b"x" * (MAX_POLICY_BYTES + 1),
    ],
)
def test_bad_policies_are_refused(body: bytes) -> None:
    """Each of these is not a policy: PolicyError."""
    with pytest.raises(PolicyError):
        parse_policy(body)


def test_mx_matching_wildcards_cover_one_label() -> None:
    """§4.1: *.example.net matches mx1.example.net, not example.net nor a.b.example.net; names compare without case."""
    policy = Policy("enforce", ("mail.example.com", "*.example.net"), 1)
    assert policy.matches("MAIL.example.com.")
    assert policy.matches("mx1.example.net")
    assert not policy.matches("example.net")
    assert not policy.matches("a.b.example.net")
    assert not policy.matches("evil-mail.example.com")


def test_config_refuses_bad_mta_sts_values() -> None:
    """mta_sts.mode, .max_age and .mx are checked at start-up with a message naming the key."""
    with pytest.raises(ConfigError, match=r"mta_sts\.mode"):
        from_mapping({"mta_sts": {"mode": "strict"}}, "test", environ={})
    with pytest.raises(ConfigError, match=r"mta_sts.mx\[0\]"):
        from_mapping({"mta_sts": {"mx": ["not a host"]}}, "test", environ={})
    with pytest.raises(ConfigError, match=r"delivery.outbound_addresses\[0\]"):
        from_mapping({"delivery": {"outbound_addresses": ["mail.example.com"]}}, "test", environ={})
    cfg = from_mapping({"mta_sts": {"mode": "enforce", "mx": ["*.example.com"]}}, "test", environ={})
    assert cfg.mta_sts.mx == ["*.example.com"]
