"""The string keys SORT compares (RFC 5256 §3, RFC 5957), derived once per message from its subject and ENVELOPE.

- SUBJECT: the base subject (``relate.mail.basesubject``).
- FROM, TO, CC: the addr-mailbox of the first address of that field in the
  ENVELOPE (RFC 5256: "[IMAP] addr-mailbox of the first ... address"); for a
  group (``To: team: a@x, b@y;``) that is the group name, as the ENVELOPE's
  group-start entry carries it. No address: the empty string.
- DISPLAYFROM, DISPLAYTO (RFC 5957 §2): the first address's display name,
  RFC 2047-decoded; without one, its addr-spec (``mailbox@host``), or the
  mailbox alone when there is no host (a group's name).

Every key is casemapped (i;ascii-casemap, see ``basesubject``) and cut: the
subject to ``MAX_SUBJECT_KEY`` characters, the others to ``MAX_ADDRESS_KEY``
(RFC 5321 §4.5.3.1.1's bound of a local part), so two messages compare by at
most that much of a key and all keys of a message fit in one index entry
(migration 0018's covering index: under PostgreSQL's 2704 octets even when
every character takes four). PostgreSQL orders them with the "C" collation.
The work is linear in the subject and the first address, each bounded by the
header limits of ``relate.mail.limits``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from relate.mail import encoded_words
from relate.mail.basesubject import base_subject, casemap

__all__ = ["MAX_ADDRESS_KEY", "MAX_SUBJECT_KEY", "SortKeys", "display_key", "mailbox_key", "sort_keys", "subject_key"]

# Characters of each key that are kept and compared. Real base subjects: under 100; display names under 40.
MAX_SUBJECT_KEY = 255
MAX_ADDRESS_KEY = 64


@dataclass(frozen=True, slots=True)
class SortKeys:
    subject: str
    from_: str
    to: str
    cc: str
    display_from: str
    display_to: str


def _first(addresses: Any) -> Sequence[Any] | None:
    """The first ENVELOPE address structure ``[name, adl, mailbox, host]`` of a field, or None."""
    if isinstance(addresses, list) and addresses and isinstance(addresses[0], list) and len(addresses[0]) == 4:
        return addresses[0]
    return None


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def mailbox_key(addresses: Any) -> str:
    """FROM, TO and CC: the addr-mailbox of the first address."""
    first = _first(addresses)
    return casemap(_text(first[2])[:MAX_ADDRESS_KEY]) if first is not None else ""


def display_key(addresses: Any) -> str:
    """DISPLAYFROM and DISPLAYTO: the first address's decoded display name, else its addr-spec."""
    first = _first(addresses)
    if first is None:
        return ""
    name = encoded_words.decode(_text(first[0]))  # linear, bounded by the field (limits.MAX_FIELD_BYTES)
    if not name:
        mailbox, host = _text(first[2]), _text(first[3])
        name = f"{mailbox}@{host}" if mailbox and host else mailbox
    return casemap(name[:MAX_ADDRESS_KEY])


def subject_key(subject: str | None) -> str:
    """SUBJECT: the base subject (decoded ``subject``), casemapped and cut."""
    return base_subject(subject).text[:MAX_SUBJECT_KEY]


def sort_keys(subject: str | None, envelope: Mapping[str, Any]) -> SortKeys:
    """Every string SORT key of a message, from its decoded subject and its ENVELOPE (``ParsedMessage.envelope``)."""
    return SortKeys(
        subject=subject_key(subject),
        from_=mailbox_key(envelope.get("from")),
        to=mailbox_key(envelope.get("to")),
        cc=mailbox_key(envelope.get("cc")),
        display_from=display_key(envelope.get("from")),
        display_to=display_key(envelope.get("to")),
    )
