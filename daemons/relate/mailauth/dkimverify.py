"""DKIM signature verification of our own (RFC 6376 §3, §6; Ed25519-SHA256 of RFC 8463), on bytes.

This is the hot path of every signed message arriving over port 25; dkimpy
keeps signing and ARC (relate.mailauth.arc). It reads the message as dkimpy
does and gives the same answers, which ``tests/unit/mailauth/test_dkimverify.py``
holds it to (differentially, over signed messages of many shapes and a fuzz of
mutated ones), except where RFC 6376 asks for more than dkimpy checks; those
cases are refused, never accepted (:data:`STRICTER`):

- a tag name must be ``ALPHA *(ALPHA / DIGIT / "_")`` (§3.2);
- ``h=`` must list From (§6.1.1), and ``i=`` must be an address whose domain
  is ``d=`` or below it (§3.5);
- the key record's ``h=`` (hash algorithms) must allow SHA-256, its ``k=``
  must be the key type ``a=`` names, and with ``t=s`` the ``i=`` domain must be
  ``d=`` itself (§3.6.1).

One case is accepted that dkimpy refuses: a key record whose ``s=`` lists
several service types, ``email`` among them (§3.6.1 makes it a list; dkimpy
compares it with single values only).

``t=y`` (the signer is testing) changes no result; the reason of a failure says
so. rsa-sha1 is not accepted (RFC 8301 §3.1): relate.mailauth.dkim reports it as
permerror before the message is read.

Cost: the header fields are split once per message; each signature
canonicalises only the fields its ``h=`` names; each body canonicalisation
(simple or relaxed, with its ``l=``) is computed once per message, by bytes
operations that are linear in the body (dkimpy's trailing-whitespace
expression is quadratic on long runs of blanks).
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import re
import time
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa

MIN_RSA_BITS = 1024
CLOCK_SLOP = 36000  # seconds of leeway for t= and x= (dkimpy's 10 hours: mailers with wrong clocks)
ALGORITHMS = (b"rsa-sha256", b"ed25519-sha256")
STRICTER = "rfc6376:"  # the reasons of refusals dkimpy would not make start so

_TAG_NAME = re.compile(rb"[A-Za-z][A-Za-z0-9_]*\Z")
_ALL_WS = re.compile(rb"\s+")
_BASE64 = re.compile(rb"[\s0-9A-Za-z+/]+[\s=]*\Z")
_H_SPLIT = re.compile(rb"\s*:\s*")
_D_SPECIALS = re.compile(rb"[()<>\[\]:;@\\,]")
_L_VALUE = re.compile(rb"\d{0,76}\Z")
_DIGITS = re.compile(rb"\d+\Z")
_FIELD_NAME = re.compile(rb"([\x21-\x7e]+?):")
# The b= tag's value, taken out of the signature field before hashing it (RFC 6376 §3.7): what dkimpy's expression
# takes, so that a signature verifies here exactly when it does there. dkimpy writes folding whitespace as
# (?:(?:\s*\r?\n)?\s+)?, which matches exactly the strings \s* does, and steps one base64 character at a time; this
# takes runs of them (ten times faster on a 2048-bit signature).
_B_TAG = re.compile(rb"([;\s]b\s*=)(?:\s*[a-zA-Z0-9+/=]+)*(?:\r?\n\Z)?")


class Permerror(Exception):
    """The signature, the key or the message cannot be verified at all (RFC 8601 ``permerror``)."""


class Failed(Exception):
    """The signature is invalid or does not match (RFC 8601 ``fail``)."""


class TagListError(ValueError):
    """A tag list that is not one (RFC 6376 §3.2)."""


KEPT_TAG_LIST = 4096  # bytes: a tag list up to this size is kept once parsed (64 of them at most)


def parse_tags(value: bytes) -> dict[bytes, bytes]:
    """A tag=value list (RFC 6376 §3.2), as dkimpy reads it (values stripped of surrounding whitespace, folding
    inside kept), with the tag-name syntax checked; a repeated tag is an error. The last few of ordinary size
    are kept: a signature is read when it is found and again when it is verified (callers do not change the
    dict)."""
    return _parse_kept(value) if len(value) <= KEPT_TAG_LIST else _parse_tags(value)


@functools.lru_cache(maxsize=64)
def _parse_kept(value: bytes) -> dict[bytes, bytes]:
    return _parse_tags(value)


def _parse_tags(value: bytes) -> dict[bytes, bytes]:
    specs = value.strip().split(b";")
    if not specs[-1]:
        specs.pop()  # a trailing ";" is allowed
    tags: dict[bytes, bytes] = {}
    for spec in specs:
        name, eq, val = spec.partition(b"=")
        if not eq:
            raise TagListError(f"not a tag=value: {spec[:40]!r}")
        name = name.strip()
        if _TAG_NAME.match(name) is None:
            raise TagListError(f"{STRICTER} bad tag name: {name[:40]!r}")
        if name in tags:
            raise TagListError(f"duplicate tag: {name[:40]!r}")
        tags[name] = val.strip()
    return tags


@dataclass(frozen=True)
class Message:
    """A message as DKIM reads it: its header fields (name, value with continuation lines and CRLF) in order,
    and its body. Lines end in CRLF (bare LF made CRLF, as dkimpy does); ``problem`` says why it cannot be
    read (then every signature is permerror)."""

    fields: list[tuple[bytes, bytes]]
    body: bytes
    problem: str = ""
    section: int = -1  # read from a header section alone (body empty): its size, when a message's can be sliced

    def with_body(self, message: bytes) -> Message | None:
        """This header section's reading with the body of ``message``, which starts with the section: what
        read_message(message) gives, without reading the header again; None when that cannot be sure."""
        if (
            self.section <= 0
            or self.problem
            or message.count(b"\n", self.section) != message.count(b"\r\n", self.section)
        ):
            return None
        return Message(self.fields, message[self.section :])

    @functools.cached_property
    def positions(self) -> dict[bytes, list[int]]:
        """Each lower-cased field name: the indexes of its fields, top to bottom."""
        found: dict[bytes, list[int]] = {}
        for i, (name, _) in enumerate(self.fields):
            found.setdefault(name.lower(), []).append(i)
        return found


def read_header(section: bytes) -> Message:
    """A header section (up to and including its empty line) read as :func:`read_message` would read the message
    it starts; its ``section`` says whether a message's body can be sliced off after it (Message.with_body)."""
    found = read_message(section)
    crlf_only = section.count(b"\n") == section.count(b"\r\n")
    clean = crlf_only and section.endswith(b"\r\n\r\n") and section.find(b"\r\n\r\n") == len(section) - 4
    if clean and not section.startswith(b"\r\n") and not found.problem and not found.body:
        return Message(found.fields, b"", section=len(section))
    return found


