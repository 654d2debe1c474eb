"""relatectl queue, dkim and domain dns, as an admin uses them against the test's own database.

Queued mail is made directly in the database (the way the submission path
queues it), in sync helpers that run their own event loop; the commands run
through typer's CliRunner and the tests look at exit codes, stdout, stderr
and the resulting rows.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import asyncpg
import pytest
from typer.testing import CliRunner, Result

from relate.config import Config, DatabaseConfig
from relate.queue.worker import DeliveryWorker
from relate.services import accounts
from relate.store import db
from relate.store import queue as store
from relate.store.queue import Outcome
from relatectl import common
from relatectl.main import app
from tests.protocol.delivery.helpers import ALICE, BOB, parse_dsn, queue_mail

T = TypeVar("T")
Invoke = Callable[..., Result]
STATUSES = "queued, sending, sent, partial_failure, failed, held, deferred"


# --- running relatectl -------------------------------------------------------------


def cli_env(dsn: str, **extra: str | None) -> dict[str, str | None]:
    """No RELATE_* from outside; wide, colourless output; the test's database; a fixed host name."""
    env: dict[str, str | None] = {name: None for name in os.environ if name.startswith("RELATE_")}
    env.update(
        {
            "COLUMNS": "200",
            "NO_COLOR": "1",
            "FORCE_COLOR": None,
            "TTY_COMPATIBLE": None,
            "RELATE_DATABASE__DSN": dsn,
            "RELATE_HOSTNAME": "mail.example.com",
            "RELATE_DELIVERY__DNS_SERVERS": "127.0.0.1:9",  # never the real resolver
        }
    )
    env.update(extra)
    return env


