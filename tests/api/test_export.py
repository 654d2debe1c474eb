"""Export: one message as .eml, MBOX (mboxrd) of a folder, a search or everything, rate limits, relatectl."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import aiohttp

from tests.api.conftest import Api, message
from tests.api.test_hub import another_api
from tests.api.test_openapi import _document
from tests.cli.test_relatectl import invoke, ok

_FROM_ = re.compile(rb"^From \S+ \w{3} \w{3} [ \d]\d \d\d:\d\d:\d\d \d{4}$")


def messages_of(mbox: bytes) -> list[bytes]:
    """The messages of an mboxrd file, unescaped (one '>' off each '>...From ' line), with CRLF line ends."""
    found: list[list[bytes]] = []
    lines = mbox.split(b"\n")
    assert lines[-1] == b"", "the file ends with a line end"
    for line in lines[:-1]:
        if line.startswith(b"From ") and (not found or found[-1][-1] == b""):
            assert _FROM_.match(line), line
            found.append([])
            continue
        found[-1].append(line[1:] if re.match(rb"^>+From ", line) else line)
    out = []
    for entry in found:
        assert entry[-1] == b"", "a blank line ends each entry"
        out.append(b"\r\n".join(entry[:-1]) + b"\r\n")
    return out


async def export(api: Api, query: str = "", url: str | None = None) -> tuple[int, bytes, aiohttp.ClientResponse]:
    async with api.session.get((url or api.url) + "/api/export/mbox" + query, headers=api.auth(api.alice)) as resp:
        return resp.status, await resp.read(), resp


TRICKY = "From the start of a line.\r\n>From quoted once.\r\n>>From quoted twice.\r\nFrom: not a header\r\n"


async def test_eml_is_the_raw_message_as_a_file(api: Api) -> None:
    """GET /api/emails/{id}/eml answers the stored bytes as message/rfc822, to save as email-ID.eml."""
    raw = message("Keep this")
    (email_id,) = await api.deliver(raw, "alice@example.com")
    async with api.session.get(f"{api.url}/api/emails/{email_id}/eml", headers=api.auth(api.alice)) as resp:
        assert resp.status == 200
        assert resp.content_type == "message/rfc822"
        assert resp.headers["Content-Disposition"] == f'attachment; filename="email-{email_id}.eml"'
        assert await resp.read() == (await api.call("GET", f"/api/emails/{email_id}/raw"))[1]
    status, _ = await api.call("GET", f"/api/emails/{email_id}/eml", api.bob)
    assert status == 404


async def test_folder_export_round_trips_every_message(api: Api) -> None:
    """A folder's MBOX holds each message once, byte for byte after unescaping, even lines starting From."""
    raws = []
    for raw in [message("One"), message("Two", TRICKY), message("Three", "no final line end")]:
        (email_id,) = await api.deliver(raw, "alice@example.com")
        raws.append((await api.call("GET", f"/api/emails/{email_id}/raw"))[1])  # as stored: with Return-Path
    await api.deliver(message("For Bob", to="bob@example.com"), "bob@example.com")
    status, body, resp = await export(api, "?mailbox=INBOX")
    assert status == 200
    assert resp.headers["Content-Type"] == "application/mbox"
    assert resp.headers["Transfer-Encoding"] == "chunked"
    assert 'filename="alice_example.com-INBOX.mbox"' in resp.headers["Content-Disposition"]
    assert b"\n>From the start of a line.\n>>From quoted once.\n>>>From quoted twice.\nFrom: not" in body
    got = messages_of(body)
    assert got[:2] == raws[:2]
    assert got[2] == raws[2] + b"\r\n"  # the message's last line gets its line end
    assert len(got) == 3


async def test_search_and_everything(api: Api) -> None:
    """q exports only the matches (across folders); no parameters exports every folder of the user."""
    ids = []
    for n, word in enumerate(["numbers", "plans", "numbers"]):
        # (Subjects: the text index takes bodies in later, in the background.)
        ids += await api.deliver(message(f"Report {n} {word}"), "alice@example.com")
    status, _ = await api.call("PATCH", f"/api/emails/{ids[2]}", json={"mailbox": "Archive"})
    assert status == 200
    status, body, _ = await export(api, "?q=numbers")
    assert status == 200
    subjects = sorted(re.findall(rb"Subject: (Report \d)", body))
    assert subjects == [b"Report 0", b"Report 2"]
    status, body, _ = await export(api)
    assert sorted(re.findall(rb"Subject: (Report \d)", body)) == [b"Report 0", b"Report 1", b"Report 2"]
    assert len(messages_of(body)) == 3
    status, body, _ = await export(api, "?mailbox=Nope")
    assert status == 404


async def test_exports_are_rate_limited_per_user(api: Api, tmp_path: Path) -> None:
    """Past api.exports_per_hour a user's export gets 429 with Retry-After; another user's still runs."""
    await api.deliver(message("One"), "alice@example.com")
    async with another_api(api, tmp_path, api__exports_per_hour=2) as (_, url):
        for _ in range(2):
            assert (await export(api, "?mailbox=INBOX", url))[0] == 200
        status, _, resp = await export(api, "?mailbox=INBOX", url)
        assert status == 429
        assert 3500 <= int(resp.headers["Retry-After"]) <= 3600
        async with api.session.get(url + "/api/export/mbox", headers=api.auth(api.bob)) as bob:
            assert bob.status == 200
    documented = (await _document(api))["paths"]["/api/export/mbox"]["get"]["responses"]
    assert {"200", "404", "429"} <= set(documented)


async def test_relatectl_user_export_writes_the_same_file(api: Api, dsn: str, tmp_path: Path) -> None:
    """relatectl user export writes (mode 0600) what the REST export answers; --mailbox and --search narrow it."""
    await api.deliver(message("One", TRICKY), "alice@example.com")
    await api.deliver(message("Two words"), "alice@example.com")
    _, everything, _ = await export(api)
    target = tmp_path / "alice.mbox"
    result = await asyncio.to_thread(invoke, dsn, "user", "export", "alice@example.com", "-o", str(target))
    assert "exported 2 messages" in ok(result).stdout
    assert target.read_bytes() == everything
    assert target.stat().st_mode & 0o777 == 0o600
    assert not (tmp_path / "alice.mbox.partial").exists()
    result = await asyncio.to_thread(
        invoke, dsn, "user", "export", "alice@example.com", "--search", "words", "--mailbox", "INBOX", "-o", "-"
    )
    assert [m.split(b"Subject: ")[1][:3] for m in messages_of(ok(result).stdout_bytes)] == [b"Two"]
    result = await asyncio.to_thread(
        invoke, dsn, "user", "export", "alice@example.com", "--mailbox", "Nope", "-o", str(target)
    )
    assert result.exit_code == 1
    assert target.read_bytes() == everything  # a failed export leaves the old file alone
