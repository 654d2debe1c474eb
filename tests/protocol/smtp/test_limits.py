"""Size, recipient and line-length limits: refused with the right codes, nothing half-stored, the session goes on."""

from __future__ import annotations

from relate.services import accounts

from .conftest import Smtp
from .helpers import Client, make_message, message_count


async def test_size_parameter_over_limit_is_refused(smtp: Smtp) -> None:
    """MAIL FROM with SIZE=60000000 (over the 52428800 offered) is refused 552; SIZE at the limit is fine."""
    client = await Client.connect(smtp.mx)
    assert "SIZE 52428800" in (await client.ehlo()).keywords
    assert (await client.cmd("MAIL FROM:<carol@remote.example> SIZE=60000000")).code == 552
    # No transaction was opened by the refused MAIL.
    assert (await client.cmd("RCPT TO:<bob@example.com>")).head == "503 5.5.1"
    assert (await client.cmd("MAIL FROM:<carol@remote.example> SIZE=52428800")).head == "250 2.1.0"
    assert (await client.cmd("RCPT TO:<bob@example.com>")).head == "250 2.1.5"
    assert (await client.data(make_message())).head == "250 2.0.0"
    await client.close()
    assert len(await smtp.inbox("bob@example.com")) == 1


async def test_size_parameter_refusal_is_552_5_3_4(smtp: Smtp) -> None:
    """The SIZE refusal carries the enhanced code 5.3.4 (RFC 1870, RFC 3463) and no 'Error:' text."""
    client = await Client.connect(smtp.mx)
    await client.ehlo()
    reply = await client.cmd("MAIL FROM:<carol@remote.example> SIZE=60000000")
    assert reply.head == "552 5.3.4"
    assert "Error" not in reply.text
    await client.close()


async def test_message_over_limit_is_refused_after_data_and_session_continues(smtp: Smtp) -> None:
    """A 200 KB message over a 100 KB limit gets 552 5.3.4 after DATA, is not stored, and the next message is fine."""
    smtp.cfg.smtp.max_message_size = 100_000
    client = await Client.connect(smtp.mx)
    assert "SIZE 100000" in (await client.ehlo()).keywords
    big = make_message(body="x" * 998 + "\r\n") + (b"y" * 998 + b"\r\n") * 200
    assert len(big) > 200_000
    replies = await client.mail("carol@remote.example", ["bob@example.com"], big)
    assert [r.head for r in replies] == ["250 2.1.0", "250 2.1.5", "552 5.3.4"]
    assert await message_count(smtp) == 0
    small = make_message(subject="small")
    replies = await client.mail("carol@remote.example", ["bob@example.com"], small)
    assert [r.head for r in replies] == ["250 2.1.0", "250 2.1.5", "250 2.0.0"]
    await client.close()
    (stored,) = await smtp.inbox("bob@example.com")
    assert stored.endswith(small)


async def test_too_many_recipients_get_452_and_the_first_ones_get_the_message(smtp: Smtp) -> None:
    """With max_recipients 3, the 4th RCPT gets 452 4.5.3 and the message goes to the first three only."""
    smtp.cfg.smtp.max_recipients = 3
    await accounts.add_user(smtp.pool, "carol@example.com")
    await accounts.add_user(smtp.pool, "dave@example.com")
    message = make_message(to="undisclosed-recipients:;")
    client = await Client.connect(smtp.mx)
    await client.ehlo()
    assert (await client.cmd("MAIL FROM:<eve@remote.example>")).head == "250 2.1.0"
    for rcpt in ["bob@example.com", "alice@example.com", "carol@example.com"]:
        assert (await client.cmd(f"RCPT TO:<{rcpt}>")).head == "250 2.1.5"
    assert (await client.cmd("RCPT TO:<dave@example.com>")).head == "452 4.5.3"
    assert (await client.cmd("RCPT TO:<dave@example.com>")).head == "452 4.5.3"
    assert (await client.data(message)).head == "250 2.0.0"
    await client.close()
    for user in ["bob@example.com", "alice@example.com", "carol@example.com"]:
        (stored,) = await smtp.inbox(user)
        assert stored.endswith(message)
    assert await smtp.inbox("dave@example.com") == []


async def test_overlong_data_line_is_refused_and_nothing_stored(smtp: Smtp) -> None:
    """A body line over max_line_length gets 500 5.5.2 after the data, nothing is stored, and the session goes on."""
    smtp.cfg.smtp.max_line_length = 2000
    client = await Client.connect(smtp.mx)
    await client.ehlo()
    long_line = make_message(body="z" * 5000 + "\r\n")
    replies = await client.mail("carol@remote.example", ["bob@example.com"], long_line)
    assert [r.head for r in replies] == ["250 2.1.0", "250 2.1.5", "500 5.5.2"]
    assert await message_count(smtp) == 0
    replies = await client.mail("carol@remote.example", ["bob@example.com"], make_message())
    assert [r.head for r in replies] == ["250 2.1.0", "250 2.1.5", "250 2.0.0"]
    await client.close()
    assert len(await smtp.inbox("bob@example.com")) == 1