def read_message(message: bytes) -> Message:
    """Split ``message`` into header fields and body (linear; what dkimpy's rfc822_parse gives)."""
    if message.count(b"\n") != message.count(b"\r\n"):
        message = re.sub(rb"\r?\n", b"\r\n", message)
    if message.startswith(b"\r\n"):
        return Message([], message[2:])
    end = message.find(b"\r\n\r\n")
    if end < 0:
        head, body = message, b""
    else:
        head, body = message[:end], message[end + 4 :]
    lines = head.split(b"\r\n")
    if end < 0 and lines and not lines[-1]:
        lines.pop()
    fields: list[tuple[bytes, bytes]] = []
    folded: list[bytes] = []  # the current field's value lines
    name = b""
    for line in lines:
        if line[:1] in (b"\t", b" "):
            if not folded:
                return Message([], b"", "message unreadable: a header starts with a continuation line")
            folded.append(line)
            continue
        match = _FIELD_NAME.match(line)
        if match is None:
            if line.startswith(b"From "):  # an mbox separator, as dkimpy passes over it
                continue
            return Message([], b"", f"message unreadable: not a header field: {line[:40]!r}")
        if folded:
            fields.append((name, b"\r\n".join(folded) + b"\r\n"))
        name = match.group(1)
        folded = [line[match.end() :]]
    if folded:
        fields.append((name, b"\r\n".join(folded) + b"\r\n"))
    return Message(fields, body)


def _one_space(data: bytes) -> bytes:
    """Every run of blanks (SP, HTAB) made one space. By bytes replacements, not a regular expression: Python's
    steps through every byte of a body at some hundred ns each; each pass here halves the longest run."""
    data = data.replace(b"\t", b" ")
    while b"  " in data:
        data = data.replace(b"  ", b" ")
    return data


