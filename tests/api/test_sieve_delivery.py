"""The REST send path to a local user goes through that user's Sieve script."""

from __future__ import annotations

from relate.store import sieve
from tests.api.conftest import Api
from tests.api.test_outbound import BOB, folder


async def test_rest_send_to_a_local_user_is_filed_by_their_script(api: Api) -> None:
    """Alice sends to Bob over REST; Bob's active script files it into 'From Alice' (created), not INBOX."""
    user_id = await api.pool.fetchval("SELECT id FROM users WHERE address = $1", BOB)
    script = """require ["fileinto", "mailbox", "imap4flags"];
    if address :is "from" "alice@example.com" { fileinto :create :flags "\\\\Seen" "From Alice"; }"""
    await sieve.put_script(api.pool, user_id, "main", script)
    async with api.pool.acquire() as conn:
        await sieve.activate(conn, user_id, "main")
    status, sent = await api.call("POST", "/api/outbound/send", json={"to": [BOB], "subject": "filtered"})
    assert status == 201, sent
    assert await folder(api, "INBOX", api.bob) == []
    (filed,) = await folder(api, "From Alice", api.bob)
    assert filed["subject"] == "filtered"
