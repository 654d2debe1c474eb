"""Compose RFC 5322 messages from what a user wrote: headers, bodies, attachments (stdlib ``email``).

Policy:

- Structure (RFC 2046): a text body alone is ``text/plain``, an HTML body
  alone ``text/html``, both are ``multipart/alternative`` (text first, so
  the richest part comes last, §5.1.4). Inline parts with a Content-ID wrap
  the HTML in ``multipart/related`` (RFC 2387); other attachments wrap the
  whole in ``multipart/mixed``. Text parts are UTF-8; the ``email`` package
  picks 7bit, quoted-printable or base64 per part, so no line is over 998
  octets (RFC 5322 §2.1.1).
- Headers: non-ASCII display names and subjects become RFC 2047 encoded
  words. An address with a non-ASCII local part cannot be written that way,
  so such a message is composed with raw UTF-8 headers (RFC 6532), which
  the delivery daemon sends only to servers offering SMTPUTF8.
- Header text (the subject, display names, attachment filenames) is one
  line whatever it came from (a reply's subject is the original's, decoded):
  each line break or control character (C0, C1, DEL, U+2028, U+2029; tab
  aside) becomes a space and a lone surrogate U+FFFD. The REST API refuses
  such text where a user typed it (422).
- The subject and the address fields are written and folded here, not by
  the ``email`` package, whose folder can put a space of the text between
  two encoded words, where RFC 2047 §6.2 makes every reader drop it. Plain
  printable ASCII is folded before a space (RFC 5322 §2.2.3); anything else
  becomes B-encoded UTF-8 words of whole characters (§5), the text's own
  spaces inside them, one per line if need be, so the field always decodes
  to exactly the text (tests/unit/mail/test_compose.py checks it for any
  text). Display names are quoted strings, or encoded words the same way.
- ``Bcc`` is written only into copies that stay with the sender (the Sent
  and Drafts copies); what recipients get never names the Bcc recipients
  (RFC 5322 §3.6.3, the first of its three ways).
- Threading: a reply's ``In-Reply-To`` is the original's Message-Id and its
  ``References`` the original's References plus that Message-Id (RFC 5322
  §3.6.4), trimmed to the first and the last few ids when it grows long.
- Line endings are CRLF throughout, as stored and sent.
"""

from __future__ import annotations

import base64
import email.utils
import html
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email import policy
from email.headerregistry import Address
from email.message import EmailMessage

__all__ = [
    "Attachment",
    "Draft",
    "Person",
    "compose",
    "forward_subject",
    "header_text",
    "make_message_id",
    "quote_html",
    "quote_text",
    "references_for",
    "reply_subject",
]

# Keep the first id and the newest ones; mail clients need no more to thread.
_MAX_REFERENCES = 20
_MSG_ID = re.compile(r"^<[^<>\s@]+@[^<>\s@]+>$")
_REPLY_PREFIX = re.compile(r"^\s*(re|aw|sv|antw)\s*:", re.IGNORECASE)
_FORWARD_PREFIX = re.compile(r"^\s*(fwd?|wg|tr)\s*:", re.IGNORECASE)
# Never in a header (see the policy): what str.splitlines() breaks on, the other controls, and surrogates.
_NOT_IN_HEADER = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029]")
_SURROGATE = re.compile("[\ud800-\udfff]")


def header_text(value: str) -> str:
    """``value`` as text for one header line: line breaks and controls become spaces, lone surrogates U+FFFD."""
    return _SURROGATE.sub("\ufffd", _NOT_IN_HEADER.sub(" ", value))


# Lines are folded to at most this many characters where the text allows (RFC 5322 §2.1.1 "SHOULD 78").
_LINE = 78
# UTF-8 bytes per encoded word: 39 bytes are 52 base64 characters, 64 with "=?utf-8?b?" and "?=", so a word
# fits the 75 of RFC 2047 §2 and, after "Subject: " or a continuation space, a line of 76.
_WORD_BYTES = 39
# A display name that is atoms separated by single spaces (RFC 5322 §3.2.3) is written unquoted.
_ATOMS = re.compile(r"[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~]+(?: [A-Za-z0-9!#$%&'*+\-/=?^_`{|}~]+)*")


def _encoded_words(text: str) -> list[str]:
    """``text`` as B-encoded UTF-8 words (RFC 2047), each holding whole characters (§5)."""
    chunks: list[bytes] = []
    chunk = b""
    for ch in text:
        data = ch.encode("utf-8")
        if chunk and len(chunk) + len(data) > _WORD_BYTES:
            chunks.append(chunk)
            chunk = b""
        chunk += data
    chunks.append(chunk)
    return [f"=?utf-8?b?{base64.b64encode(c).decode('ascii')}?=" for c in chunks]


