"""Our DKIM verifier against dkimpy's, over messages dkimpy signed in many shapes and then altered; and the checks
of RFC 6376 it makes beyond dkimpy's."""

from __future__ import annotations

import base64
import hashlib
import re

import pytest

from relate.mailauth import dkimverify
from tests.dkimpy_reference import compare, keys, sign

PLAIN = (
    b"From: Carol <carol@remote.example>\r\nTo: bob@example.com\r\nSubject: hi there\r\n"
    b"Date: Mon, 7 Dec 2026 10:00:00 +0000\r\n\r\nHello.\r\n"
)
FOLDED = (
    b"From: Carol\r\n <carol@remote.example>\r\nTo: bob@example.com,\r\n\t alice@example.com \r\n"
    b"Subject:   folded \t  subject\r\n  on two lines  \r\nX-Empty:\r\n\r\n"
    b"Body  with \t blanks \r\n\r\n trailing\t\r\n\r\n\r\n\r\n"
)
TWO_FROM = b"From: a@remote.example\r\nFrom: b@remote.example\r\nSubject: x\r\n\r\nbody\r\n"
BARE_LF = b"From: a@remote.example\nSubject: bare\n\nline feeds\nonly\n"
EMPTY_BODY = b"From: a@remote.example\r\nSubject: nothing\r\n\r\n"
NO_FINAL_CRLF = b"From: a@remote.example\r\nSubject: x\r\n\r\nno line end"
BLANK_BODY = b"From: a@remote.example\r\nSubject: x\r\n\r\n\r\n \r\n\t\r\n\r\n"
MESSAGES = [PLAIN, FOLDED, TWO_FROM, BARE_LF, EMPTY_BODY, NO_FINAL_CRLF, BLANK_BODY]
CANONS = [(h, b) for h in (b"simple", b"relaxed") for b in (b"simple", b"relaxed")]
INCLUDES = [
    [b"from"],
    [b"from", b"subject", b"to", b"date"],
    [b"from", b"from", b"subject", b"subject", b"to", b"to", b"x-missing"],  # oversigned, and a field absent
    [b"subject", b"from", b"x-empty", b"to", b"cc"],
]
ALTERATIONS = [
    lambda m: m,
    lambda m: m + b"appended line\r\n",  # an l= signature still passes
    lambda m: m.replace(b"Hello.", b"Hullo.").replace(b"trailing", b"trailinG").replace(b"body", b"Body"),
    lambda m: m.replace(b"hi there", b"hi  there").replace(b"folded \t  subject", b"folded subject"),
    lambda m: m.replace(b"Subject:", b"SUBJECT:"),  # header name case: relaxed passes, simple fails
    lambda m: m.replace(b"\r\n\r\n", b"\r\nSubject: added below\r\n\r\n", 1),  # a field added under the signed ones
    lambda m: re.sub(rb"(\r\n)+\Z", b"\r\n\r\n\r\n\r\n", m),  # more blank lines at the end: both pass
    lambda m: m.replace(b"\r\n\r\n", b"\r\nFrom: mallory@evil.example\r\n\r\n", 1),  # a second From
    lambda m: re.sub(rb" \r\n", b"\r\n", m),  # trailing blanks dropped
    lambda m: re.sub(rb"bh=[A-Za-z0-9+/]", b"bh=A", m, count=1),
    lambda m: m.replace(b"; b=", b"; b=AAAA", 1),
]


@pytest.mark.parametrize("kind", ["rsa", "ed25519"])
@pytest.mark.parametrize("canon", CANONS, ids=lambda c: b"/".join(c).decode())
@pytest.mark.parametrize("length", [False, True], ids=["whole", "l="])
def test_same_results_as_dkimpy(kind: str, canon: tuple[bytes, bytes], length: bool) -> None:
    """Over every message shape, signing choice and alteration, our result is dkimpy's; unaltered ones pass (but
    for two From fields signed as one: a From is hashed once more than h= lists it)."""
    seen = set()
    for message in MESSAGES:
        for include in INCLUDES:
            signed = sign(message, kind, canon, include, length)
            oversigned = include.count(b"from") > 1
            assert compare(signed, kind=kind)[0][0] == ("pass" if message != TWO_FROM or oversigned else "fail")
            for alter in ALTERATIONS:
                seen.update(r[0] for r in compare(alter(signed), kind=kind))
    assert {"pass", "fail"} <= seen