def _trailing_crlfs(body: bytes) -> int:
    """How many CRLF pairs end ``body`` (linear: no loop over them, no backtracking expression)."""
    end = body[-64:]
    kept = len(end.rstrip(b"\r\n"))  # (the last 64 bytes first: stripping copies what it keeps)
    tail = end[kept:] if kept else body[len(body.rstrip(b"\r\n")) :]
    if not tail.endswith(b"\r\n"):
        return 0
    # In a run of CR and LF, the CRLF pairs that end it start after the last doubled character.
    start = max(tail.rfind(b"\r\r"), tail.rfind(b"\n\n")) + 1
    if tail[start : start + 1] == b"\n":
        start += 1
    return (len(tail) - start) // 2


def canonical_body(body: bytes, relaxed: bool) -> bytes:
    """The body canonicalised (RFC 6376 §3.4.3 simple, §3.4.4 relaxed), as dkimpy does it."""
    if relaxed:
        # Runs of blanks become one space, and a space that ends a line goes: the same as dkimpy's stripping
        # then compressing, without its quadratic expression.
        body = _one_space(body).replace(b" \r\n", b"\r\n")
    pairs = _trailing_crlfs(body)
    out = (body[: len(body) - 2 * pairs] if pairs else body) + b"\r\n"
    return b"" if relaxed and out == b"\r\n" else out


def _relaxed_field(name: bytes, value: bytes) -> tuple[bytes, bytes]:
    """RFC 6376 §3.4.2: the name lower-cased, the value unfolded, blanks compressed, stripped."""
    return name.lower().rstrip(), _one_space(value.replace(b"\r\n", b"").replace(b"\n", b"")).strip() + b"\r\n"


@dataclass(frozen=True)
class Key:
    """A key record (RFC 6376 §3.6.1) read and checked."""

    kind: bytes  # rsa or ed25519
    public: rsa.RSAPublicKey | ed25519.Ed25519PublicKey
    bits: int
    strict: bool  # t=s: i= must be in d= itself
    testing: bool  # t=y
    sha256: bool  # its h= (when present) allows SHA-256


@functools.lru_cache(maxsize=256)
def read_key(record: bytes) -> Key:
    """The key record parsed (kept per record text); Permerror when it cannot verify anything."""
    try:
        tags = parse_tags(record)
    except TagListError as exc:
        raise Permerror(f"bad key: {exc}") from None
    if tags.get(b"v", b"DKIM1") != b"DKIM1":
        raise Permerror("bad key: v= is not DKIM1")
    kind = tags.get(b"k", b"rsa")
    if kind not in (b"rsa", b"ed25519"):
        raise Permerror(f"bad key: unknown algorithm in k= ({kind[:20]!r})")
    if b"p" not in tags:
        raise Permerror("bad key: no p=")
    if not tags[b"p"]:
        raise Permerror("bad key: revoked (empty p=)")
    services = [s.strip() for s in tags.get(b"s", b"*").split(b":")]
    if b"*" not in services and b"email" not in services:
        raise Permerror("bad key: not for email (s=)")
    flags = [f.strip() for f in tags.get(b"t", b"").split(b":")]
    hashes_allowed = [h.strip() for h in tags[b"h"].split(b":")] if b"h" in tags else [b"sha256"]
    try:
        raw = base64.b64decode(_ALL_WS.sub(b"", tags[b"p"]))
    except (binascii.Error, ValueError):
        raise Permerror("bad key: p= is not base64") from None
    public: rsa.RSAPublicKey | ed25519.Ed25519PublicKey
    if kind == b"ed25519":
        try:
            public = ed25519.Ed25519PublicKey.from_public_bytes(raw)
        except ValueError:
            raise Permerror("bad key: not an Ed25519 public key") from None
        bits = 256
    else:
        public = _rsa_public(raw)
        bits = public.key_size
        if bits < MIN_RSA_BITS:
            raise Permerror(f"key too small: {bits} bits")
    return Key(kind, public, bits, b"s" in flags, b"y" in flags, b"sha256" in hashes_allowed)


