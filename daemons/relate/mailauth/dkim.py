"""DKIM verification (RFC 6376 §6, RSA-SHA256 and Ed25519-SHA256 of RFC 8463), keys from our resolver.

Policy:

- Every ``DKIM-Signature`` field is verified, up to :data:`MAX_SIGNATURES`
  (RFC 6376 §6.1 lets a verifier limit them; the rest are reported as
  ``neutral``), each for its own result.
- Keys are fetched first, through the daemon's asyncio resolver
  (``selector._domainkey.domain`` TXT); our verifier
  (relate.mailauth.dkimverify, equivalent to dkimpy's and checked against it)
  then verifies with the keys we fetched and never asks DNS itself, on the
  event loop for small messages and in a worker thread for large ones
  (relate.mailauth.verdict).
- Results (RFC 8601 §2.7.1): ``pass``; ``fail`` when the signature or the
  body hash does not match, or the signature is invalid (expired, its
  ``i=`` outside ``d=``); ``permerror`` when the key is missing, revoked
  or malformed, RSA shorter than 1024 bits, or the signature unusable (a
  required tag missing, an unknown algorithm); ``temperror`` when DNS did
  not answer.
- dkimpy stays for ARC (relate.mailauth.arc), with the speed-ups below.
"""

from __future__ import annotations

import functools
import logging
import re
from dataclasses import dataclass
from typing import Any

import dkim
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

from relate.mailauth import dkimverify
from relate.mailauth.dns import Dns, TempError, each

MAX_SIGNATURES = 10
MIN_RSA_BITS = 1024

# dkimpy logs every failure of a remote signature at error level; that is the sender's problem, not ours.
dkimpy_log = logging.getLogger("relate.mailauth.dkimpy")
dkimpy_log.propagate = False
dkimpy_log.addHandler(logging.NullHandler())

# dkimpy checks RSA signatures in pure Python (about 1 ms of CPU for a 2048-bit key, most of what verifying
# a small message costs); the same check with the cryptography package (OpenSSL) takes some microseconds.
# dkimpy's verify_sig_process calls the module-level name below; we put ours in its place (pinned to
# dkimpy 1.1, and tests/unit/mailauth checks the name is still there and still called). Likewise its key
# loader, so that each key record is parsed once, not per message.
_DKIMPY_RSA_VERIFY = dkim.RSASSA_PKCS1_v1_5_verify


@functools.lru_cache(maxsize=256)
def _rsa_key(modulus: int, exponent: int) -> rsa.RSAPublicKey:
    return rsa.RSAPublicNumbers(exponent, modulus).public_key()


def rsa_verify(digest: Any, signature: bytes, public_key: dict[str, int]) -> bool:
    """RSASSA-PKCS1-v1_5 (RFC 8017 §8.2.2) of a SHA-256 ``digest`` (a hash object) with OpenSSL."""
    if digest.name != "sha256":
        return bool(_DKIMPY_RSA_VERIFY(digest, signature, public_key))
    try:
        key = _rsa_key(public_key["modulus"], public_key["publicExponent"])
        key.verify(signature, digest.digest(), padding.PKCS1v15(), Prehashed(hashes.SHA256()))
    except (InvalidSignature, ValueError):
        return False
    return True


@functools.lru_cache(maxsize=256)
def _public_key(record: bytes) -> Any:
    return dkim.evaluate_pk(b"", record)


def load_pk(name: bytes, dnsfunc: Any, timeout: float = 5) -> Any:
    """dkimpy's load_pk_from_dns, with each key record parsed once (its ASN.1 parser is pure Python)."""
    return _public_key(dnsfunc(name, timeout=timeout))


_DKIMPY_RFC822_PARSE = dkim.rfc822_parse
_FIELD_NAME = re.compile(rb"([\x21-\x7e]+?):")


def rfc822_parse(message: bytes) -> tuple[list[list[bytes]], bytes]:
    """dkimpy's rfc822_parse (header fields as [name, value + CRLF], and the body), without splitting the
    body into lines with a regular expression and joining it again: that was half of what verifying a
    10 KiB message cost. The fast path takes a message whose lines all end in CRLF, as SMTP delivers them,
    and gives what dkimpy's would; anything else goes to dkimpy's own."""
    end = message.find(b"\r\n\r\n")
    if end < 0 or message.count(b"\n") != message.count(b"\r\n"):  # dkimpy turns a bare LF into CRLF
        return _DKIMPY_RFC822_PARSE(message)  # type: ignore[no-any-return]
    headers: list[list[bytes]] = []
    for line in message[:end].split(b"\r\n"):
        if line[:1] in (b"\t", b" ") and headers:
            headers[-1][1] += line + b"\r\n"
            continue
        match = _FIELD_NAME.match(line)
        if match is None:
            return _DKIMPY_RFC822_PARSE(message)  # type: ignore[no-any-return]  # it says what is wrong
        headers.append([match.group(1), line[match.end() :] + b"\r\n"])
    return headers, message[end + 4 :]


dkim.RSASSA_PKCS1_v1_5_verify = rsa_verify
dkim.load_pk_from_dns = load_pk
dkim.rfc822_parse = rfc822_parse

_SIGNATURE_FIELD = re.compile(rb"^dkim-signature[ \t]*:", re.IGNORECASE)
_SELECTOR = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_\-.]*[A-Za-z0-9_])?\Z")


