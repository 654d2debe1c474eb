"""The string keys SORT compares (RFC 5256 §3, RFC 5957), derived once per message from its subject and ENVELOPE.

- SUBJECT: the base subject (``relate.mail.basesubject``).
- FROM, TO, CC: the addr-mailbox of the first address of that field in the
  ENVELOPE (RFC 5256: "[IMAP] addr-mailbox of the first ... address"); for a
  group (``To: team: a@x, b@y;``) that is the group name, as the ENVELOPE's
  group-start entry carries it. No address: the empty string.
- DISPLAYFROM, DISPLAYTO (RFC 5957 §2): the first address's display name,
  RFC 2047-decoded; without one, its addr-spec (``mailbox@host``), or the
  mailbox alone when there is no host (a group's name).

Every key is casemapped (i;ascii-casemap, see ``basesubject``) and cut to
``MAX_SORT_KEY`` characters, so two messages compare by at most that much
of a key; PostgreSQL then orders them with the "C" collation. The work is
linear in the subject and the first address, each bounded by the header
limits of ``relate.mail.limits``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from relate.mail import encoded_words
from relate.mail.basesubject import base_subject, casemap

__all__ = ["MAX_SORT_KEY", "SortKeys", "sort_keys"]

# Characters of each key that are kept and compared. Real subjects and names: under 200.
MAX_SORT_KEY = 1000


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
    return casemap(_text(first[2]))[:MAX_SORT_KEY] if first is not None else ""


def display_key(addresses: Any) -> str:
    """DISPLAYFROM and DISPLAYTO: the first address's decoded display name, else its addr-spec."""
    first = _first(addresses)
    if first is None:
        return ""
    name = encoded_words.decode(_text(first[0])[: 4 * MAX_SORT_KEY])
    if not name:
        mailbox, host = _text(first[2]), _text(first[3])
        name = f"{mailbox}@{host}" if mailbox and host else mailbox
    return casemap(name[:MAX_SORT_KEY])


def sort_keys(subject: str | None, envelope: Mapping[str, Any]) -> SortKeys:
    """Every string SORT key of a message, from its decoded subject and its ENVELOPE (``ParsedMessage.envelope``)."""
    return SortKeys(
        subject=base_subject(subject).text[:MAX_SORT_KEY],
        from_=mailbox_key(envelope.get("from")),
        to=mailbox_key(envelope.get("to")),
        cc=mailbox_key(envelope.get("cc")),
        display_from=display_key(envelope.get("from")),
        display_to=display_key(envelope.get("to")),
    )
