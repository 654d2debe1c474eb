"""THREAD's algorithms (relate.imap.thread): RFC 5256 §3 REFERENCES and ORDEREDSUBJECT, REFS, and the wire form."""

from __future__ import annotations

import re

from relate.imap.thread import References, Tree, ordered_subject, render
from relate.mail.basesubject import base_subject

# (uid, sent, ids: [own id or "", references...], subject)
Message = tuple[int, float, list[str], str | None]


def threads(messages: list[Message], *, refs: bool = False, number: dict[int, int] | None = None, **bounds: int) -> str:
    """The THREAD response data for ``messages`` (UID order), numbered as ``number`` says (default: UIDs)."""
    threader = References(refs=refs, **bounds)
    threader.add([(uid, sent, ids) for uid, sent, ids, _ in messages])
    subjects = {uid: subject for uid, _, _, subject in messages}
    found = threader.threads({uid: subjects[uid] for uid in threader.subjects_needed()})
    return render(found, (number or {}).get if number else lambda uid: uid).decode()


def uids_of(data: str) -> list[int]:
    return [int(n) for n in re.findall(r"\d+", data)]


def test_references_break_the_older_link_and_refuse_loops() -> None:
    """imaptest thread: a reply's own last reference wins over an older link, and no link makes a loop."""
    messages: list[Message] = [
        (1, 3.0, ["<a@b>"], None),
        (2, 1.0, ["<b@b>", "<a@b>", "<c@b>"], None),
        (3, 2.0, ["<c@b>", "<b@b>"], None),
    ]
    assert threads(messages) == "(3 2)(1)"
    # Message 1 expunged: the others are 1 and 2 now; the dummy <a@b> has no message left under it.
    assert threads(messages[1:], number={2: 1, 3: 2}) == "(2 1)"


def test_duplicate_message_ids() -> None:
    """A Message-ID already taken by an earlier message counts as none; subject gathering may still join them."""
    assert threads([(1, 1.0, ["<a@b>"], None), (2, 1.0, ["<a@b>"], None)]) == "(1)(2)"
    assert threads([(1, 1.0, ["<a@b>"], "foo"), (2, 2.0, ["<a@b>"], "Re: foo")]) == "(1 2)"


def test_dummies() -> None:
    """A missing parent with one child gives way to it; with two it stays, as a parenthesized pair of threads."""
    assert threads([(1, 1.0, ["<a@b>"], "foo"), (2, 2.0, ["<b@b>", "<c@b>"], "Re: foo")]) == "(1 2)"
    assert threads([(1, 1.0, ["", "<a@b>"], None), (2, 2.0, ["", "<a@b>"], None)]) == "((1)(2))"


def test_siblings_and_chains() -> None:
    """imaptest thread7: children sort by date then number; one child continues the chain unparenthesized."""
    messages: list[Message] = [
        (1, 1.0, ["<a@b>"], None),
        (2, 1.0, ["<b@b>", "<a@b>"], None),
        (3, 1.0, ["<c@b>", "<b@b>"], None),
        (4, 1.0, ["<b@b>", "<a@b>"], None),
    ]
    assert threads(messages) == "(1 (2 3)(4))"
    assert threads([messages[0], messages[2], messages[3]], number={1: 1, 3: 2, 4: 3}) == "(1 3 2)"


def test_subject_gathering() -> None:
    """Step 5: threads with one base subject join: a reply goes below the original, else both below a dummy."""
    messages: list[Message] = [
        (1, 1.0, ["<1@x>"], "Plans"),
        (2, 2.0, ["<2@x>"], "Re: plans"),
        (3, 3.0, ["<3@x>"], "Other"),
        (4, 4.0, ["<4@x>"], "other"),
        (5, 5.0, ["<5@x>"], ""),
    ]
    assert threads(messages) == "(1 2)((3)(4))(5)"