def test_several_signatures_each_its_own() -> None:
    """Two signatures on one message: the inner one breaks when the outer is added over a changed body, each
    result is dkimpy's."""
    inner = sign(PLAIN, canon=(b"simple", b"simple"))
    outer = sign(inner.replace(b"Hello.", b"Hello!"), canon=(b"relaxed", b"relaxed"))
    assert [r[0] for r in compare(outer)] == ["pass", "fail"]


def test_key_records() -> None:
    """Key records (RFC 6376 §3.6.1): revoked, malformed, of another service or algorithm, testing, strict."""
    rsa = keys()["rsa"]
    signed = sign(PLAIN)
    p = rsa.public_key.encode()

    def ours(record: bytes, message: bytes = signed) -> tuple[str, str]:
        result = compare(message, record)[0]
        return result[0], result[2]

    assert ours(b"v=DKIM1; k=rsa; p=" + p) == ("pass", "")
    assert ours(b"p=" + p + b"; s=email; h=sha256:sha1; t=y") == ("pass", "")
    assert ours(b"v=DKIM1; k=rsa; p=")[0] == "permerror"  # revoked
    assert ours(b"v=DKIM1; k=rsa; p=AAAA")[0] == "permerror"
    assert ours(b"v=DKIM2; p=" + p)[0] == "permerror"
    assert ours(b"k=dsa; p=" + p)[0] == "permerror"
    with pytest.raises(dkimverify.Permerror, match="not for email"):  # dkimpy: fail
        dkimverify.Verifier(signed).verify(0, b"p=" + p + b"; s=tlsrpt")
    assert ours(b"p=" + p + b"; h=sha1")[0] == "permerror"
    assert ours(b"p=" + p + b"; p=" + p)[0] == "permerror"  # a tag twice
    tampered = signed.replace(b"Hello.", b"Hullo.")
    assert ours(b"p=" + p + b"; t=y", tampered) == ("fail", "body hash mismatch (the key is in testing mode, t=y)")
    # t=s: i= must be in d= itself, not below it
    sub = sign(PLAIN, identity=b"carol@mail." + b"remote.example")
    assert ours(b"p=" + p, sub)[0] == "pass"
    assert ours(b"p=" + p + b"; t=s", sub)[0] == "permerror"
    # an RSA signature against an Ed25519 key, and the other way
    assert ours(keys()["ed25519"].txt_record().encode())[0] in ("permerror", "fail")
    assert ours(b"p=" + p, sign(PLAIN, "ed25519"))[0] == "permerror"
    # a key of several services, email among them (a list, RFC 6376 §3.6.1): dkimpy refuses it, we do not
    found = dkimverify.Verifier(signed)
    found.verify(0, b"p=" + p + b"; s=email:tlsrpt")


def test_short_rsa_key_is_permerror() -> None:
    """An RSA key under 1024 bits cannot verify anything (RFC 8301 §3.2)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    small = rsa.RSAPublicNumbers(65537, (1 << 767) | 0xD3).public_key()
    der = small.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    with pytest.raises(dkimverify.Permerror, match="too small"):
        dkimverify.read_key(b"p=" + base64.b64encode(der))


@pytest.mark.parametrize(
    ("pattern", "replacement", "expected"),
    [
        (rb"v=1; ", b"", "fail"),  # a required tag missing
        (rb"v=1;", b"v=2;", "fail"),
        (rb"c=relaxed/simple", b"c=loose/simple", "permerror"),
        (rb"d=remote\.example", b"d=[x]", "permerror"),  # not a domain name: relate.mailauth.dkim says so first
        (rb"q=dns/txt", b"q=http", "fail"),
        (rb"a=rsa-sha256", b"a=rsa-sha1", "permerror"),  # RFC 8301 §3.1
        (rb"a=rsa-sha256", b"a=rsa-md5", "permerror"),
        (rb"i=@remote\.example", b"i=carol@elsewhere.example", "fail"),
        (rb"i=@remote\.example", b"i=carol@remote.example; i=x@remote.example", "permerror"),  # a tag twice
        (rb"t=\d+", b"t=12x", "fail"),
        (rb"; h=", b"; l=12345678901234567890123456789012345678901234567890123456789012345678901234567; h=", "fail"),
    ],
)
def test_signature_tags(pattern: bytes, replacement: bytes, expected: str) -> None:
    """A signature whose tags are wrong gets the result dkimpy's validation gave."""
    signed = sign(PLAIN)
    altered = re.sub(pattern, replacement, signed, count=1)
    assert altered != signed
    assert compare(altered)[0][0] == expected


