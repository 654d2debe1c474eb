"""Running a compiled Sieve script over one message for one recipient: the actions it asks for.

Policy (RFC 5228 §2.10 and the extension RFCs):

- The result is a list of actions. Without any action that cancels it
  (``fileinto`` and ``redirect`` without ``:copy``, ``discard``, ``reject``,
  ``ereject``), the implicit keep files the message into INBOX with the
  flags of imap4flags' internal variable (RFC 5232 §3).
- Conflicts: ``keep`` and ``fileinto`` into one mailbox file it once (the
  flags of both together); a second ``redirect`` to an address already
  redirected to is dropped (RFC 5228 §2.10.3); ``reject``/``ereject`` with
  ``keep``, ``fileinto``, ``redirect``, ``vacation`` or another reject is a
  run-time error (RFC 5429 §2.1).
- Limits, each a configuration key (relate.config.SieveConfig): work units
  (``max_steps``: a command or test is one unit, a comparison one plus one
  per KiB of the value compared), actions (``max_actions``) and redirects
  (``max_redirects``) per message; the body test reads at most
  ``max_body_bytes`` of the body; a variable holds at most
  ``MAX_VARIABLE_CHARS`` characters (RFC 5229 §3 lets an implementation cut
  it; 4000 at least) and an expanded string at most ``MAX_STRING_CHARS``.
- A run-time error (a limit reached, a conflict, a bad header name for
  editheader, the duplicate store failing) discards every action the script
  took: the result is the implicit keep alone, and ``error`` says why, for
  the delivery to show the user (RFC 5228 §2.10.6).
- ``duplicate`` (RFC 7352) asks the caller whether an id was seen (an async
  callback, the delivery's store); the ids are to be remembered by the
  caller only when the run succeeds (``Result.track``).
- ``vacation`` (RFC 5230, RFC 6131) is an action record here; the reply,
  its once-per-sender memory and the never-reply rules are the caller's.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import email.utils
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone

from relate.mail import headers
from relate.sieve import match
from relate.sieve.errors import SieveRuntimeError
from relate.sieve.grammar import Node, Script, Value
from relate.sieve.message import Envelope, Message, valid_field_name

MAX_VARIABLE_CHARS = 4000
MAX_STRING_CHARS = 64 * 1024
OFF_LOOP_BODY = 64 * 1024  # a body test over more bytes of body decodes them in a worker thread
# RFC 5293 §6 (and Pigeonhole's default): fields a script may neither add nor delete.
PROTECTED_FIELDS = frozenset({"received", "auto-submitted"})
SUBADDRESS_SEPARATOR = "+"
VACATION_DAYS = (1, 7, 30)  # least, default and most :days (RFC 5230 §4.1 lets the site bound it)
VACATION_MIN_SECONDS = 0  # RFC 6131 §2: 0 means reply every time
DUPLICATE_SECONDS = (7 * 86400, 30 * 86400)  # default and most :seconds (RFC 7352 §3.1)


@dataclass(frozen=True)
class Limits:
    max_steps: int = 4_000
    max_actions: int = 32
    max_redirects: int = 4
    max_body_bytes: int = 1024 * 1024


# -- actions


@dataclass(frozen=True)
class Keep:
    flags: tuple[str, ...] = ()
    implicit: bool = False


@dataclass(frozen=True)
class FileInto:
    mailbox: str
    flags: tuple[str, ...] = ()
    create: bool = False


@dataclass(frozen=True)
class Redirect:
    address: str
    copy: bool = False


@dataclass(frozen=True)
class Reject:
    reason: str
    extended: bool  # ereject (RFC 5429 §2.1): at SMTP time if it can be


@dataclass(frozen=True)
class Discard:
    pass


@dataclass(frozen=True)
class Vacation:
    reason: str
    seconds: int  # from :days (x 86400) or :seconds
    subject: str | None = None
    from_: str | None = None
    addresses: tuple[str, ...] = ()
    mime: bool = False
    handle: str = ""


Action = Keep | FileInto | Redirect | Reject | Discard | Vacation


@dataclass
class Result:
    actions: list[Action] = field(default_factory=list)
    message: bytes | None = None  # the edited message (editheader), None when unchanged
    error: str | None = None  # why the run failed (then actions is the implicit keep alone)
    track: list[tuple[str, str, int]] = field(default_factory=list)  # duplicate ids: (handle, id, seconds)
    steps: int = 0

    @property
    def mailboxes(self) -> list[tuple[str, tuple[str, ...], bool]]:
        """(mailbox, flags, create) for each copy to file, INBOX for keep."""
        out: list[tuple[str, tuple[str, ...], bool]] = []
        for a in self.actions:
            if isinstance(a, Keep):
                out.append(("INBOX", a.flags, False))
            elif isinstance(a, FileInto):
                out.append((a.mailbox, a.flags, a.create))
        return out


Duplicate = Callable[[str, str], Awaitable[bool]]  # (handle, id) -> seen before (and not expired)
MailboxExists = Callable[[str], Awaitable[bool]]


class _Stop(Exception):
    pass


async def run(
    script: Script,
    raw: bytes,
    envelope: Envelope,
    *,
    limits: Limits | None = None,
    now: datetime | None = None,
    duplicate: Duplicate | None = None,
    mailbox_exists: MailboxExists | None = None,
) -> Result:
    """Run ``script`` over ``raw`` for ``envelope``'s recipient; never raises for the script's sake."""
    state = _Run(script, Message.parse(raw), envelope, limits or Limits(), now, duplicate, mailbox_exists)
    try:
        with contextlib.suppress(_Stop):
            await state.block(script.commands)
        result = state.finish()
    except SieveRuntimeError as exc:
        return Result([Keep(implicit=True)], error=str(exc), steps=state.steps)
    return result


def _is_inbox(name: str) -> bool:
    return name.upper() == "INBOX"


class _Run:
    def __init__(
        self,
        script: Script,
        message: Message,
        envelope: Envelope,
        limits: Limits,
        now: datetime | None,
        duplicate: Duplicate | None,
        mailbox_exists: MailboxExists | None,
    ) -> None:
        self.script = script
        self.message = message
        self.envelope = envelope
        self.limits = limits
        self.now = now
        self.duplicate_seen = duplicate
        self.mailbox_exists = mailbox_exists
        self.expand_variables = "variables" in script.extensions
        self.variables: dict[str, str] = {}
        self.match_vars: list[str] = []
        self.flags: list[str] = []  # RFC 5232's internal variable
        self.actions: list[Action] = []
        self.cancelled = False  # the implicit keep
        self.track: list[tuple[str, str, int]] = []
        self.steps = 0

    # -- bookkeeping

    def step(self, units: int = 1) -> None:
        self.steps += units
        if self.steps > self.limits.max_steps:
            raise SieveRuntimeError(f"the script ran past {self.limits.max_steps} steps (sieve.max_steps)")

    def act(self, action: Action, node: Node) -> None:
        rejects = [a for a in self.actions if isinstance(a, Reject)]
        if isinstance(action, Reject):
            clash = [a for a in self.actions if not isinstance(a, Discard)]
            if clash:
                raise self.error(node, f'"{node.name}" cannot be used with an earlier "{_name(clash[0])}"')
        elif rejects and not isinstance(action, Discard):
            which = "ereject" if rejects[0].extended else "reject"
            raise self.error(node, f'"{node.name}" cannot be used with "{which}"')
        if isinstance(action, Vacation) and any(isinstance(a, Vacation) for a in self.actions):
            raise self.error(node, 'a second "vacation"')
        if isinstance(action, Redirect):
            target = action.address.lower()
            if any(isinstance(a, Redirect) and a.address.lower() == target for a in self.actions):
                if not action.copy:
                    self.cancelled = True
                return
            if sum(isinstance(a, Redirect) for a in self.actions) >= self.limits.max_redirects:
                raise self.error(node, f"more than {self.limits.max_redirects} redirects (sieve.max_redirects)")
        if isinstance(action, (Keep, FileInto)):
            name = "INBOX" if isinstance(action, Keep) else action.mailbox
            for i, a in enumerate(self.actions):
                other = "INBOX" if isinstance(a, Keep) else a.mailbox if isinstance(a, FileInto) else None
                if other is not None and (other == name or (_is_inbox(other) and _is_inbox(name))):
                    assert isinstance(a, (Keep, FileInto))
                    merged = tuple(dict.fromkeys([*a.flags, *action.flags]))
                    self.actions[i] = dataclasses.replace(a, flags=merged)
                    return
        if len(self.actions) >= self.limits.max_actions:
            raise self.error(node, f"more than {self.limits.max_actions} actions (sieve.max_actions)")
        self.actions.append(action)

    def error(self, node: Node, message: str) -> SieveRuntimeError:
        return SieveRuntimeError(f"line {node.line}: {message}")

    def finish(self) -> Result:
        actions = list(self.actions)
        if not self.cancelled and not any(isinstance(a, Keep) for a in actions):
            inbox = next((i for i, a in enumerate(actions) if isinstance(a, FileInto) and _is_inbox(a.mailbox)), None)
            if inbox is None:
                actions.append(Keep(tuple(self.flags), implicit=True))
        edited = self.message.to_bytes() if self.message.edited else None
        return Result(actions, edited, None, self.track, self.steps)

    # -- strings

    def expand(self, value: str) -> str:
        """RFC 5229 §3: ${name} and ${digit} replaced, in one pass; anything else left as written."""
        if not self.expand_variables or "${" not in value:
            return value
        out: list[str] = []
        pos = 0
        size = 0
        while True:
            start = value.find("${", pos)
            if start < 0:
                out.append(value[pos:])
                break
            end = value.find("}", start + 2)
            if end < 0:
                out.append(value[pos:])
                break
            name = value[start + 2 : end]
            replacement = self.lookup(name)
            if replacement is None:  # not a variable reference: the "${" stays, scanning goes on after it
                out.append(value[pos : start + 2])
                pos = start + 2
                continue
            out.append(value[pos:start])
            out.append(replacement)
            size += len(replacement) + start - pos
            if size > MAX_STRING_CHARS:
                break
            pos = end + 1
        return "".join(out)[:MAX_STRING_CHARS]

    def lookup(self, name: str) -> str | None:
        if name.isdigit() and name.isascii():
            index = int(name)
            return self.match_vars[index] if index < len(self.match_vars) else ""
        key = name.lower()
        if not key or not (key[0].isalpha() or key[0] == "_") or not key.replace("_", "a").replace(".", "a").isalnum():
            return None
        if not key.isascii():
            return None
        return self.variables.get(key, "")

    def string(self, value: Value) -> str:
        assert isinstance(value, str)
        return self.expand(value)

    def strings(self, value: Value) -> list[str]:
        if isinstance(value, str):
            return [self.expand(value)]
        assert isinstance(value, tuple)
        return [self.expand(v) for v in value]

    # -- commands (RFC 5228 §3, §4 and the extensions)

    async def block(self, commands: tuple[Node, ...]) -> None:
        taken = False  # whether the if/elsif chain being walked has run a branch
        for node in commands:
            self.step()
            name = node.name
            if name == "if":
                taken = await self.test(node.tests[0])
                if taken:
                    await self.block(node.block or ())
            elif name == "elsif":
                if not taken:
                    taken = await self.test(node.tests[0])
                    if taken:
                        await self.block(node.block or ())
            elif name == "else":
                if not taken:
                    await self.block(node.block or ())
            else:
                await self.command(node)

    async def command(self, node: Node) -> None:
        name, args, tags = node.name, node.args, node.tags
        if name == "stop":
            raise _Stop
        if name == "keep":
            self.act(Keep(self.flag_tag(node)), node)
        elif name == "discard":
            self.cancelled = True
            self.act(Discard(), node)
        elif name == "fileinto":
            mailbox = self.string(args[0])
            if not mailbox or len(mailbox) > 1000:
                raise self.error(node, "fileinto: an empty or too long mailbox name")
            self.act(FileInto(mailbox, self.flag_tag(node), bool(tags.get("create"))), node)
            if not tags.get("copy"):
                self.cancelled = True
        elif name == "redirect":
            address = self.string(args[0]).strip()
            if "@" not in address or len(address) > 320 or any(c in address for c in " \t\r\n<>,"):
                raise self.error(node, f'redirect: "{address[:100]}" is not an address')
            self.act(Redirect(address, bool(tags.get("copy"))), node)
            if not tags.get("copy"):
                self.cancelled = True
        elif name in ("reject", "ereject"):
            self.act(Reject(self.string(args[0]), name == "ereject"), node)
            self.cancelled = True
        elif name in ("setflag", "addflag", "removeflag"):
            self.flag_command(node)
        elif name == "set":
            self.set(node)
        elif name == "vacation":
            self.vacation(node)
        elif name == "addheader":
            field_name, value = self.string(args[0]), self.string(args[1])
            if not field_name or not valid_field_name(field_name) or len(field_name) > 200:
                raise self.error(node, f'addheader: "{field_name[:100]}" is not a field name')
            if field_name.lower() not in PROTECTED_FIELDS:
                self.message.add(field_name, value[: MAX_VARIABLE_CHARS * 4], last=bool(tags.get("last")))
        elif name == "deleteheader":
            self.delete_header(node)
        else:  # pragma: no cover - the grammar knows no other command
            raise self.error(node, f'"{name}" cannot run')

    def flag_tag(self, node: Node) -> tuple[str, ...]:
        given = node.tags.get("flags")
        if given is None:
            return tuple(self.flags)
        return tuple(_flag_list(self.strings(given)))

    def flag_command(self, node: Node) -> None:
        """RFC 5232 §5: setflag/addflag/removeflag, on a variable or the internal one."""
        if len(node.args) == 2:
            variable = self.string(node.args[0]).lower()
            current = _flag_list([self.variables.get(variable, "")])
        else:
            variable = None
            current = list(self.flags)
        given = _flag_list(self.strings(node.args[-1]))
        if node.name == "setflag":
            new = given
        elif node.name == "addflag":
            new = _flag_list([*current, *given])
        else:
            gone = {f.lower() for f in given}
            new = [f for f in current if f.lower() not in gone]
        if variable is None:
            self.flags = new
        else:
            self.variables[variable] = " ".join(new)[:MAX_VARIABLE_CHARS]

    def set(self, node: Node) -> None:
        """RFC 5229 §4: modifiers applied by precedence (lower/upper, then *first, quotewildcard, length)."""
        name = str(node.args[0]).lower()  # a name, not expanded (RFC 5229 §4)
        value = self.string(node.args[1])
        tags = node.tags
        if tags.get("lower"):
            value = value.lower()
        if tags.get("upper"):
            value = value.upper()
        if tags.get("lowerfirst"):
            value = value[:1].lower() + value[1:]
        if tags.get("upperfirst"):
            value = value[:1].upper() + value[1:]
        if tags.get("quotewildcard"):
            value = match.quote_wildcards(value)
        if tags.get("length"):
            value = str(len(value))
        self.variables[name] = value[:MAX_VARIABLE_CHARS]

    def vacation(self, node: Node) -> None:
        tags = node.tags
        if "seconds" in tags:
            seconds = max(VACATION_MIN_SECONDS, min(_int(tags["seconds"]), VACATION_DAYS[2] * 86400))
        else:
            days = _int(tags.get("days", VACATION_DAYS[1]))
            seconds = max(VACATION_DAYS[0], min(days, VACATION_DAYS[2])) * 86400
        reason = self.string(node.args[0])
        subject = self.string(tags["subject"]) if "subject" in tags else None
        sender = self.string(tags["from"]) if "from" in tags else None
        extra = tuple(self.strings(tags["addresses"])) if "addresses" in tags else ()
        # RFC 5230 §4.2: the default handle is made of the arguments, so a changed reply goes out anew.
        handle = self.string(tags["handle"]) if "handle" in tags else f"{reason}\x00{subject or ''}\x00{sender or ''}"
        self.act(Vacation(reason, seconds, subject, sender, extra, bool(tags.get("mime")), handle), node)

    def delete_header(self, node: Node) -> None:
        """RFC 5293 §5: deleteheader [:index n [:last]] [COMPARATOR] [MATCH-TYPE] field [value-patterns]."""
        field_name = self.string(node.args[0])
        if not valid_field_name(field_name):
            raise self.error(node, f'deleteheader: "{field_name[:100]}" is not a field name')
        if field_name.lower() in PROTECTED_FIELDS:
            return
        fields = self.message.named(field_name)
        fields = _indexed(fields, node)
        if len(node.args) == 2:
            keys = self.strings(node.args[1])
            doomed = [f for f in fields if self.compare(node, [f.value], keys)]
        else:
            doomed = list(fields)
        self.message.delete(doomed)

    # -- tests (RFC 5228 §5 and the extensions)

    async def test(self, node: Node) -> bool:
        self.step()
        name, args = node.name, node.args
        if name == "true":
            return True
        if name == "false":
            return False
        if name == "not":
            return not await self.test(node.tests[0])
        if name == "allof":
            for t in node.tests:
                if not await self.test(t):
                    return False
            return True
        if name == "anyof":
            for t in node.tests:
                if await self.test(t):
                    return True
            return False
        if name == "exists":
            return all(self.message.named(h) for h in self.strings(args[0]))
        if name == "size":
            limit = args[0]
            assert isinstance(limit, int)
            return self.message.size > limit if node.tags.get("over") else self.message.size < limit
        if name == "header":
            values = [v for h in self.strings(args[0]) for v in self.header_values(h, node)]
            return self.compare(node, values, self.strings(args[1]))
        if name == "address":
            found: list[str | None] = []
            for h in self.strings(args[0]):
                for f in _indexed(self.message.named(h), node):
                    found.extend(_part(a, node.part) for a in f.addresses)
            return self.compare(node, _present(found), self.strings(args[1]))
        if name == "envelope":
            parts: list[str | None] = []
            for part in self.strings(args[0]):
                key = part.lower()
                if key == "from":
                    parts.append(_part(self.envelope.mail_from, node.part))
                elif key == "to":
                    parts.append(_part(self.envelope.rcpt_to, node.part))
                elif key == "auth" and self.envelope.auth is not None:
                    parts.append(_part(self.envelope.auth, node.part))
            return self.compare(node, _present(parts), self.strings(args[1]))
        if name == "hasflag":
            if len(args) == 2:
                flags = _flag_list([self.variables.get(v.lower(), "") for v in self.strings(args[0])])
            else:
                flags = list(self.flags)
            return self.compare(node, flags, self.strings(args[-1]))
        if name == "string":
            return self.compare(node, self.strings(args[0]), self.strings(args[1]), count_empty=False)
        if name == "body":
            transform = "raw" if node.tags.get("raw") else "content" if "content" in node.tags else "text"
            types = tuple(self.strings(node.tags["content"])) if transform == "content" else ()
            cap = self.limits.max_body_bytes
            if min(self.message.size - self.message.body_offset, cap) > OFF_LOOP_BODY:  # parsing takes a while
                texts = await asyncio.to_thread(self.message.body_texts, transform, types, cap)
            else:
                texts = self.message.body_texts(transform, types, cap)
            self.step(sum(len(t) for t in texts) // 1024)
            return self.compare(node, texts, self.strings(args[0]))
        if name == "date":
            return self.date_test(node)
        if name == "currentdate":
            zone = self.zone(node)
            now = (self.now or datetime.now(UTC)).astimezone(zone)
            part = self.string(args[0]).lower()
            return self.compare(node, [_date_part(now, part)], self.strings(args[1]))
        if name == "mailboxexists":
            if self.mailbox_exists is None:
                return False
            for box in self.strings(args[0]):
                if not await self.mailbox_exists(box):
                    return False
            return True
        if name == "duplicate":
            return await self.duplicate(node)
        raise self.error(node, f'"{name}" cannot run')  # pragma: no cover - the grammar knows no other test

    def header_values(self, name: str, node: Node) -> list[str]:
        return [f.value for f in _indexed(self.message.named(name), node)]

    def zone(self, node: Node) -> timezone:
        given = node.tags.get("zone")
        if isinstance(given, str):
            parsed = _zone(self.string(given))
            if parsed is not None:
                return parsed
        local = datetime.now().astimezone().tzinfo
        return local if isinstance(local, timezone) else UTC

    def date_test(self, node: Node) -> bool:
        """RFC 5260 §4: date [:zone z | :originalzone] header date-part keys."""
        header, part = self.string(node.args[0]), self.string(node.args[1]).lower()
        keys = self.strings(node.args[2])
        values: list[str] = []
        for raw in self.header_values(header, node):
            if header.lower() == "received":  # the date is after the last ";" (RFC 5321 §4.4)
                raw = raw.rpartition(";")[2]
            when = headers.parse_date(raw.strip())
            if when is None:
                continue
            if not node.tags.get("originalzone"):
                when = when.astimezone(self.zone(node))
            values.append(_date_part(when, part))
        return self.compare(node, values, keys)

    async def duplicate(self, node: Node) -> bool:
        """RFC 7352 §3: whether this message's id was seen before under the handle."""
        tags = node.tags
        if "uniqueid" in tags:
            value = self.string(tags["uniqueid"])
        else:
            found = self.message.values(self.string(tags["header"]) if "header" in tags else "message-id")
            if not found:
                return False
            value = found[0].strip()
        if not value:
            return False
        handle = self.string(tags["handle"]) if "handle" in tags else ""
        seconds = _int(tags.get("seconds", DUPLICATE_SECONDS[0]))
        seconds = max(0, min(seconds, DUPLICATE_SECONDS[1]))
        if self.duplicate_seen is None:
            seen = False
        else:
            try:
                seen = await self.duplicate_seen(handle, value)
            except Exception as exc:  # the store's failure is the run's, with its reason
                raise self.error(node, f"duplicate: the store failed ({type(exc).__name__})") from exc
        if not seen or tags.get("last"):
            self.track.append((handle, value, seconds))
        return seen

    # -- comparison (RFC 5228 §2.7, RFC 5231)

    def compare(self, node: Node, values: list[str], keys: list[str], *, count_empty: bool = True) -> bool:
        comparator, kind = node.comparator, node.match
        if kind == "count":
            counted = len(values) if count_empty else sum(1 for v in values if v)
            self.step()
            return any(match.relation(node.relation, match.order(comparator, str(counted), k)) for k in keys)
        for value in values:
            for key in keys:
                self.step(1 + len(value) // 1024)
                if kind == "is":
                    if match.order(comparator, value, key) == 0:
                        return True
                elif kind == "contains":
                    if match.contains(comparator, value, key):
                        return True
                elif kind == "value":
                    if match.relation(node.relation, match.order(comparator, value, key)):
                        return True
                else:
                    self.step(len(value) * max(1, key.count("?")) // 4096)
                    captures = match.matches(comparator, value, key)
                    if captures is not None:
                        if self.expand_variables:
                            self.match_vars = [value[:MAX_VARIABLE_CHARS]] + [c[:MAX_VARIABLE_CHARS] for c in captures]
                        return True
        return False


def _int(value: Value) -> int:
    assert isinstance(value, int)
    return value


def _name(action: Action) -> str:
    return {
        Keep: "keep",
        FileInto: "fileinto",
        Redirect: "redirect",
        Reject: "reject",
        Discard: "discard",
        Vacation: "vacation",
    }[type(action)]


def _present(values: list[str | None]) -> list[str]:
    return [v for v in values if v is not None]


def _flag_list(items: list[str]) -> list[str]:
    """RFC 5232 §3: space-separated flags, each once (case-insensitively), in the order first given."""
    out: dict[str, str] = {}
    for item in items:
        for flag in item.split():
            out.setdefault(flag.lower(), flag)
    return list(out.values())


def _indexed(items: list, node: Node) -> list:  # type: ignore[type-arg]
    """RFC 5260 §6: :index n (1-based; from the end with :last) keeps that one occurrence."""
    index = node.tags.get("index")
    if not isinstance(index, int) or isinstance(index, bool):
        return items
    if index < 1 or index > len(items):
        return []
    return [items[-index] if node.tags.get("last") else items[index - 1]]


def _part(address: str, part: str) -> str | None:
    """RFC 5228 §2.7.4 and RFC 5233 §4: the address part a test compares; None when there is none
    (:detail of an address without the separator)."""
    if part == "all":
        return address
    local, at, domain = address.rpartition("@")
    if not at:
        local, domain = address, ""
    if part == "localpart":
        return local
    if part == "domain":
        return domain
    user, separator, detail = local.partition(SUBADDRESS_SEPARATOR)
    if part == "user":
        return user
    return detail if separator else None


def _zone(text: str) -> timezone | None:
    """A "+hhmm" / "-hhmm" zone (RFC 5260 §4.1.1)."""
    if len(text) != 5 or text[0] not in "+-" or not text[1:].isdigit() or not text.isascii():
        return None
    hours, minutes = int(text[1:3]), int(text[3:5])
    if hours > 23 or minutes > 59:
        return None
    offset = timedelta(hours=hours, minutes=minutes)
    return timezone(-offset if text[0] == "-" else offset)


def _zone_text(when: datetime) -> str:
    offset = when.utcoffset() or timedelta(0)
    sign = "-" if offset < timedelta(0) else "+"
    minutes = abs(int(offset.total_seconds())) // 60
    return f"{sign}{minutes // 60:02d}{minutes % 60:02d}"


def _iso8601(when: datetime) -> str:
    zone = _zone_text(when)
    return f"{when.year:04d}-{when.strftime('%m-%dT%H:%M:%S')}{zone[:3]}:{zone[3:]}"


_MJD_EPOCH = datetime(1858, 11, 17).date()  # the Modified Julian Day's day 0
# RFC 5260 §4.2's date parts.
_DATE_PARTS: dict[str, Callable[[datetime], str]] = {
    "year": lambda w: f"{w.year:04d}",
    "month": lambda w: w.strftime("%m"),
    "day": lambda w: w.strftime("%d"),
    "date": lambda w: f"{w.year:04d}-{w.strftime('%m-%d')}",
    "julian": lambda w: str((w.date() - _MJD_EPOCH).days),
    "hour": lambda w: w.strftime("%H"),
    "minute": lambda w: w.strftime("%M"),
    "second": lambda w: w.strftime("%S"),
    "time": lambda w: w.strftime("%H:%M:%S"),
    "iso8601": _iso8601,
    "std11": email.utils.format_datetime,
    "zone": _zone_text,
    "weekday": lambda w: str((w.weekday() + 1) % 7),  # 0 is Sunday
}


def _date_part(when: datetime, part: str) -> str:
    found = _DATE_PARTS.get(part)
    return found(when) if found is not None else ""
