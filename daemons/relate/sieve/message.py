"""The message a script looks at and may edit (RFC 5293): its header fields, envelope, size and body.

The header section is read once, in time linear in its size, into a list of
fields (at most ``MAX_SHOWN_FIELDS``; any after those stay in the message
untouched and unseen). Values are unfolded and their encoded words decoded
(RFC 2047, RFC 5228 §2.7.2) when a test first asks for a field, and kept.
editheader's changes go to that list, so later tests see them (RFC 5293 §4),
and :meth:`Message.to_bytes` writes the edited message: the fields as they
are now, then the rest of the message byte for byte.

The body (RFC 5173) is read from at most ``max_body_bytes`` of it, with the
standard library's MIME parser, only when a ``body`` test runs.
"""

from __future__ import annotations

import email
import email.policy
import email.utils
import re
from dataclasses import dataclass, field

from relate.mail import encoded_words, headers
from relate.mail.limits import MAX_FIELD_BYTES, MAX_SHOWN_FIELDS

_FIELD_NAME = re.compile(rb"([\x21-\x39\x3b-\x7e]+)[ \t]*:")
_NEXT_FIELD = re.compile(rb"\n(?![ \t])")
_NAME = re.compile(r"[\x21-\x39\x3b-\x7e]+\Z")


@dataclass
class Field:
    name: str  # as written
    raw: bytes  # the whole field, name to line end, with its CRLF
    _value: str | None = None
    _addresses: list[str] | None = None

    @property
    def key(self) -> str:
        return self.name.lower()

    @property
    def value(self) -> str:
        """Unfolded, encoded words decoded, surrounding white space removed."""
        if self._value is None:
            colon = self.raw.index(b":")
            text = headers.unfold(self.raw[colon + 1 : colon + 1 + MAX_FIELD_BYTES])
            self._value = encoded_words.decode(text)
        return self._value

    @property
    def addresses(self) -> list[str]:
        """The addr-specs of the value read as an address list (RFC 5322 §3.4), groups opened."""
        if self._addresses is None:
            self._addresses = addresses(self.value)
        return self._addresses


@dataclass(frozen=True)
class Envelope:
    mail_from: str  # "" for the null reverse-path
    rcpt_to: str  # the address this copy is delivered to
    auth: str | None = None


@dataclass
class Message:
    lead: bytes  # an mbox From_ line, if any
    fields: list[Field]
    rest: bytes  # fields past the limit, the empty line and the body, as they were
    size: int  # of the message as delivered, before any edit (RFC 5228 §5.9)
    body_offset: int  # where the body starts in the original
    original: bytes
    edited: bool = False
    _by_name: dict[str, list[Field]] | None = field(default=None, repr=False)

    @classmethod
    def parse(cls, raw: bytes) -> Message:
        section = headers.scan(raw, 0, len(raw))
        fields: list[Field] = []
        pos = section.first
        while pos < section.stop and len(fields) < MAX_SHOWN_FIELDS:
            match = _FIELD_NAME.match(raw, pos, section.stop)
            if match is None:
                break
            found = _NEXT_FIELD.search(raw, match.end(), section.stop)
            end = section.stop if found is None else found.start() + 1
            fields.append(Field(match.group(1).decode("ascii"), raw[pos:end]))
            pos = end
        return cls(raw[: section.first], fields, raw[pos:], len(raw), section.body, raw)

    def named(self, name: str) -> list[Field]:
        if self._by_name is None:
            index: dict[str, list[Field]] = {}
            for f in self.fields:
                index.setdefault(f.key, []).append(f)
            self._by_name = index
        return self._by_name.get(name.lower(), [])

    def values(self, name: str) -> list[str]:
        return [f.value for f in self.named(name)]

    # RFC 5293

    def add(self, name: str, value: str, *, last: bool) -> None:
        text = " ".join(value.replace("\r", " ").replace("\n", " ").split(" "))
        line = f"{name}: {text}\r\n".encode()
        f = Field(name, line)
        if last:
            self.fields.append(f)
        else:
            self.fields.insert(0, f)
        self._by_name = None
        self.edited = True

    def delete(self, doomed: list[Field]) -> None:
        if not doomed:
            return
        ids = {id(f) for f in doomed}
        self.fields = [f for f in self.fields if id(f) not in ids]
        self._by_name = None
        self.edited = True

    def to_bytes(self) -> bytes:
        if not self.edited:
            return self.original
        head = b"".join(f.raw if f.raw.endswith(b"\n") else f.raw + b"\r\n" for f in self.fields)
        rest = self.rest
        if not self.fields and rest[:2] not in (b"\r\n", b"\n"):
            rest = b"\r\n" + rest
        return self.lead + head + rest

    # RFC 5173

    def body_texts(self, transform: str, types: tuple[str, ...], limit: int) -> list[str]:
        """The body as the test sees it: ``raw`` (undecoded), ``content`` (the parts of ``types``,
        decoded) or ``text`` (the text/* parts, decoded); from the body's first ``limit`` bytes."""
        start = self.body_offset
        if transform == "raw":
            return [self.original[start : start + limit].decode("utf-8", "replace")]
        cut = self.original[: start + limit]
        try:
            parsed = email.message_from_bytes(cut, policy=email.policy.compat32)
            parts = list(parsed.walk())
        except (RecursionError, ValueError, LookupError, TypeError):  # a pathological structure
            return [self.original[start : start + limit].decode("utf-8", "replace")]
        out: list[str] = []
        for part in parts[:1000]:
            ctype = part.get_content_type().lower()
            if transform == "text":
                wanted = ctype.startswith("text/")
            else:
                wanted = any(_content_type_matches(ctype, t) for t in types)
            if not wanted or part.is_multipart():
                continue
            try:
                payload = part.get_payload(decode=True)
            except (ValueError, LookupError, TypeError):
                payload = None
            if not isinstance(payload, bytes):
                continue
            charset = part.get_content_charset() or "us-ascii"
            try:
                out.append(payload.decode(charset, "replace"))
            except LookupError:
                out.append(payload.decode("utf-8", "replace"))
        return out


def _content_type_matches(ctype: str, wanted: str) -> bool:
    """RFC 5173 §5.2: "" is every part, "type" every subtype of it, "type/subtype" that alone."""
    wanted = wanted.lower()
    if not wanted:
        return True
    return ctype == wanted if "/" in wanted else ctype.split("/", 1)[0] == wanted


def valid_field_name(name: str) -> bool:
    return bool(_NAME.match(name))


def addresses(value: str) -> list[str]:
    """The addr-specs of an address-list value (RFC 5322 §3.4), groups opened."""
    return [addr for _, addr in email.utils.getaddresses([value]) if addr]
