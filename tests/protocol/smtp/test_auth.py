"""SMTP AUTH (RFC 4954) with app keys: PLAIN and LOGIN, refusals, and the per-address lockout."""

from __future__ import annotations

import base64
import json
import logging
import smtplib
import ssl

import pytest

from .conftest import Smtp
from .helpers import Client, blocking, make_message

ALICE = "alice@example.com"


def smtplib_login(port: int, context: ssl.SSLContext, login: str, key: str, how: str) -> tuple[int, bytes]:
    """Log in with smtplib over STARTTLS, forcing one mechanism; returns the final AUTH reply."""
    with smtplib.SMTP("127.0.0.1", port, local_hostname="client.example.org", timeout=10) as conn:
        conn.starttls(context=context)
        conn.ehlo()
        conn.user, conn.password = login, key
        try:
            if how == "PLAIN":
                result = conn.auth("PLAIN", conn.auth_plain)
            elif how == "LOGIN":
                result = conn.auth("LOGIN", conn.auth_login)
            else:  # LOGIN with the username in a challenge, not in the command
                result = conn.auth("LOGIN", conn.auth_login, initial_response_ok=False)
        except smtplib.SMTPAuthenticationError as exc:
            return exc.smtp_code, exc.smtp_error
        if result[0] == 235:
            conn.sendmail(
                login,
                ["bob@example.com"],
                make_message(sender=login, subject=f"via {how}"),
            )
        return result


@pytest.mark.parametrize(
    ("login", "how"),
    [
        (ALICE, "PLAIN"),
        ("al@example.com", "PLAIN"),
        (ALICE, "LOGIN"),
        ("Alice@Example.COM", "LOGIN-challenge"),
        ("al@example.com", "LOGIN-challenge"),
    ],
)
async def test_smtplib_logs_in_with_each_mechanism(smtp: Smtp, login: str, how: str) -> None:
    """smtplib logs in with PLAIN and LOGIN (both forms), as alice or her alias, gets 235 2.7.0 and can send."""
    code, text = await blocking(smtplib_login, smtp.submission, smtp.client_tls, login, smtp.alice_key, how)
    assert (code, text[:5]) == (235, b"2.7.0")
    assert len(await smtp.inbox("bob@example.com")) == 1


async def test_wrong_key_and_wrong_scope_are_refused(smtp: Smtp, caplog: pytest.LogCaptureFixture) -> None:
    """A wrong key, a key without scope smtp, or another user's login get 535 5.7.8, each logged for fail2ban."""
    caplog.set_level(logging.WARNING, logger="relate.auth")
    wrong_secret = smtp.alice_key[:-4] + ("aaaa" if not smtp.alice_key.endswith("aaaa") else "bbbb")
    cases = [
        (ALICE, wrong_secret, "bad-secret"),
        (ALICE, smtp.imap_only_key, "missing-scope:smtp"),
        ("bob@example.com", smtp.alice_key, "wrong-user"),
        (ALICE, "hunter2", "malformed-key"),
    ]
    for login, key, _ in cases:
        code, text = await blocking(smtplib_login, smtp.submission, smtp.client_tls, login, key, "PLAIN")
        assert (code, text[:5]) == (535, b"5.7.8"), login
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("auth-failure")]
    assert lines == [
        f"auth-failure service=smtp client=127.0.0.1 user={json.dumps(login)} reason={reason}"
        for login, _, reason in cases
    ]
    # None of these keys leaked into the log.
    assert not [r for r in caplog.records if smtp.alice_key in r.getMessage() or smtp.imap_only_key in r.getMessage()]
    assert await smtp.inbox("bob@example.com") == []


