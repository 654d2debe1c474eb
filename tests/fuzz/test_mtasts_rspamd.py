"""MTA-STS records and policies, DKIM key records, rspamd's answers and the subject it gives: whatever a remote
server (or a broken rspamd) sends, an answer or the parser's own error comes out, quickly."""

from __future__ import annotations

import json

from hypothesis import example, given
from hypothesis import strategies as st

from relate.mail.mtasts import PolicyError, parse_policy, txt_id, valid_mx_pattern
from relate.services.dns import published
from relate.spam.filter import replace_subject, subject_field
from relate.spam.rspamd import Unreachable, parse_answer

_POLICY_LINES = st.sampled_from(
    [
        *("version: STSv1", "mode: enforce", "mode: testing", "mx: mail.example.com", "mx: *.example.net"),
        *("max_age: 86400", "mx: *.*.x", "max_age: 99999999999", ":", "mx:", "\r", "version:STSv1", "é: x"),
        "mx: " + "a." * 200 + "b",
    ]
)


@given(st.binary(max_size=4096))
@example(b"\xff" * 100)
@example(b"mx: " + b"a-" * 30000 + b"!")
@example(b"version: STSv1\nmode: enforce\nmax_age: 1\n" + b"mx: " + (b"a" * 62 + b".") * 1000 + b"!\n")
def test_any_policy_bytes(body: bytes) -> None:
    try:
        policy = parse_policy(body)
    except PolicyError:
        return
    assert policy.mode in ("enforce", "testing", "none")
    assert all(valid_mx_pattern(m) for m in policy.mx)


@given(st.lists(_POLICY_LINES, max_size=60), st.sampled_from(["\n", "\r\n"]))
def test_policy_shaped_lines(lines: list[str], end: str) -> None:
    body = end.join(lines).encode()
    try:
        policy = parse_policy(body)
    except PolicyError:
        return
    assert parse_policy(policy.text().encode()) == policy  # what we serve reads back the same


@given(st.lists(st.text(max_size=300), max_size=5))
@example(["v=STSv1; id=" + "a" * 5000])
@example(["v=STSv1;" + ";" * 5000])
def test_any_sts_txt_records(records: list[str]) -> None:
    found = txt_id(records)
    assert found is None or (found.isalnum() and len(found) <= 32)


@given(st.lists(st.text(max_size=500), max_size=5), st.text(max_size=100))
@example(["p=" + "=" * 5000], "x")
@example([";" * 5000], "")
def test_any_dkim_key_records(values: list[str], key: str) -> None:
    assert published(values, key) in (True, False)


@given(st.binary(max_size=4096))
@example(b"[" * 200_000)
@example(b'{"action": "reject", "symbols": ' + b"{" * 100_000)
@example(json.dumps({"action": "reject", "score": 1e308}).encode())
@example(b'{"action": "no action", "score": NaN, "symbols": {"A": {"score": Infinity}}}')
def test_any_rspamd_answer(data: bytes) -> None:
    """A broken or hostile answer is Unreachable (the configured fallback applies), never another exception."""
    try:
        result = parse_answer(data)
    except Unreachable:
        return
    assert isinstance(result.score, float)


@given(
    st.dictionaries(
        st.sampled_from(["action", "score", "required_score", "symbols", "x"]),
        st.recursive(
            st.none() | st.booleans() | st.floats() | st.integers() | st.text(max_size=20),
            lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
            max_leaves=30,
        ),
    )
)
def test_rspamd_answer_shaped(body: dict[str, object]) -> None:
    try:
        result = parse_answer(json.dumps(body).encode())
    except Unreachable:
        return
    assert all(isinstance(name, str) for name, _ in result.symbols)


@given(st.text(max_size=2000), st.binary(max_size=2000))
@example("\r\n" * 500 + "Bcc: x@y", b"Subject: a\r\n" * 300 + b"\r\n")
@example("é" * 2000, b"subject:" + b"\r\n " * 500)
@example("x" * 2000, b"")
def test_rewritten_subject_is_one_field(subject: str, section: bytes) -> None:
    """Whatever subject rspamd gives, the field written is one ASCII Subject field (continuations start with a
    space, no bare CR or LF), and it replaces the subject of any header section, keeping the rest."""
    field = subject_field(subject)
    assert field.isascii()
    assert field.startswith(b"Subject:")
    assert field.endswith(b"\r\n")
    lines = field[:-2].split(b"\r\n")
    assert all(line.startswith(b" ") for line in lines[1:])
    assert all(len(line) <= 998 for line in lines)
    assert b"\r" not in b"".join(lines)
    assert b"\n" not in b"".join(lines)
    replaced = replace_subject(section, field)
    assert field in replaced