def _rsa_public(der: bytes) -> rsa.RSAPublicKey:
    """An RSA public key from a SubjectPublicKeyInfo (RFC 6376 §3.6.1) or, as dkimpy takes too, a bare
    PKCS#1 RSAPublicKey."""
    key: object = None
    try:
        key = serialization.load_der_public_key(der)
    except (ValueError, UnsupportedAlgorithm):
        pem = b"-----BEGIN RSA PUBLIC KEY-----\n" + base64.encodebytes(der) + b"-----END RSA PUBLIC KEY-----\n"
        try:
            key = serialization.load_pem_public_key(pem)
        except (ValueError, UnsupportedAlgorithm):
            raise Permerror("bad key: not an RSA public key") from None
    if not isinstance(key, rsa.RSAPublicKey):
        raise Permerror("bad key: not an RSA public key")
    return key


class Verifier:
    """The signatures of one message, verified one by one against keys already fetched (CPU only)."""

    def __init__(self, message: bytes, header: Message | None = None) -> None:
        """``header``: the message's header section as read_header read it, if it was (not read again then)."""
        whole = header.with_body(message) if header is not None else None
        self.message = whole if whole is not None else read_message(message)
        self._signatures = [i for i, (n, _) in enumerate(self.message.fields) if n.lower() == b"dkim-signature"]
        self._bodies: dict[bool, bytes] = {}

    def _body(self, relaxed: bool) -> bytes:
        if relaxed not in self._bodies:
            self._bodies[relaxed] = canonical_body(self.message.body, relaxed)
        return self._bodies[relaxed]

    def verify(self, index: int, record: bytes, now: float | None = None) -> None:
        """Verify the ``index``-th DKIM-Signature field (the topmost is 0) with the key ``record``: returns when
        it passes, raises Failed or Permerror when it does not (their text says why)."""
        if self.message.problem:
            raise Permerror(self.message.problem)
        if index >= len(self._signatures):
            raise Permerror("no such signature")
        position = self._signatures[index]
        name, value = self.message.fields[position]
        try:
            tags = parse_tags(value)
        except TagListError as exc:
            raise Permerror(f"bad tag list: {exc}") from None
        key = read_key(record)  # a key that cannot verify anything first, as relate.mailauth.dkim did with dkimpy
        _check_tags(tags, time.time() if now is None else now)
        relaxed_head, relaxed_body = _canonicalisation(tags.get(b"c", b"simple/simple"))
        try:
            self._check(tags, key, relaxed_head, relaxed_body, name, value)
        except Failed as exc:
            if key.testing:
                raise Failed(f"{exc} (the key is in testing mode, t=y)") from None
            raise

    def _check(
        self, tags: dict[bytes, bytes], key: Key, relaxed_head: bool, relaxed_body: bool, name: bytes, value: bytes
    ) -> None:
        algorithm = tags[b"a"]
        if (key.kind == b"rsa") != (algorithm == b"rsa-sha256"):
            raise Permerror(f"{STRICTER} the key's k= is not the type a= names")
        if not key.sha256:
            raise Permerror(f"{STRICTER} the key's h= does not allow sha256")
        if key.strict and _identity_domain(tags) != tags[b"d"].lower():
            raise Permerror(f"{STRICTER} the key's t=s wants i= in d= itself")
        # RFC 6376 §3.7: the body hash first.
        body = self._body(relaxed_body)
        if b"l" in tags:
            body = body[: int(tags[b"l"])]
        try:
            expected = base64.b64decode(b"".join(tags[b"bh"].split()))
        except (binascii.Error, ValueError):
            raise Permerror("bh= is not base64") from None
        if hashlib.sha256(body).digest() != expected:
            raise Failed("body hash mismatch")
        # Then the header fields h= names, each instance from the bottom up; From once more than listed, so that
        # a second From makes the check fail (dkimpy's rule, against a From added above the signed one).
        names = [h.lower() for h in _H_SPLIT.split(tags[b"h"])]
        if b"from" not in names:
            raise Permerror(f"{STRICTER} h= does not list From")
        names.append(b"from")
        left = {n: list(p) for n, p in self.message.positions.items()}
        parts: list[bytes] = []
        for wanted in names:
            found = left.get(wanted)
            if not found:
                continue
            fname, fvalue = self.message.fields[found.pop()]
            if relaxed_head:
                fname, fvalue = _relaxed_field(fname, fvalue)
            parts += (fname, b":", fvalue)
        own = _B_TAG.sub(b"\\1", value)
        if relaxed_head:
            name, own = _relaxed_field(name, own)
        parts += (name, b":", own.rstrip())
        signed = b"".join(parts)
        try:
            signature = base64.b64decode(b"".join(tags[b"b"].split()))
        except (binascii.Error, ValueError):
            raise Permerror("b= is not base64") from None
        try:
            if isinstance(key.public, rsa.RSAPublicKey):
                key.public.verify(signature, signed, padding.PKCS1v15(), hashes.SHA256())
            elif len(signature) != 64:  # (dkimpy's Ed25519 check raises: permerror there)
                raise Permerror("b= is not an Ed25519 signature")
            else:
                key.public.verify(signature, hashlib.sha256(signed).digest())
        except InvalidSignature:
            raise Failed("signature did not verify") from None