async def test_raw_auth_exchanges(smtp: Smtp) -> None:
    """PLAIN with an empty challenge works; '*' aborts 501 5.7.0; bad base64 501 5.5.2; unknown type 504 5.5.4."""
    client = await Client.connect(smtp.submission)
    await client.ehlo()
    await client.starttls(smtp.client_tls)
    await client.ehlo()
    assert (await client.cmd("AUTH CRAM-MD5")).head == "504 5.5.4"
    assert (await client.cmd("AUTH PLAIN !!!notbase64")).head == "501 5.5.2"
    assert (await client.cmd("AUTH PLAIN")).lines == ["334 "]
    assert (await client.cmd("*")).head == "501 5.7.0"
    assert (await client.cmd("AUTH LOGIN")).head == "334"
    assert (await client.cmd("*")).head == "501 5.7.0"
    # authzid naming someone else: acting as another user is refused like a bad key.
    token = base64.b64encode(f"bob@example.com\0{ALICE}\0{smtp.alice_key}".encode()).decode()
    assert (await client.cmd(f"AUTH PLAIN {token}")).head == "535 5.7.8"
    assert (await client.cmd("AUTH PLAIN")).lines == ["334 "]
    token = base64.b64encode(f"\0{ALICE}\0{smtp.alice_key}".encode()).decode()
    assert (await client.cmd(token)).head == "235 2.7.0"
    assert (await client.auth_plain(ALICE, smtp.alice_key)).head == "503 5.5.1"
    await client.close()


async def test_login_challenges_are_username_and_password(smtp: Smtp) -> None:
    """AUTH LOGIN asks 'Username:' then 'Password:' in base64 and accepts alice's key."""
    client = await Client.connect(smtp.submissions, tls=smtp.client_tls)
    await client.ehlo()
    first = await client.cmd("AUTH LOGIN")
    assert base64.b64decode(first.text[4:]) == b"Username:"
    second = await client.cmd(base64.b64encode(ALICE.encode()))
    assert base64.b64decode(second.text[4:]) == b"Password:"
    assert (await client.cmd(base64.b64encode(smtp.alice_key.encode()))).head == "235 2.7.0"
    await client.close()


async def test_five_failures_lock_the_address_out(smtp: Smtp, caplog: pytest.LogCaptureFixture) -> None:
    """After five wrong keys from one address, the right key is refused 535 5.7.8 too, on every port."""
    caplog.set_level(logging.WARNING, logger="relate.auth")
    wrong = smtp.alice_key[:-1] + ("A" if smtp.alice_key[-1] != "A" else "B")
    client = await Client.connect(smtp.submission)
    await client.ehlo()
    await client.starttls(smtp.client_tls)
    await client.ehlo()
    for _ in range(5):
        assert (await client.auth_plain(ALICE, wrong)).head == "535 5.7.8"
    assert (await client.auth_plain(ALICE, smtp.alice_key)).head == "535 5.7.8"
    assert (await client.cmd(f"MAIL FROM:<{ALICE}>")).head == "530 5.7.0"
    await client.close()
    other = await Client.connect(smtp.submissions, tls=smtp.client_tls)
    await other.ehlo()
    assert (await other.auth_plain("al@example.com", smtp.alice_key)).head == "535 5.7.8"
    await other.close()
    messages = [r.getMessage() for r in caplog.records]
    failures = [m for m in messages if m.startswith("auth-failure")]
    assert failures == [f'auth-failure service=smtp client=127.0.0.1 user="{ALICE}" reason=bad-secret'] * 5 + [
        f'auth-failure service=smtp client=127.0.0.1 user="{ALICE}" reason=locked-out',
        'auth-failure service=smtp client=127.0.0.1 user="al@example.com" reason=locked-out',
    ]
    assert [m for m in messages if m.startswith("auth-lockout client=127.0.0.1")]
    assert await smtp.inbox("bob@example.com") == []


async def test_log_line_cannot_be_forged_by_the_login(smtp: Smtp, caplog: pytest.LogCaptureFixture) -> None:
    """A login with a newline and quotes is JSON-quoted in the auth-failure line, so it cannot forge a log line."""
    caplog.set_level(logging.WARNING, logger="relate.auth")
    login = 'x" reason=ok\nauth-failure service=smtp client=203.0.113.9 user="y'
    client = await Client.connect(smtp.submissions, tls=smtp.client_tls)
    await client.ehlo()
    assert (await client.auth_plain(login, smtp.alice_key)).head == "535 5.7.8"
    await client.close()
    (line,) = [r.getMessage() for r in caplog.records if r.getMessage().startswith("auth-failure")]
    assert "\n" not in line
    assert line == f"auth-failure service=smtp client=127.0.0.1 user={json.dumps(login)} reason=wrong-user"
