"""MTA-STS (RFC 8461) text formats: the ``_mta-sts`` TXT record and the policy file, parsed and written.

Pure code, no I/O: the delivery daemon fetches and applies policies
(relate.queue.mtasts), relate-api serves ours, ``relatectl domain check``
reads the TXT record. Parsing is one pass over at most ``MAX_POLICY_BYTES``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# RFC 8461 §3.3 suggests senders accept policy files up to 64 KiB.
MAX_POLICY_BYTES = 64 * 1024
# §3.2: max_age is at most 31557600 seconds (about a year).
MAX_AGE_LIMIT = 31_557_600
MODES = ("enforce", "testing", "none")

_ID = re.compile(r"[A-Za-z0-9]{1,32}\Z")
_MX = re.compile(r"(\*\.)?([A-Za-z0-9](?:[A-Za-z0-9\-]{0,61}[A-Za-z0-9])?\.)*[A-Za-z0-9\-]{1,63}\Z")


def valid_mx_pattern(text: str) -> bool:
    """Whether ``text`` is a host name or a ``*.`` wildcard of one whole left-most label (§3.2's mx)."""
    return _MX.match(text) is not None


class PolicyError(ValueError):
    """A policy file that is not a valid STSv1 policy."""


@dataclass(frozen=True)
class Policy:
    mode: str  # enforce | testing | none
    mx: tuple[str, ...]  # patterns, lower case: "mail.example.com" or "*.example.net"
    max_age: int  # seconds

    def matches(self, host: str) -> bool:
        """Whether an MX host name matches one of the policy's patterns (§4.1: a wildcard is one whole label)."""
        host = host.lower().rstrip(".")
        for pattern in self.mx:
            if pattern.startswith("*."):
                head, _, rest = host.partition(".")
                if head and rest == pattern[2:]:
                    return True
            elif host == pattern:
                return True
        return False

    def text(self) -> str:
        """The policy file (§3.2), CRLF line ends."""
        lines = ["version: STSv1", f"mode: {self.mode}", *(f"mx: {m}" for m in self.mx), f"max_age: {self.max_age}"]
        return "".join(f"{line}\r\n" for line in lines)


def txt_id(records: list[str]) -> str | None:
    """The ``id`` of a domain's one valid ``v=STSv1`` TXT record (§3.1), or None (none, several, or malformed)."""
    found = [r for r in records if r.startswith("v=STSv1")]
    if len(found) != 1:
        return None
    for part in found[0].split(";")[1:]:
        name, eq, value = part.strip().partition("=")
        if eq and name.strip() == "id":
            value = value.strip()
            return value if _ID.match(value) else None
    return None


def parse_policy(body: bytes) -> Policy:
    """A policy file (§3.2: ``key: value`` lines, CRLF or LF); raises PolicyError."""
    if len(body) > MAX_POLICY_BYTES:
        raise PolicyError(f"policy larger than {MAX_POLICY_BYTES} bytes")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise PolicyError("policy is not UTF-8") from None
    fields: dict[str, str] = {}
    mx: list[str] = []
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if not sep:
            continue  # §3.2: unknown or malformed lines are ignored
        key, value = key.strip(), value.strip()
        if key == "mx":
            if not valid_mx_pattern(value):
                raise PolicyError(f"bad mx pattern {value[:80]!r}")
            mx.append(value.lower().rstrip("."))
        else:
            fields.setdefault(key, value)
    if fields.get("version") != "STSv1":
        raise PolicyError("version is not STSv1")
    mode = fields.get("mode", "")
    if mode not in MODES:
        raise PolicyError(f"bad mode {mode[:20]!r}")
    age = fields.get("max_age", "")
    if not age.isdigit() or len(age) > 10 or int(age) > MAX_AGE_LIMIT:
        raise PolicyError(f"bad max_age {age[:20]!r}")
    if mode != "none" and not mx:
        raise PolicyError("no mx in a policy that is not mode: none")
    return Policy(mode, tuple(mx), int(age))