def _plain(text: str) -> bool:
    """Whether ``text`` can be written as it is: printable ASCII that no reader would take for an encoded word."""
    return all(" " <= ch <= "~" for ch in text) and "=?" not in text


def _fold(name: str, tokens: list[str]) -> str:
    """``tokens`` joined by single spaces, a line break put before a token where the line would pass 78."""
    lines: list[str] = []
    line = ""
    width = len(name) + 2  # "Name: "
    for token in tokens:
        if line and width + len(line) + 1 + len(token) > _LINE:
            lines.append(line)
            line, width = token, 1  # a continuation line starts with the space
        else:
            line = f"{line} {token}" if line else token
    lines.append(line)
    return "\r\n ".join(lines)


def _unstructured(name: str, text: str) -> str:
    """The value of an unstructured field (RFC 5322 §3.2.5) that reads back as ``text`` exactly."""
    if _plain(text):
        # Fold before a space that starts a word: unfolding removes only the CRLF, so the text comes back.
        words = text.split(" ")
        tokens = [words[0]]
        for word in words[1:]:
            if word and tokens[-1]:
                tokens.append(word)
            else:
                tokens[-1] += " " + word  # runs of spaces stay on one line (no line of only spaces)
        folded = _fold(name, tokens)
        if all(len(line) <= _LINE for line in (name + ": " + folded).split("\r\n")):
            return folded
    return _fold(name, _encoded_words(text))


def _mailbox(person: Person) -> list[str]:
    """One address as tokens of an address field: the display name (quoted or encoded), then <addr-spec>."""
    local, _, domain = person.email.rpartition("@")
    spec = str(Address(username=local, domain=domain))  # quotes a local part that needs it
    name = header_text(person.name or "")
    if not name.strip():
        return [spec]
    if _plain(name) and _ATOMS.fullmatch(name):
        return [name, f"<{spec}>"]
    if _plain(name) and len(name) <= 60:
        quoted = name.replace("\\", "\\\\").replace('"', '\\"')
        return [f'"{quoted}"', f"<{spec}>"]
    return [*_encoded_words(name), f"<{spec}>"]


def _addresses(name: str, people: Sequence[Person]) -> str:
    """The value of an address field (RFC 5322 §3.4), folded between names, words and addresses."""
    tokens: list[str] = []
    for i, person in enumerate(people):
        if i:
            tokens[-1] += ","
        tokens += _mailbox(person)
    return _fold(name, tokens)


@dataclass(frozen=True)
class Person:
    email: str  # local@domain, already checked
    name: str | None = None


@dataclass(frozen=True)
class Attachment:
    filename: str
    content_type: str  # type/subtype
    data: bytes
    content_id: str | None = None  # without angle brackets
    inline: bool = False


@dataclass
class Draft:
    """Everything a composed message is made of."""

    sender: Person
    to: list[Person] = field(default_factory=list)
    cc: list[Person] = field(default_factory=list)
    bcc: list[Person] = field(default_factory=list)
    subject: str = ""
    text_body: str | None = None
    html_body: str | None = None
    attachments: list[Attachment] = field(default_factory=list)
    message_id: str | None = None
    in_reply_to: str | None = None
    references: list[str] = field(default_factory=list)
    date: datetime | None = None


def is_message_id(value: str) -> bool:
    """``<left@right>`` as RFC 5322 §3.6.4 msg-id (no white space or brackets inside)."""
    return bool(_MSG_ID.match(value)) and len(value) <= 998


def make_message_id(domain: str) -> str:
    """A new globally unique Message-Id at ``domain`` (RFC 5322 §3.6.4)."""
    return email.utils.make_msgid(domain=domain)


def _needs_utf8(draft: Draft) -> bool:
    people = [draft.sender, *draft.to, *draft.cc, *draft.bcc]
    return any(not p.email.isascii() for p in people)


# Bodies are 7-bit clean (quoted-printable or base64 where needed): no 8BITMIME needed anywhere.
_BUILD = policy.default.clone(cte_type="7bit")


def _body(draft: Draft) -> EmailMessage:
    """The text, the HTML, or both as alternatives; inline parts related to the HTML."""
    msg = EmailMessage(policy=_BUILD)
    text, html_body = draft.text_body, draft.html_body
    inline = [a for a in draft.attachments if a.inline and a.content_id and html_body is not None]
    if html_body is None:
        msg.set_content(text or "", charset="utf-8")
        return msg
    if text is not None:
        msg.set_content(text, charset="utf-8")
        msg.add_alternative(html_body, subtype="html", charset="utf-8")
        parts = msg.get_payload()
        assert isinstance(parts, list)
        html_part = parts[-1]
        assert isinstance(html_part, EmailMessage)
    else:
        msg.set_content(html_body, subtype="html", charset="utf-8")
        html_part = msg
    for item in inline:
        maintype, _, subtype = item.content_type.partition("/")
        html_part.add_related(
            item.data,
            maintype,
            subtype,
            cid=f"<{item.content_id}>",
            filename=header_text(item.filename),
            disposition="inline",
        )
    return msg