@dataclass(frozen=True)
class Signature:
    """One DKIM-Signature field as found in the header, before verification."""

    index: int  # which DKIM-Signature field (dkimpy's idx: the topmost is 0)
    domain: str  # d=
    selector: str  # s=
    algorithm: str  # a=
    b: str  # the start of b=, for header.b (RFC 6008)
    problem: str = ""  # why it cannot be verified at all (then permerror)


@dataclass(frozen=True)
class DkimResult:
    result: str  # pass, fail, neutral, temperror, permerror
    domain: str
    selector: str
    algorithm: str
    b: str
    reason: str = ""


def find_signatures(head: bytes, header: dkimverify.Message | None = None) -> list[Signature]:
    """The DKIM-Signature fields of a header section, parsed just enough to fetch their keys; ``header``: the
    section as dkimverify.read_header read it (then not read again here, nor by verify when given it too)."""
    if header is not None and not header.problem:
        values = [v for n, v in header.fields if n.lower() == b"dkim-signature"]
    else:  # a header the verifier cannot read (every signature permerror) still has its signatures named
        values = field_values(head, _SIGNATURE_FIELD)
    found: list[Signature] = []
    for index, value in enumerate(values):
        try:
            tags = dkimverify.parse_tags(value)
        except dkimverify.TagListError as exc:
            found.append(Signature(index, "", "", "", "", f"bad tag list: {exc}"))
            continue
        domain = tags.get(b"d", b"").decode("ascii", "replace").strip().lower()
        selector = tags.get(b"s", b"").decode("ascii", "replace").strip()
        algorithm = tags.get(b"a", b"").decode("ascii", "replace").strip().lower()
        b = "".join(tags.get(b"b", b"").decode("ascii", "replace").split())[:12]  # (str.split: \s's blanks)
        problem = ""
        if not domain or not selector or not tags.get(b"b") or not tags.get(b"bh"):
            problem = "a required tag (d, s, b, bh) is missing"
        elif not _SELECTOR.match(selector) or not _SELECTOR.match(domain):
            problem = "d= or s= is not a domain name"
        elif algorithm not in ("rsa-sha256", "ed25519-sha256"):
            problem = f"algorithm {algorithm!r} not accepted"  # rsa-sha1 neither (RFC 8301 §3.1)
        found.append(Signature(index, domain, selector, algorithm, b, problem))
    return found


def field_values(head: bytes, name: re.Pattern[bytes]) -> list[bytes]:
    """The values of the fields whose start matches ``name`` (``^field-name:``; continuation lines joined), in
    order."""
    values: list[bytes] = []
    current: list[bytes] | None = None
    for line in re.split(rb"\r?\n", head):
        if line[:1] in (b" ", b"\t"):
            if current is not None:
                current.append(line)
            continue
        if current is not None:
            values.append(b"\r\n".join(current))
            current = None
        if not line:
            break
        if name.match(line):
            current = [line.split(b":", 1)[1]]
    if current is not None:
        values.append(b"\r\n".join(current))
    return values


async def fetch_keys(dns: Dns, signatures: list[Signature]) -> dict[int, str | Exception]:
    """Each verifiable signature's key record (TXT), or the error that stops it; all at once."""
    wanted = [s for s in signatures[:MAX_SIGNATURES] if not s.problem]

    async def one(sig: Signature) -> str | Exception:
        try:
            records = await dns.txt(f"{sig.selector}._domainkey.{sig.domain}")
        except TempError as exc:
            return exc
        keys = [r for r in records or () if "p=" in r]
        if not keys:
            return LookupError(f"no key at {sig.selector}._domainkey.{sig.domain}")
        return keys[0]

    answers = await each([one(s) for s in wanted])
    return {s.index: a for s, a in zip(wanted, answers, strict=True)}


def verify(
    message: bytes,
    signatures: list[Signature],
    keys: dict[int, str | Exception],
    header: dkimverify.Message | None = None,
) -> list[DkimResult]:
    """Verify each signature against the keys fetched (CPU: see relate.mailauth.verdict for where it runs), with
    our own verifier (relate.mailauth.dkimverify); ``header``: the header section as find_signatures read it."""
    results: list[DkimResult] = []
    verifier = dkimverify.Verifier(message, header)
    for sig in signatures:

        def done(result: str, reason: str = "", sig: Signature = sig) -> None:
            results.append(DkimResult(result, sig.domain, sig.selector, sig.algorithm, sig.b, reason))

        if sig.index >= MAX_SIGNATURES:
            done("neutral", f"more than {MAX_SIGNATURES} signatures: not verified")
            continue
        if sig.problem or verifier.message.problem:
            done("permerror", sig.problem or verifier.message.problem)
            continue
        key = keys[sig.index]
        if isinstance(key, TempError):
            done("temperror", str(key))
            continue
        if isinstance(key, Exception):
            done("permerror", str(key))
            continue
        try:
            verifier.verify(sig.index, key.encode("utf-8", "replace"))
        except dkimverify.Failed as exc:
            done("fail", str(exc)[:200])
            continue
        except dkimverify.Permerror as exc:
            done("permerror", str(exc)[:200])
            continue
        except (ValueError, IndexError, TypeError, KeyError) as exc:  # a case this verifier did not foresee
            done("permerror", f"{type(exc).__name__}: {exc}"[:200])
            continue
        done("pass")
    return results