def test_refs_orders_threads_by_their_newest_message() -> None:
    """REFS does not join by subject, and places each thread by its newest message's date."""
    messages: list[Message] = [
        (1, 1.0, ["<1@x>"], "a"),
        (2, 2.0, ["<2@x>"], "a"),
        (3, 3.0, ["<3@x>", "<1@x>"], "Re: a"),
    ]
    assert threads(messages) == "((1 3)(2))"  # REFERENCES: two non-replies with one subject share a dummy
    assert threads(messages, refs=True) == "(2)(1 3)"


def test_ordered_subject() -> None:
    """ORDEREDSUBJECT: one thread per base subject under its oldest message, threads in that message's order."""
    messages = [(1, 10.0, "a"), (2, 9.0, "b"), (3, 8.0, "Re: a"), (4, 7.0, "b"), (5, 30.0, "a"), (6, 29.0, "x")]
    order = sorted(messages, key=lambda m: (base_subject(m[2]).text, m[1], m[0]))
    keys = [base_subject(m[2]).text for m in order]
    found = ordered_subject([m[0] for m in order], [m[1] for m in order], [sorted(set(keys)).index(k) for k in keys])
    assert render(found, lambda uid: uid) == b"(4 2)(3 (1)(5))(6)"


def test_deep_chain_without_recursion() -> None:
    """A reply chain 60,000 messages deep is linked and written without recursing."""
    count = 60_000
    messages: list[Message] = [(n, float(n), [f"<{n}@x>", f"<{n - 1}@x>"], None) for n in range(1, count + 1)]
    data = threads(messages, refs=True)
    assert data == "(" + " ".join(str(n) for n in range(1, count + 1)) + ")"


def test_loop_checks_are_bounded() -> None:
    """Past imap.thread_max_walk steps of loop checking, links are refused; every message still appears once."""
    # Messages arrive before the ones they answer: each new parent sits under a long chain already.
    messages: list[Message] = [(n, float(n), [f"<{n}@x>", f"<{n + 1}@x>"], None) for n in range(1, 400)]
    assert threads(messages).count(" ") == 398  # one chain 1 <- 2 <- ... <- 399
    bounded = threads(messages, walk=50)
    assert sorted(uids_of(bounded)) == list(range(1, 400))
    assert bounded.count(" ") < 398


def test_dummies_are_bounded() -> None:
    """Past imap.thread_max_dummies ids that no message has, further ones are not kept; every message appears."""
    messages: list[Message] = [(n, float(n), [f"<{n}@x>", f"<gone{n}@x>", f"<{n - 1}@x>"], None) for n in range(1, 50)]
    chain = "(" + " ".join(map(str, range(1, 50))) + ")"
    assert threads(messages, refs=True) == chain
    threader = References(refs=True, dummies=5)
    threader.add([(uid, sent, ids) for uid, sent, ids, _ in messages])
    assert len(threader._forest.parent) == 49 + 5  # the messages, and 5 of the 50 ids none of them has
    threader.subjects_needed()
    assert render(threader.threads({}), lambda uid: uid).decode() == chain  # the links between messages hold


def test_tree_shape() -> None:
    """The nested form lists each message under its parent."""
    threader = References(refs=True)
    threader.add([(1, 1.0, ["<a@x>"]), (2, 2.0, ["<b@x>", "<a@x>"])])
    threader.subjects_needed()
    found: list[Tree] = threader.threads({})
    assert found == [(1, [(2, [])])]


def test_refs_places_dummy_rooted_threads_first_on_equal_dates() -> None:
    """REFS, as Dovecot: on one newest date, a thread whose root is a missing message comes before a real root."""
    messages: list[Message] = [
        (1, 5.0, ["<1@x>"], None),
        (2, 5.0, ["<2@x>", "<gone@x>"], None),  # shown as (2), but its thread's root is the missing <gone@x>
        (3, 5.0, ["<3@x>", "<also-gone@x>"], None),
    ]
    assert threads(messages, refs=True) == "(2)(3)(1)"
    assert threads(messages) == "(1)(2)(3)"  # REFERENCES: the dummy gives way to its one child, placed by it