@pytest.fixture(autouse=True)
def wide_console(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tables render 200 columns wide whatever COLUMNS was when rich's console was created."""
    monkeypatch.setattr(common.console, "_width", 200)


@pytest.fixture
def relatectl(dsn: str) -> Invoke:
    """``relatectl(*args, input=None)`` against the test's database."""

    def run(*args: str, input: str | None = None, **env: str | None) -> Result:
        return CliRunner().invoke(app, list(args), input=input, env=cli_env(dsn, **env))

    return run


def ok(result: Result) -> Result:
    assert result.exit_code == 0, (result.exit_code, result.stdout, result.stderr, result.exception)
    assert result.exception is None
    return result


def one_error(result: Result) -> str:
    """The single ``error: ...`` line of a failed command (exit 1, no traceback, nothing on stdout)."""
    assert result.exit_code == 1, (result.exit_code, result.stdout, result.stderr, result.exception)
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    return lines[0]


def as_json(result: Result) -> Any:
    return json.loads(ok(result).stdout)


def listed_ids(relatectl: Invoke, *args: str) -> list[int]:
    return [row["id"] for row in as_json(relatectl("queue", "list", "--json", *args))]


# --- the database -------------------------------------------------------------------


class Db:
    """Sync access to the test's database: queue mail, record attempts, look at rows."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn

    def run(self, fn: Callable[[asyncpg.Pool], Awaitable[T]]) -> T:
        async def go() -> T:
            pool = await db.create_pool(DatabaseConfig(dsn=self.dsn, pool_min=1, pool_max=2))
            try:
                return await fn(pool)
            finally:
                await pool.close()

        return asyncio.run(go())

    def queue(self, to: list[str], *, sender: str = ALICE, **kwargs: Any) -> int:
        return self.run(lambda pool: queue_mail(pool, to, sender=sender, **kwargs))

    def fetch(self, sql: str, *args: Any) -> list[dict[str, Any]]:
        async def go(pool: asyncpg.Pool) -> list[dict[str, Any]]:
            return [dict(r) for r in await pool.fetch(sql, *args)]

        return self.run(go)

    def email(self, email_id: int) -> dict[str, Any] | None:
        rows = self.fetch("SELECT * FROM outbound_emails WHERE id = $1", email_id)
        return rows[0] if rows else None

    def status(self, email_id: int) -> str | None:
        row = self.email(email_id)
        return row["status"] if row else None

    def recipients(self, email_id: int) -> dict[str, dict[str, Any]]:
        rows = self.fetch("SELECT * FROM outbound_recipients WHERE outbound_email_id = $1 ORDER BY id", email_id)
        return {r["address"]: r for r in rows}

    def deferred(self, email_id: int, *, minutes: int = 30) -> None:
        """Record a failed attempt: every waiting recipient deferred by a 451 from mx1.remote.test."""

        async def go(pool: asyncpg.Pool) -> None:
            now = datetime.now(UTC)
            async with pool.acquire() as conn, conn.transaction():
                rows = await conn.fetch(
                    """UPDATE outbound_recipients SET attempts = attempts + 1
                        WHERE outbound_email_id = $1 AND status IN ('pending', 'deferred') RETURNING id""",
                    email_id,
                )
                await store.record(
                    conn,
                    [
                        Outcome(
                            r["id"],
                            "deferred",
                            "4.2.0",
                            "451 4.2.0 mailbox busy",
                            "mx1.remote.test",
                            now + timedelta(minutes=minutes),
                        )
                        for r in rows
                    ],
                    now,
                )

        self.run(go)

    def backdate(self, email_id: int, hours: float) -> None:
        self.fetch("UPDATE outbound_emails SET queued_at = now() - $2::interval WHERE id = $1", email_id,
                   timedelta(hours=hours))  # fmt: skip

    def inbox(self, address: str) -> list[bytes]:
        rows = self.fetch(
            """SELECT b.data FROM messages m JOIN blobs b ON b.hash = m.blob_hash
                 JOIN mailboxes x ON x.id = m.mailbox_id JOIN users u ON u.id = x.user_id
                WHERE u.address = $1 AND upper(x.name) = 'INBOX' ORDER BY m.uid""",
            address,
        )
        return [bytes(r["data"]) for r in rows]

    def run_worker(self) -> bool:
        """One pass of a delivery daemon (real clock); local recipients only need no network."""
        cfg = Config(hostname="mail.example.com")
        cfg.delivery.dns_servers = ["127.0.0.1:9"]
        cfg.delivery.dns_timeout = 1.0
        cfg.delivery.connect_timeout = 1.0
        return self.run(lambda pool: DeliveryWorker(cfg, pool).run_once())


@pytest.fixture
def mail(dsn: str) -> Db:
    """example.com hosted, with users alice and bob; nothing queued yet."""
    d = Db(dsn)

    async def setup(pool: asyncpg.Pool) -> None:
        await accounts.add_domain(pool, "example.com")
        await accounts.add_user(pool, ALICE, "Alice")
        await accounts.add_user(pool, BOB, "Bob")

    d.run(setup)
    return d


# --- list -------------------------------------------------------------------------------


def test_list_shows_queued_mail_as_table_and_json(relatectl: Invoke, mail: Db) -> None:
    """`queue list` says "no queue" when empty, then shows each message with its recipients, as a table and JSON."""
    assert ok(relatectl("queue", "list")).stdout == "no queue\n"
    assert as_json(relatectl("queue", "list", "--json")) == []

    first = mail.queue(["carol@remote.test", "dave@remote.test"])
    second = mail.queue(["erin@other.test"], sender=BOB)
    mail.deferred(second)

    table = ok(relatectl("queue", "list")).stdout
    assert table.startswith("Queue\n")
    assert re.search(
        rf"│ {first}\s+│ queued\s+│ (?:\d{{4}}-)?\d\d-\d\d \d\d:\d\d\s+│ alice@example\.com\s+│ "
        r"carol@remote\.test \(pending\),dave@remote\.test \(pending\)\s+│ \d+\s+│",
        table,
    ), table
    assert re.search(
        rf"│ {second}\s+│ queued\s+│.*│ bob@example\.com\s+│ erin@other\.test \(deferred\).*451 4\.2\.0", table
    )

    rows = as_json(relatectl("queue", "list", "--json"))
    assert [r["id"] for r in rows] == [first, second]  # oldest first
    assert set(rows[0]) == {
        "id",
        "status",
        "queued_at",
        "mail_from",
        "recipients",
        "size",
        "next_retry_at",
        "last_error",
    }
    assert rows[0]["recipients"] == ["carol@remote.test (pending)", "dave@remote.test (pending)"]
    assert rows[0]["mail_from"] == ALICE
    assert rows[0]["size"] > 100
    assert rows[1]["last_error"] == "451 4.2.0 mailbox busy"
    datetime.fromisoformat(rows[1]["queued_at"])
    assert datetime.fromisoformat(rows[1]["next_retry_at"]) > datetime.now(UTC) + timedelta(minutes=20)


def test_list_filters_combine(relatectl: Invoke, mail: Db) -> None:
    """--status, --from, --to, --domain and --older-than each filter, and together they all must match."""
    a = mail.queue(["carol@remote.test"])
    b = mail.queue(["dave@other.test"], sender=BOB)
    c = mail.queue(["dave@other.test", "carol@remote.test"])
    d = mail.queue(["erin@other.test"])
    mail.backdate(c, 3)
    mail.backdate(d, 30)
    ok(relatectl("queue", "hold", str(d)))

    assert listed_ids(relatectl) == [d, c, a, b]
    assert listed_ids(relatectl, "--from", ALICE) == [d, c, a]
    assert listed_ids(relatectl, "--from", "Bob@Example.COM") == [b]
    assert listed_ids(relatectl, "--to", "dave@other.test") == [c, b]
    assert listed_ids(relatectl, "--domain", "remote.test") == [c, a]
    assert listed_ids(relatectl, "--domain", "OTHER.test") == [d, c, b]
    assert listed_ids(relatectl, "--older-than", "2h") == [d, c]
    assert listed_ids(relatectl, "--older-than", "1d") == [d]
    assert listed_ids(relatectl, "--status", "held") == [d]
    assert listed_ids(relatectl, "--status", "queued") == [c, a, b]
    assert listed_ids(relatectl, "--status", "queued", "--status", "held") == [d, c, a, b]
    # Combined: every filter must hold.
    assert listed_ids(relatectl, "--from", ALICE, "--domain", "other.test") == [d, c]
    assert listed_ids(relatectl, "--from", ALICE, "--domain", "other.test", "--status", "queued") == [c]
    assert listed_ids(relatectl, "--from", ALICE, "--to", "dave@other.test", "--older-than", "2h") == [c]
    assert listed_ids(relatectl, "--from", BOB, "--older-than", "2h") == []
    assert ok(relatectl("queue", "list", "--to", "nobody@nowhere.test")).stdout == "no queue\n"


def test_list_leaves_out_drafts(relatectl: Invoke, mail: Db) -> None:
    """Drafts are not queue entries: list, show and delete ignore them."""
    queued = mail.queue(["carol@remote.test"])
    (draft,) = mail.fetch(
        """INSERT INTO outbound_emails (user_id, status, from_address)
           SELECT id, 'draft', address FROM users WHERE address = $1 RETURNING id""",
        ALICE,
    )
    assert listed_ids(relatectl) == [queued]
    assert one_error(relatectl("queue", "show", str(draft["id"]))) == f"error: no queued message {draft['id']}"
    assert one_error(relatectl("queue", "delete", "--yes", str(draft["id"]))) == (
        f"error: no queued message {draft['id']}"
    )
    assert mail.status(draft["id"]) == "draft"


def test_list_rejects_unknown_status_and_bad_age(relatectl: Invoke, mail: Db) -> None:
    """An unknown --status or a malformed --older-than fails with one line naming what is allowed."""
    assert one_error(relatectl("queue", "list", "--status", "bogus")) == (
        f"error: unknown status 'bogus': choose from {STATUSES}"
    )
    assert one_error(relatectl("queue", "list", "--status", "queued", "--status", "lost")) == (
        f"error: unknown status 'lost': choose from {STATUSES}"
    )
    assert one_error(relatectl("queue", "list", "--older-than", "soon")) == (
        "error: --older-than: expected like 30m, 2h or 5d, got 'soon'"
    )


# --- show ---------------------------------------------------------------------------------


def test_show_lists_each_recipient_with_attempts_next_try_and_reply(relatectl: Invoke, mail: Db) -> None:
    """`queue show ID` prints the message and a row per recipient: status, attempts, next try, remote MTA, reply."""
    eid = mail.queue(["carol@remote.test", "dave@remote.test"], subject="Budget 2027")
    mail.deferred(eid)
    mail.deferred(eid)
    out = ok(relatectl("queue", "show", str(eid))).stdout
    head = dict(line.split(None, 1) for line in out.split("Recipients")[0].splitlines() if line.strip())
    assert head["id"] == str(eid)
    assert head["status"] == "queued"
    assert head["user"] == ALICE
    assert head["mail_from"] == ALICE
    assert head["subject"] == "Budget 2027"
    assert head["message_id"].startswith("<")
    for rcpt in ("carol@remote.test", "dave@remote.test"):
        assert re.search(
            rf"│ {re.escape(rcpt)}\s+│ deferred\s+│ 2\s+│ (?:\d{{4}}-)?\d\d-\d\d \d\d:\d\d\s+│ mx1\.remote\.test\s+│ "
            r"451 4\.2\.0 mailbox busy\s+│",
            out,
        ), out

    shown = as_json(relatectl("queue", "show", str(eid), "--json"))
    assert shown["id"] == eid
    assert shown["subject"] == "Budget 2027"
    assert "blob_hash" not in shown
    rcpts = {r["address"]: r for r in shown["recipients"]}
    assert set(rcpts) == {"carol@remote.test", "dave@remote.test"}
    carol = rcpts["carol@remote.test"]
    assert (carol["status"], carol["attempts"], carol["status_code"]) == ("deferred", 2, "4.2.0")
    assert (carol["remote_mta"], carol["remote_reply"]) == ("mx1.remote.test", "451 4.2.0 mailbox busy")
    assert datetime.fromisoformat(carol["next_attempt_at"]) > datetime.now(UTC)


def test_show_unknown_id_is_one_line(relatectl: Invoke, mail: Db) -> None:
    """`queue show` of an id that is not queued fails with one line."""
    assert one_error(relatectl("queue", "show", "4242")) == "error: no queued message 4242"


# --- retry and flush ---------------------------------------------------------------------


def next_tries(mail: Db, email_id: int) -> list[datetime]:
    return [r["next_attempt_at"] for r in mail.recipients(email_id).values()]


def test_retry_one_message_makes_it_due_now(relatectl: Invoke, mail: Db) -> None:
    """`queue retry ID` makes that message's waiting recipients due now and leaves the others alone."""
    target = mail.queue(["carol@remote.test", "dave@remote.test"])
    other = mail.queue(["erin@remote.test"])
    mail.deferred(target, minutes=45)
    mail.deferred(other, minutes=45)
    later = next_tries(mail, other)

    before = datetime.now(UTC)
    assert ok(relatectl("queue", "retry", str(target))).stdout == "1 message(s) due now\n"
    for when in next_tries(mail, target):
        assert before - timedelta(seconds=1) <= when <= datetime.now(UTC)
    assert mail.email(target)["next_retry_at"] <= datetime.now(UTC)  # type: ignore[index]
    assert next_tries(mail, other) == later


def test_retry_by_domain_and_all(relatectl: Invoke, mail: Db) -> None:
    """`queue retry --domain D` picks the messages with a recipient at D; `--all` every waiting message."""
    remote = mail.queue(["carol@remote.test"])
    other = mail.queue(["dave@other.test"])
    both = mail.queue(["erin@other.test", "frank@remote.test"])
    for eid in (remote, other, both):
        mail.deferred(eid)
    now = datetime.now

    assert ok(relatectl("queue", "retry", "--domain", "Other.Test")).stdout == "2 message(s) due now\n"
    assert all(t <= now(UTC) for t in next_tries(mail, other) + next_tries(mail, both))
    assert all(t > now(UTC) for t in next_tries(mail, remote))

    assert ok(relatectl("queue", "retry", "--all")).stdout == "3 message(s) due now\n"
    assert all(t <= now(UTC) for eid in (remote, other, both) for t in next_tries(mail, eid))


def test_flush_makes_everything_waiting_due(relatectl: Invoke, mail: Db) -> None:
    """`queue flush` makes every waiting recipient due now; finished messages are not counted."""
    waiting = [mail.queue([f"user{i}@remote.test"]) for i in range(3)]
    for eid in waiting:
        mail.deferred(eid)
    done = mail.queue([BOB])
    assert mail.run_worker() is True  # delivers bob's copy locally; the others are not due
    assert mail.status(done) == "sent"

    assert ok(relatectl("queue", "flush")).stdout == "3 message(s) due now\n"
    assert all(t <= datetime.now(UTC) for eid in waiting for t in next_tries(mail, eid))


def test_retry_without_ids_is_one_line(relatectl: Invoke, mail: Db) -> None:
    """`queue retry` with neither ids nor --all/--domain says what to give."""
    assert one_error(relatectl("queue", "retry")) == "error: give message ids (or - to read them from standard input)"


# --- hold and release ----------------------------------------------------------------------


def test_hold_keeps_a_message_from_delivery_until_released(relatectl: Invoke, mail: Db) -> None:
    """A held message is not claimed by the delivery daemon; after release it is delivered."""
    held = mail.queue([BOB], subject="held")
    assert ok(relatectl("queue", "hold", str(held))).stdout == f"held 1 message(s): {held}\n"
    assert mail.status(held) == "held"
    assert listed_ids(relatectl, "--status", "held") == [held]

    assert mail.run_worker() is False  # nothing claimable
    assert {r["status"] for r in mail.recipients(held).values()} == {"pending"}
    assert mail.inbox(BOB) == []

    assert one_error(relatectl("queue", "hold", str(held))) == f"error: message {held} is already held"
    assert ok(relatectl("queue", "release", str(held))).stdout == "released 1 message(s)\n"
    assert mail.status(held) == "queued"
    assert one_error(relatectl("queue", "release", str(held))) == f"error: message {held} is queued, not held"

    assert mail.run_worker() is True
    assert mail.status(held) == "sent"
    assert len(mail.inbox(BOB)) == 1


# --- fail ---------------------------------------------------------------------------------------


def test_fail_gives_up_now_and_bounces_to_the_sender(relatectl: Invoke, mail: Db) -> None:
    """`queue fail ID` fails every waiting recipient and puts one DSN listing them in the sender's INBOX."""
    eid = mail.queue(["carol@remote.test", "dave@remote.test"], subject="Too late")
    mail.deferred(eid)
    other = mail.queue(["erin@remote.test"])
    out = ok(relatectl("queue", "fail", str(eid))).stdout
    assert out == "failed 2 recipient(s); bounces sent to the senders\n"
    assert {(r["status"], r["status_code"]) for r in mail.recipients(eid).values()} == {("failed", "5.3.0")}
    assert mail.status(eid) == "failed"
    assert mail.status(other) == "queued"

    (raw,) = mail.inbox(ALICE)
    dsn = parse_dsn(raw)
    assert sorted(r["Final-Recipient"] for r in dsn.recipients) == [
        "rfc822; carol@remote.test",
        "rfc822; dave@remote.test",
    ]
    assert {(r["Action"], r["Status"]) for r in dsn.recipients} == {("failed", "5.3.0")}
    assert dsn.original["Subject"] == "Too late"

    # Nothing left to fail: an error naming it, and no second bounce.
    assert one_error(relatectl("queue", "fail", str(eid))) == f"error: message {eid} is failed: nothing to fail"
    assert len(mail.inbox(ALICE)) == 1


def test_fail_a_held_message(relatectl: Invoke, mail: Db) -> None:
    """A held message can be failed too: its recipients fail and the sender is told."""
    eid = mail.queue(["carol@remote.test"])
    ok(relatectl("queue", "hold", str(eid)))
    ok(relatectl("queue", "fail", str(eid)))
    assert mail.status(eid) == "failed"
    assert len(mail.inbox(ALICE)) == 1


# --- delete -------------------------------------------------------------------------------------


def test_delete_asks_first_without_yes(relatectl: Invoke, mail: Db) -> None:
    """`queue delete ID` asks; "n" keeps the message, "y" deletes it, and the sender gets no bounce."""
    eid = mail.queue(["carol@remote.test"])
    refused = relatectl("queue", "delete", str(eid), input="n\n")
    assert refused.exit_code == 1
    assert "Delete 1 message(s) without telling their senders? [y/N]" in refused.stdout
    assert "Aborted" in refused.output
    assert mail.status(eid) == "queued"

    accepted = ok(relatectl("queue", "delete", str(eid), input="y\n"))
    assert accepted.stdout.endswith("deleted 1 message(s)\n")
    assert mail.email(eid) is None
    assert mail.recipients(eid) == {}
    assert mail.inbox(ALICE) == []


def test_delete_with_yes_does_not_ask(relatectl: Invoke, mail: Db) -> None:
    """`queue delete --yes` deletes at once; an id that does not exist is an error naming it (exit 1), and
    the others are deleted all the same."""
    a = mail.queue(["carol@remote.test"])
    b = mail.queue(["dave@remote.test"])
    result = relatectl("queue", "delete", "--yes", str(a), "9999")
    assert result.exit_code == 1
    assert result.stdout == "deleted 1 message(s)\n"
    assert result.stderr == "error: no queued message 9999\n"
    assert listed_ids(relatectl) == [b]


def test_delete_from_stdin_needs_yes(relatectl: Invoke, mail: Db) -> None:
    """Ids read from standard input cannot answer the question, so --yes is required."""
    eid = mail.queue(["carol@remote.test"])
    assert one_error(relatectl("queue", "delete", "-", input=f"{eid}\n")) == (
        "error: reading ids from standard input: add --yes to confirm the deletion"
    )
    assert mail.status(eid) == "queued"


# --- what an action leaves alone is an error naming the id ----------------------------------------


def test_unknown_ids_are_errors_naming_each(relatectl: Invoke, mail: Db) -> None:
    """Every action verb names an id that is not in the queue, exits 1, and acts on nothing else."""
    eid = mail.queue(["carol@remote.test"])
    for verb in ("hold", "release", "retry", "fail"):
        assert one_error(relatectl("queue", verb, "9999")) == "error: no queued message 9999"
    assert one_error(relatectl("queue", "delete", "--yes", "9998")) == "error: no queued message 9998"
    assert mail.status(eid) == "queued"


def test_retry_of_a_held_message_says_so_and_leaves_it_held(relatectl: Invoke, mail: Db) -> None:
    """`queue retry` of a held message is an error that says to release it; the message stays held and its
    recipients are not made due. `--all` and `flush` pass held mail by without an error."""
    held = mail.queue(["carol@remote.test"])
    mail.deferred(held, minutes=45)
    waiting = mail.queue(["dave@remote.test"])
    mail.deferred(waiting, minutes=45)
    ok(relatectl("queue", "hold", str(held)))
    later = next_tries(mail, held)
    assert one_error(relatectl("queue", "retry", str(held))) == (
        f"error: message {held} is held: release it first (relatectl queue release {held})"
    )
    assert mail.status(held) == "held"
    assert next_tries(mail, held) == later
    assert ok(relatectl("queue", "flush")).stdout == "1 message(s) due now\n"
    assert next_tries(mail, held) == later


def test_action_results_as_json(relatectl: Invoke, mail: Db) -> None:
    """`--json` prints one result per id asked for (an error for each one left alone) and exits 1 if any."""
    a = mail.queue(["carol@remote.test"])
    b = mail.queue(["dave@remote.test"])
    ok(relatectl("queue", "hold", str(b)))
    result = relatectl("queue", "hold", "--json", str(a), str(b), "9999")
    assert result.exit_code == 1
    assert json.loads(result.stdout) == [
        {"id": a, "result": "held"},
        {"id": b, "result": "error", "error": f"message {b} is already held"},
        {"id": 9999, "result": "error", "error": "no queued message 9999"},
    ]
    listing = ok(relatectl("queue", "list", "--json", "--status", "held")).stdout
    assert as_json(relatectl("queue", "release", "--json", "-", input=listing)) == [
        {"id": a, "result": "released"},
        {"id": b, "result": "released"},
    ]


def test_status_deferred_lists_mail_tried_and_waiting(relatectl: Invoke, mail: Db) -> None:
    """`--status deferred` (Postfix's word) lists waiting mail with a recipient tried and due again."""
    tried = mail.queue(["carol@remote.test"])
    mail.deferred(tried)
    mail.queue(["dave@remote.test"])  # never tried
    assert listed_ids(relatectl, "--status", "deferred") == [tried]


def test_list_says_how_many_more_past_the_limit(relatectl: Invoke, mail: Db) -> None:
    """`queue list` shows at most --limit rows (the oldest) and says how many more there are."""
    ids = [mail.queue([f"user{i}@remote.test"]) for i in range(5)]
    table = ok(relatectl("queue", "list", "--limit", "3"))
    assert table.stdout.rstrip().endswith("2 more not shown (the oldest 3 are): use --limit 5 or filters")
    listed = relatectl("queue", "list", "--json", "--limit", "3")
    assert [row["id"] for row in as_json(listed)] == ids[:3]
    assert "2 more not shown" in listed.stderr
    assert "more not shown" not in ok(relatectl("queue", "list")).stdout


# --- ids on standard input -------------------------------------------------------------------------


def test_ids_on_stdin_as_plain_numbers(relatectl: Invoke, mail: Db) -> None:
    """`-` reads whitespace-separated ids from standard input, and may be mixed with ids on the command line."""
    ids = [mail.queue([f"user{i}@remote.test"]) for i in range(4)]
    out = ok(relatectl("queue", "hold", "-", input=f"{ids[0]}\n{ids[1]} {ids[1]}\t\n")).stdout
    assert out == f"held 2 message(s): {ids[0]}, {ids[1]}\n"
    assert ok(relatectl("queue", "release", str(ids[0]), "-", input=f"{ids[1]}")).stdout == "released 2 message(s)\n"
    assert ok(relatectl("queue", "delete", "--yes", "-", input=f"{ids[2]}\n")).stdout == "deleted 1 message(s)\n"
    assert listed_ids(relatectl) == [ids[0], ids[1], ids[3]]


def test_list_json_piped_back_into_delete(relatectl: Invoke, mail: Db) -> None:
    """`queue list --json --domain D | queue delete --yes -` deletes exactly the listed messages."""
    keep = mail.queue(["carol@remote.test"])
    drop = [mail.queue(["dave@other.test"]), mail.queue(["erin@other.test", "x@remote.test"])]
    listing = ok(relatectl("queue", "list", "--json", "--domain", "other.test")).stdout
    assert ok(relatectl("queue", "delete", "--yes", "-", input=listing)).stdout == "deleted 2 message(s)\n"
    assert listed_ids(relatectl) == [keep]
    assert all(mail.email(eid) is None for eid in drop)


def test_list_json_piped_back_into_hold_and_retry(relatectl: Invoke, mail: Db) -> None:
    """The JSON of `queue list` also feeds hold and retry (a plain JSON list of ids too)."""
    a = mail.queue(["carol@remote.test"])
    b = mail.queue(["dave@remote.test"])
    mail.deferred(a)
    mail.deferred(b)
    listing = ok(relatectl("queue", "list", "--json")).stdout
    assert ok(relatectl("queue", "retry", "-", input=listing)).stdout == "2 message(s) due now\n"
    assert ok(relatectl("queue", "hold", "-", input=json.dumps([b]))).stdout == f"held 1 message(s): {b}\n"
    assert mail.status(b) == "held"


def test_bad_ids_are_one_line_errors(relatectl: Invoke, mail: Db) -> None:
    """A non-id, on the command line or on standard input, fails with one line and changes nothing."""
    eid = mail.queue(["carol@remote.test"])
    assert one_error(relatectl("queue", "hold", "abc")) == "error: not a message id: 'abc'"
    assert one_error(relatectl("queue", "hold", str(eid), "12x")) == "error: not a message id: '12x'"
    assert one_error(relatectl("queue", "hold", "-", input=f"{eid} seven\n")) == (
        "error: standard input: not a message id: 'seven'"
    )
    assert one_error(relatectl("queue", "hold", "-", input='[{"identifier": 3}]')) == (
        "error: standard input: expected the JSON of `queue list --json` or a list of ids"
    )
    assert one_error(relatectl("queue", "hold", "-", input='["1"]')) == (
        "error: standard input: expected the JSON of `queue list --json` or a list of ids"
    )
    assert one_error(relatectl("queue", "hold", "-", input="")) == (
        "error: give message ids (or - to read them from standard input)"
    )
    assert one_error(relatectl("queue", "release")) == "error: give message ids (or - to read them from standard input)"
    assert one_error(relatectl("queue", "fail", "x1")) == "error: not a message id: 'x1'"
    assert one_error(relatectl("queue", "delete", "--yes", "1.5")) == "error: not a message id: '1.5'"
    assert mail.status(eid) == "queued"


# --- dkim and domain dns ------------------------------------------------------------------------------


def dns_rows(relatectl: Invoke) -> list[dict[str, str]]:
    rows: list[dict[str, str]] = as_json(relatectl("domain", "dns", "example.com", "--json"))
    return rows


def test_domain_dns_before_keygen_has_a_dkim_placeholder(relatectl: Invoke, mail: Db) -> None:
    """`domain dns` prints MX, SPF, a DKIM placeholder, DMARC, the autoconfig CNAME and the SRV records."""
    out = ok(relatectl("domain", "dns", "example.com")).stdout
    lines = [line.split() for line in out.splitlines()]
    assert all(parts[1:3] == ["3600", "IN"] for parts in lines), out
    records = [(parts[0], parts[3], " ".join(parts[4:])) for parts in lines]
    assert records == [
        ("example.com.", "MX", "10 mail.example.com."),
        ("example.com.", "TXT", '"v=spf1 mx -all"'),
        ("SELECTOR._domainkey.example.com.", "TXT", "(none yet)"),
        ("_dmarc.example.com.", "TXT", '"v=DMARC1; p=quarantine; rua=mailto:postmaster@example.com"'),
        ("autoconfig.example.com.", "CNAME", "mail.example.com."),
        ("_submissions._tcp.example.com.", "SRV", "0 1 465 mail.example.com."),
        ("_submission._tcp.example.com.", "SRV", "0 1 587 mail.example.com."),
        ("_imaps._tcp.example.com.", "SRV", "0 1 993 mail.example.com."),
        ("_pop3s._tcp.example.com.", "SRV", "0 1 995 mail.example.com."),
    ]
    (placeholder,) = [r for r in dns_rows(relatectl) if "_domainkey" in r["name"]]
    assert "relatectl dkim keygen example.com" in placeholder["why"]


def test_domain_dns_after_keygen_lists_the_dkim_record(relatectl: Invoke, mail: Db) -> None:
    """After `dkim keygen`, `domain dns` lists the key's TXT record, split in strings of at most 255 characters."""
    result = ok(relatectl("dkim", "keygen", "Example.COM", "--selector", "s1"))
    assert "publish this TXT record" in result.stderr
    (line,) = result.stdout.splitlines()
    name, kind, value = line.split(" ", 2)
    assert (name, kind) == ("s1._domainkey.example.com.", "TXT")
    strings = re.findall(r'"([^"]*)"', value)
    assert len(strings) >= 2  # a 2048-bit RSA key does not fit one string
    assert all(len(s) <= 255 for s in strings)
    record = "".join(strings)
    assert record.startswith("v=DKIM1; k=rsa; p=MII")

    rows = dns_rows(relatectl)
    assert [(r["name"], r["type"]) for r in rows] == [
        ("example.com.", "MX"),
        ("example.com.", "TXT"),
        ("s1._domainkey.example.com.", "TXT"),
        ("_dmarc.example.com.", "TXT"),
        ("autoconfig.example.com.", "CNAME"),
        ("_submissions._tcp.example.com.", "SRV"),
        ("_submission._tcp.example.com.", "SRV"),
        ("_imaps._tcp.example.com.", "SRV"),
        ("_pop3s._tcp.example.com.", "SRV"),
    ]
    assert all(set(r) == {"name", "type", "value", "why"} for r in rows)
    assert rows[2]["value"] == value
    table = ok(relatectl("domain", "dns", "example.com")).stdout
    assert re.search(r"^s1\._domainkey\.example\.com\.\s+3600\s+IN\s+TXT\s+" + re.escape(value) + "$", table, re.M)


def test_dkim_keygen_ed25519_json_and_rotation(relatectl: Invoke, mail: Db) -> None:
    """`dkim keygen --algorithm ed25519 --json` prints the record of a key that signs at once; a second keygen
    is pending (the first keeps signing) and `domain dns` lists both records; a selector in use is refused."""
    first = as_json(relatectl("dkim", "keygen", "example.com", "--algorithm", "ed25519", "--json"))
    assert first["algorithm"] == "ed25519-sha256"
    assert re.fullmatch(r"relate\d{8}\._domainkey\.example\.com\.", first["name"])
    assert re.fullmatch(r"v=DKIM1; k=ed25519; p=[A-Za-z0-9+/]{43}=", first["value"])
    assert first["type"] == "TXT"
    assert first["state"] == "active"

    again = as_json(relatectl("dkim", "keygen", "example.com", "--json"))  # the same day: the next free selector
    assert again["name"] == first["name"].replace("._domainkey", "b._domainkey")
    assert again["state"] == "pending"
    second = as_json(relatectl("dkim", "keygen", "example.com", "--algorithm", "ED25519", "--selector", "k2", "--json"))
    assert second["name"] == "k2._domainkey.example.com."
    dkim_rows = [r for r in dns_rows(relatectl) if "_domainkey" in r["name"]]
    assert [r["name"] for r in dkim_rows] == [first["name"], again["name"], second["name"]]
    assert dkim_rows[2]["value"] == f'"{second["value"]}"'
    assert one_error(relatectl("dkim", "keygen", "example.com", "--selector", "k2")) == (
        "error: selector 'k2' is in use for example.com: pick another (see `relatectl dkim list`)"
    )


def test_dkim_list_activate_and_retire(relatectl: Invoke, mail: Db) -> None:
    """`dkim list` shows each key's state; `activate` refuses a key whose record DNS does not show (unless
    --force); the signing key cannot be retired, a previous one can."""
    ok(relatectl("dkim", "keygen", "example.com", "--selector", "one"))
    ok(relatectl("dkim", "keygen", "example.com", "--selector", "two"))
    states = {k["selector"]: k["state"] for k in as_json(relatectl("dkim", "list", "--json"))}
    assert states == {"one": "active", "two": "pending"}
    line = one_error(relatectl("dkim", "activate", "example.com", "two"))
    assert line.startswith("error: cannot look up two._domainkey.example.com now")  # the resolver: a dead port
    assert ok(relatectl("dkim", "activate", "example.com", "two", "--force")).stdout == (
        "two signs example.com's mail from now on\n"
    )
    states = {k["selector"]: k["state"] for k in as_json(relatectl("dkim", "list", "--json"))}
    assert states == {"one": "previous", "two": "active"}
    assert one_error(relatectl("dkim", "retire", "example.com", "two")) == (
        "error: 'two' signs example.com's mail: make another key and let it take over first"
    )
    assert ok(relatectl("dkim", "retire", "example.com", "one")).stdout == (
        "retired one; remove one._domainkey.example.com. TXT from DNS\n"
    )
    assert one_error(relatectl("dkim", "retire", "example.com", "one")) == (
        "error: no DKIM key 'one' for example.com (see `relatectl dkim list`)"
    )
    assert [k["selector"] for k in as_json(relatectl("dkim", "list", "--json"))] == ["two"]


def test_dkim_keygen_and_domain_dns_for_an_unhosted_domain(relatectl: Invoke, mail: Db) -> None:
    """`dkim keygen` and `domain dns` for a domain not hosted here fail with one line."""
    assert one_error(relatectl("dkim", "keygen", "example.net")) == "error: domain example.net is not hosted here"
    assert one_error(relatectl("domain", "dns", "example.net")) == "error: domain example.net is not hosted here"


def test_dkim_keygen_unknown_algorithm_is_one_line(relatectl: Invoke, mail: Db) -> None:
    """`dkim keygen --algorithm dsa` fails with one line naming the algorithms, and makes no key."""
    assert one_error(relatectl("dkim", "keygen", "example.com", "--algorithm", "dsa")) == (
        "error: unknown DKIM key type 'dsa': rsa or ed25519"
    )
    assert mail.fetch("SELECT count(*) AS n FROM dkim_keys")[0]["n"] == 0