def _canonicalisation(c: bytes) -> tuple[bool, bool]:
    """(relaxed header, relaxed body) of a c= value (RFC 6376 §3.5; the body's default is simple)."""
    parts = c.split(b"/")
    if len(parts) == 1:
        parts.append(b"simple")
    if len(parts) != 2 or any(p not in (b"simple", b"relaxed") for p in parts):
        raise Permerror(f"invalid c= value: {c[:40]!r}")
    return parts[0] == b"relaxed", parts[1] == b"relaxed"


def _identity_domain(tags: dict[bytes, bytes]) -> bytes:
    """The domain of i= (default: d=), lower-cased."""
    if b"i" not in tags:
        return tags[b"d"].lower()
    return tags[b"i"].rpartition(b"@")[2].lower()


def _check_tags(tags: dict[bytes, bytes], now: float) -> None:
    """The signature's tags (RFC 6376 §3.5, §6.1.1), in dkimpy's order and with its outcomes: a tag missing or
    malformed, an expired or future signature fail (dkimpy's ValidationError)."""
    for tag in (b"v", b"a", b"b", b"bh", b"d", b"h", b"s"):
        if tag not in tags:
            raise Failed(f"missing {tag.decode()}=")
    if tags[b"a"] not in ALGORITHMS:  # (relate.mailauth.dkim found rsa-sha1 and unknown ones before: permerror)
        raise Failed(f"unknown signature algorithm {tags[b'a'][:20]!r}")
    for tag in (b"b", b"bh"):
        # (dkimpy checks b='s characters for bh= too: a bh= of others fails as a mismatch, here and there)
        if _BASE64.match(tags[b"b"]) is None or len(b"".join(tags[tag].split())) % 4:
            raise Failed(f"{tag.decode()}= value is not valid base64")
    domain = tags[b"d"]
    if domain.isascii() and _D_SPECIALS.search(domain):
        raise Failed("d= value is not valid")
    if b"i" in tags:
        identity = tags[b"i"]
        if b"@" not in identity:
            raise Permerror(f"{STRICTER} i= is not an address")
        before = identity[-len(domain) - 1 : -len(domain)] if domain else b""
        if not identity.lower().endswith(domain.lower()) or len(before) != 1 or before not in b"@.":
            raise Failed("i= domain is not a subdomain of d=")
    if b"l" in tags and (_L_VALUE.match(tags[b"l"]) is None or not tags[b"l"]):
        raise Failed("l= value is not a decimal integer") if tags[b"l"] else Permerror("l= is empty")
    if b"q" in tags and tags[b"q"] != b"dns/txt":
        raise Failed("q= value is not dns/txt")
    signed_at = None
    if b"t" in tags:
        if _DIGITS.match(tags[b"t"]) is None:
            raise Failed("t= value is not a decimal integer")
        signed_at = int(tags[b"t"])
        if signed_at > now + CLOCK_SLOP:
            raise Failed("t= value is in the future")
    if tags[b"v"] != b"1":
        raise Failed("v= value is not 1")
    if b"x" in tags:
        if _DIGITS.match(tags[b"x"]) is None:
            raise Failed("x= value is not a decimal integer")
        expires = int(tags[b"x"])
        if expires < now - CLOCK_SLOP:
            raise Failed("signature expired (x=)")
        if signed_at and expires < signed_at:
            raise Failed("x= value is less than t= value")
