"""DKIM verification without DNS: our verifier's results, and dkimpy (which ARC uses) with OpenSSL's RSA check in
place of its own."""

from __future__ import annotations

from collections.abc import Callable

import dkim as dkimpy
import pytest

from relate.mail import dkim
from relate.mailauth import dkim as dkimv
from relate.mailauth.dns import TempError

MESSAGE = b"From: carol@remote.example\r\nTo: bob@example.com\r\nSubject: hi\r\n\r\nHello.\r\n"


@pytest.fixture(scope="module")
def key() -> dkim.DkimKey:
    return dkim.generate("sel", "rsa")


def results(message: bytes, record: str | Exception) -> list[tuple[str, str]]:
    head = message.split(b"\r\n\r\n", 1)[0] + b"\r\n\r\n"
    signatures = dkimv.find_signatures(head)
    keys: dict[int, str | Exception] = {s.index: record for s in signatures if not s.problem}
    return [(r.result, r.reason) for r in dkimv.verify(message, signatures, keys)]


def test_dkimpy_calls_our_rsa_check(key: dkim.DkimKey, monkeypatch: pytest.MonkeyPatch) -> None:
    """dkimpy's verification (ARC's) goes through the module-level RSA check we replace (a dkimpy upgrade that
    stops calling it would silently keep its slow pure-Python one: this test says so)."""
    assert dkimpy.RSASSA_PKCS1_v1_5_verify is dkimv.rsa_verify
    assert dkimpy.load_pk_from_dns is dkimv.load_pk
    assert dkimpy.rfc822_parse is dkimv.rfc822_parse
    calls = []

    def counting(*args: object) -> bool:
        calls.append(args)
        return dkimv.rsa_verify(*args)  # type: ignore[arg-type]

    loads = []

    def loading(*args: object, **kwargs: object) -> object:
        loads.append(args)
        return dkimv.load_pk(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(dkimpy, "RSASSA_PKCS1_v1_5_verify", counting)
    monkeypatch.setattr(dkimpy, "load_pk_from_dns", loading)
    signed = dkim.sign(MESSAGE, "remote.example", key) + MESSAGE
    record = key.txt_record().encode()
    assert dkimpy.DKIM(signed).verify(dnsfunc=lambda name, timeout=5: record)
    assert (len(calls), len(loads)) == (1, 1)


def test_rsa_pass_and_fail(key: dkim.DkimKey) -> None:
    """A good signature passes; a changed header fails the RSA check; a changed body fails the body hash."""
    signed = dkim.sign(MESSAGE, "remote.example", key) + MESSAGE
    assert results(signed, key.txt_record()) == [("pass", "")]
    assert results(signed.replace(b"Subject: hi", b"Subject: ho"), key.txt_record())[0][0] == "fail"
    assert results(signed.replace(b"Hello.", b"Hullo."), key.txt_record())[0][0] == "fail"


def test_ed25519_pass() -> None:
    """An Ed25519-SHA256 signature (RFC 8463) passes."""
    ed = dkim.generate("ed", "ed25519")
    assert results(dkim.sign(MESSAGE, "remote.example", ed) + MESSAGE, ed.txt_record()) == [("pass", "")]


def test_bad_keys_are_permerror(key: dkim.DkimKey) -> None:
    """A revoked key (empty p=), a malformed one and a missing one are permerror; DNS trouble temperror."""
    signed = dkim.sign(MESSAGE, "remote.example", key) + MESSAGE
    assert results(signed, "v=DKIM1; k=rsa; p=")[0][0] == "permerror"
    assert results(signed, "v=DKIM1; k=rsa; p=AAAA")[0][0] == "permerror"
    assert results(signed, LookupError("no key"))[0][0] == "permerror"
    assert results(signed, TempError("timeout"))[0][0] == "temperror"


def test_sha1_and_missing_tags_are_permerror() -> None:
    """rsa-sha1 is not accepted (RFC 8301); a signature without d= cannot be verified."""
    head = (
        b"DKIM-Signature: v=1; a=rsa-sha1; d=remote.example; s=sel; h=from; bh=x; b=y\r\n"
        b"DKIM-Signature: v=1; a=rsa-sha256; s=sel; h=from; bh=x; b=y\r\n\r\n"
    )
    found = dkimv.find_signatures(head)
    assert [bool(s.problem) for s in found] == [True, True]
    assert [r.result for r in dkimv.verify(head, found, {})] == ["permerror", "permerror"]


@pytest.mark.parametrize(
    "message",
    [
        MESSAGE,
        b"From: a@x\r\nSubject: folded\r\n  over two lines\r\n\r\nbody\r\n\r\n\r\n",
        b"From: a@x\r\n\r\nbare\nline feeds in the body\r\n",  # dkimpy makes them CRLF: its own parse
        b"From sender@x Mon Dec  7 10:00:00 2026\r\nFrom: a@x\r\n\r\nmbox line\r\n",
        b"From: a@x\r\nno blank line\r\n",
        b"\r\nno header\r\n\r\n",
    ],
)
def test_message_parse_is_dkimpys(message: bytes) -> None:
    """Our parse of a message for dkimpy (header fields and body, or the error) is exactly the one it replaces."""

    def outcome(parse: Callable[[bytes], object]) -> object:
        try:
            return parse(message)
        except dkimpy.DKIMException as exc:
            return repr(exc)

    assert outcome(dkimv.rfc822_parse) == outcome(dkimv._DKIMPY_RFC822_PARSE)