def compose(draft: Draft, *, include_bcc: bool) -> bytes:
    """The message as bytes with CRLF line ends; ``include_bcc`` for the sender's own copies only."""
    msg = _body(draft)
    inline_ids = {id(a) for a in draft.attachments if a.inline and a.content_id and draft.html_body is not None}
    for item in draft.attachments:
        if id(item) in inline_ids:
            continue
        maintype, _, subtype = item.content_type.partition("/")
        msg.add_attachment(
            item.data,
            maintype,
            subtype,
            filename=header_text(item.filename),
            disposition="inline" if item.inline else "attachment",
            cid=f"<{item.content_id}>" if item.content_id else None,
        )
    # Headers go first in the conventional order, whatever the body parts set.
    body_headers = [(k, v) for k, v in msg.items()]
    for name in list(msg.keys()):
        del msg[name]
    # Written as they are (see the policy); the output policy below never refolds them.
    msg.set_raw("From", _addresses("From", [draft.sender]))
    for field_name, people in (("To", draft.to), ("Cc", draft.cc), ("Bcc", draft.bcc if include_bcc else [])):
        if people:
            msg.set_raw(field_name, _addresses(field_name, people))
    msg.set_raw("Subject", _unstructured("Subject", header_text(draft.subject)))
    msg["Date"] = email.utils.format_datetime(draft.date or datetime.now(UTC))
    if draft.message_id:
        msg["Message-ID"] = draft.message_id
    if draft.in_reply_to:
        msg["In-Reply-To"] = draft.in_reply_to
    if draft.references:
        msg["References"] = " ".join(draft.references)
    msg["MIME-Version"] = "1.0"
    for name, value in body_headers:
        if name.lower() != "mime-version":
            msg[name] = value
    for part in msg.walk():
        if part is not msg:
            del part["MIME-Version"]  # the email package repeats it on parts it wraps; only the top needs it
    chosen = policy.SMTPUTF8 if _needs_utf8(draft) else policy.SMTP
    return msg.as_bytes(policy=chosen.clone(max_line_length=_LINE, refold_source="none"))


# --- replies and forwards ---------------------------------------------------------


def reply_subject(subject: str | None) -> str:
    text = (subject or "").strip()
    return text if _REPLY_PREFIX.match(text) else f"Re: {text}".rstrip()


def forward_subject(subject: str | None) -> str:
    text = (subject or "").strip()
    return text if _FORWARD_PREFIX.match(text) else f"Fwd: {text}".rstrip()


def references_for(message_id: str | None, references: Sequence[str]) -> list[str]:
    """The References of a reply: the original's, then its Message-Id; at most ``_MAX_REFERENCES``."""
    chain = [r for r in references if is_message_id(r)]
    if message_id and is_message_id(message_id) and message_id not in chain:
        chain.append(message_id)
    if len(chain) > _MAX_REFERENCES:
        chain = chain[:1] + chain[-(_MAX_REFERENCES - 1) :]
    return chain


def _attribution(author: str | None, date: datetime | None) -> str:
    who = author or "someone"
    if date is None:
        return f"{who} wrote:"
    return f"On {email.utils.format_datetime(date)}, {who} wrote:"


def quote_text(text: str | None, author: str | None, date: datetime | None) -> str:
    """A reply's plain text: two empty lines to write in, the attribution, the original with ``> `` before each line."""
    lines = (text or "").replace("\r\n", "\n").rstrip("\n").split("\n")
    quoted = "\n".join(">" + ("" if line.startswith(">") or not line else " ") + line for line in lines)
    return f"\n\n{_attribution(author, date)}\n{quoted}\n"


def quote_html(safe_html: str, author: str | None, date: datetime | None) -> str:
    """A reply's HTML: the attribution and the (already sanitised) original in a cite blockquote."""
    return (
        f'<p></p><div>{html.escape(_attribution(author, date))}</div><blockquote type="cite">{safe_html}</blockquote>'
    )


def forward_header(fields: Sequence[tuple[str, str]]) -> str:
    """The block above a forwarded message's text: its From, Date, Subject, To, Cc."""
    lines = ["---------- Forwarded message ----------"]
    lines += [f"{name}: {value}" for name, value in fields if value]
    return "\n".join(lines)


def forward_text(text: str | None, fields: Sequence[tuple[str, str]]) -> str:
    return f"\n\n{forward_header(fields)}\n\n{(text or '').replace(chr(13) + chr(10), chr(10))}"


def forward_html(safe_html: str, fields: Sequence[tuple[str, str]]) -> str:
    head = "<br>".join(html.escape(line) for line in forward_header(fields).split("\n"))
    return f"<p></p><div>{head}</div><br>{safe_html}"
