"""dkimpy as the reference for our DKIM verifier (relate.mailauth.dkimverify): signing messages of many shapes,
and the result dkimpy gives for one signature, classified as relate.mailauth.dkim did when dkimpy verified."""

from __future__ import annotations

import functools

import dkim as dkimpy

from relate.mail import dkim
from relate.mailauth import dkim as dkimv
from relate.mailauth import dkimverify
from relate.mailauth.verdict import header_section

DOMAIN = b"remote.example"


@functools.cache
def keys() -> dict[str, dkim.DkimKey]:
    """One RSA 2048 and one Ed25519 key (made once per test process)."""
    return {"rsa": dkim.generate("sel", "rsa"), "ed25519": dkim.generate("sel", "ed25519")}


def sign(
    message: bytes,
    kind: str = "rsa",
    canon: tuple[bytes, bytes] = (b"relaxed", b"simple"),
    include: list[bytes] | None = None,
    length: bool = False,
    identity: bytes | None = None,
) -> bytes:
    """``message`` with a DKIM-Signature by dkimpy on top."""
    key = keys()[kind]
    field: bytes = dkimpy.sign(
        message,
        key.selector.encode(),
        DOMAIN,
        key.private_key.encode(),
        identity=identity,
        canonicalize=canon,
        signature_algorithm=key.algorithm.encode(),
        include_headers=include if include is not None else [b"from", b"subject", b"to", b"from"],
        length=length,
    )
    return field + message


def dkimpy_result(message: bytes, index: int, record: bytes) -> str:
    """dkimpy's result for the ``index``-th signature with the key ``record`` (as relate.mailauth.dkim classified
    it before it had its own verifier: key problems and dkimpy's errors permerror, its ValidationError fail)."""
    try:
        _, bits, ktag, _ = dkimpy.evaluate_pk(b"", record)
    except (dkimpy.DKIMException, ValueError, IndexError, TypeError):
        return "permerror"
    if ktag == b"rsa" and bits < dkimverify.MIN_RSA_BITS:
        return "permerror"
    try:
        verifier = dkimpy.DKIM(message, minkey=dkimverify.MIN_RSA_BITS)
        ok = verifier.verify(idx=index, dnsfunc=lambda name, timeout=5: record)
    except dkimpy.ValidationError:
        return "fail"
    except (dkimpy.DKIMException, ValueError, IndexError, TypeError, KeyError):
        return "permerror"
    return "pass" if ok else "fail"


def compare(message: bytes, record: bytes | None = None, kind: str = "rsa") -> list[tuple[str, str, str]]:
    """Each signature of ``message``: (ours, dkimpy's, our reason), after checking that the two agree: the same
    result, except where ours refuses for a check of RFC 6376 dkimpy does not make (never the other way)."""
    record = record if record is not None else keys()[kind].txt_record().encode()
    section = header_section(message)
    signatures = dkimv.find_signatures(section)
    fetched: dict[int, str | Exception] = {s.index: record.decode() for s in signatures if not s.problem}
    found = dkimv.verify(message, signatures, fetched)
    # The path of relate.mailauth.verdict: the header section read once, for discovery and verification.
    header = dkimverify.read_header(section)
    assert dkimv.find_signatures(section, header) == signatures
    assert dkimv.verify(message, signatures, fetched, header) == found
    out = []
    for sig, result in zip(signatures, found, strict=True):
        theirs = "permerror" if sig.problem else dkimpy_result(message, sig.index, record)
        if dkimverify.STRICTER in result.reason:
            assert result.result != "pass"
        else:
            assert (result.result, sig.index) == (theirs, sig.index), (result.reason, message[:400])
        out.append((result.result, theirs, result.reason))
    return out
