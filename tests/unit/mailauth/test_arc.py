"""ARC chains without DNS: discovery of the sets, dkimpy's validation with the keys given, and the bounds."""

from __future__ import annotations

import dkim as dkimpy
import pytest

from relate.mail import dkim
from relate.mailauth import arc
from relate.mailauth.dns import TempError

MESSAGE = b"From: carol@remote.example\r\nTo: bob@example.com\r\nSubject: hi\r\n\r\nHello.\r\n"
NAME = b"arc._domainkey.lists.example."


@pytest.fixture(scope="module")
def key() -> dkim.DkimKey:
    return dkim.generate("arc", "rsa")


def sealed(key: dkim.DkimKey, message: bytes = MESSAGE, sealer: bytes = b"lists.example") -> bytes:
    message = b"Authentication-Results: " + sealer + b"; dmarc=pass\r\n" + message
    return b"".join(dkimpy.arc_sign(message, b"arc", sealer, key.private_key.encode(), sealer)) + message


def chain_of(message: bytes) -> arc.Chain | None:
    return arc.find_chain(message.split(b"\r\n\r\n", 1)[0] + b"\r\n\r\n")


def test_no_arc_fields_no_chain() -> None:
    """A header without ARC fields has no chain (arc=none)."""
    assert chain_of(MESSAGE) is None


def test_a_sealed_message_passes_with_its_key(key: dkim.DkimKey) -> None:
    """One ARC set, its key given: pass, oldest-pass 0, the sealer and what it saw read back."""
    message = sealed(key)
    chain = chain_of(message)
    assert chain is not None
    assert (chain.instances, chain.keys, chain.sealers) == (1, (("arc", "lists.example"),), {1: "lists.example"})
    result = arc.verify(message, chain, {NAME: key.txt_record()})
    assert (result.result, result.oldest_pass, result.sealer) == ("pass", 0, "lists.example")
    assert arc.vouched(result, ["lists.example."]) == "lists.example"
    assert arc.vouched(result, ["other.example"]) == ""


def test_missing_or_unanswered_key_fails(key: dkim.DkimKey) -> None:
    """No key published: fail; DNS did not answer: fail marked unsure, with the lookup in the reason."""
    message = sealed(key)
    chain = chain_of(message)
    assert chain is not None
    missing = arc.verify(message, chain, {NAME: None})
    assert (missing.result, missing.unsure) == ("fail", False)
    unanswered = arc.verify(message, chain, {NAME: TempError("TXT arc._domainkey.lists.example: Timeout")})
    assert (unanswered.result, unanswered.unsure) == ("fail", True)
    assert "Timeout" in unanswered.reason


def test_more_sets_than_the_bound_fail_unverified() -> None:
    """Eleven seals (over MAX_SETS) or an i= over it: fail, no key asked for, nothing hashed."""
    seals = [f"ARC-Seal: i={i}; cv=pass; a=rsa-sha256; d=x.example; s=s; b=AA==\r\n" for i in range(1, 12)]
    message = "".join(seals).encode() + MESSAGE
    chain = chain_of(message)
    assert chain is not None
    assert chain.problem
    assert chain.keys == ()
    assert arc.verify(message, chain, {}).result == "fail"
    late = chain_of(b"ARC-Seal: i=11; cv=pass; a=rsa-sha256; d=x.example; s=s; b=AA==\r\n" + MESSAGE)
    assert late is not None
    assert "over" in late.problem