def test_rfc_checks_beyond_dkimpys() -> None:
    """h= without From, i= that is not an address, a tag name of two words: refused, with the reason saying it is
    RFC 6376's rule (dkimpy lets them pass)."""
    no_from = _signed_by_hand(PLAIN, b"subject")
    (ours,) = compare(no_from)
    assert (ours[0], ours[1]) == ("permerror", "pass")
    assert dkimverify.STRICTER in ours[2]
    assert compare(sign(PLAIN, identity=b"mail.remote.example"))[0][:2] == ("permerror", "pass")
    two_words = sign(PLAIN).replace(b"; s=", b"; x y=1; s=", 1)
    assert compare(two_words)[0][0] == "permerror"


def _signed_by_hand(message: bytes, h: bytes) -> bytes:
    """``message`` signed (relaxed/relaxed) over the fields ``h`` names, which dkimpy's signer would refuse."""
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import padding, rsa

    body = message.partition(b"\r\n\r\n")[2]
    bh = base64.b64encode(hashlib.sha256(dkimverify.canonical_body(body, relaxed=True)).digest())
    field = b"v=1; a=rsa-sha256; c=relaxed/relaxed; d=remote.example; s=sel; h=" + h + b"; bh=" + bh + b"; b="
    fields = dkimverify.read_message(message).fields
    signed = (
        b"".join(
            b"%s:%s" % dkimverify._relaxed_field(n, v) for name in h.split(b":") for n, v in fields if n.lower() == name
        )
        + b"dkim-signature:"
        + field
    )
    key = serialization.load_pem_private_key(keys()["rsa"].private_key.encode(), None)
    assert isinstance(key, rsa.RSAPrivateKey)
    b = base64.b64encode(key.sign(signed, padding.PKCS1v15(), hashes.SHA256()))
    return b"DKIM-Signature: " + field + b + b"\r\n" + message


def test_signatures_expiry() -> None:
    """x= in the past fails; t= in the future fails (10 hours of slop, as dkimpy)."""
    signed = sign(PLAIN)
    verifier = dkimverify.Verifier(signed.replace(b"; h=", b"; x=1000; h=", 1))
    with pytest.raises(dkimverify.Failed, match="expired"):
        verifier.verify(0, keys()["rsa"].txt_record().encode())
    with pytest.raises(dkimverify.Failed, match="future"):
        dkimverify.Verifier(signed).verify(0, keys()["rsa"].txt_record().encode(), now=0)


@pytest.mark.parametrize(
    "body",
    [b"", b"\r\n", b"\r\n\r\n", b"x", b"x\r\n", b"x\r\n\r\n", b"\n\r\n", b"\r\r\n\r\n", b"a \t \r\n \r\n\t", b"x\r"],
)
def test_body_canonicalisation_is_dkimpys(body: bytes) -> None:
    """Both canonicalisations of awkward bodies (blank ones, stray CR and LF before the end) are dkimpy's."""
    from dkim.canonicalization import Relaxed, Simple

    assert dkimverify.canonical_body(body, relaxed=False) == Simple.canonicalize_body(body)
    assert dkimverify.canonical_body(body, relaxed=True) == Relaxed.canonicalize_body(body)


def test_linear_on_hostile_bodies() -> None:
    """A megabyte of blanks without a line end, or of blank lines, canonicalises in milliseconds (dkimpy's
    expression takes quadratic time on the first)."""
    import time

    for body in (b" " * 1_000_000 + b"x\r\n", b"\r\n" * 500_000, (b"\r\n" * 1000 + b"x") * 1000):
        start = time.process_time()
        dkimverify.canonical_body(body, relaxed=True)
        dkimverify.canonical_body(body, relaxed=False)
        assert time.process_time() - start < 0.5
