"""THREAD's linking (relate.imap.thread) on any web of Message-IDs and references senders can make up."""

from __future__ import annotations

import re

from hypothesis import example, given
from hypothesis import strategies as st

from relate.imap.thread import References, render

_IDS = st.sampled_from(["", "<a@x>", "<b@x>", "<c@x>", "<d@x>", "<e@x>"])
_MESSAGES = st.lists(
    st.tuples(
        st.floats(0, 10, allow_nan=False),
        st.lists(_IDS, min_size=1, max_size=6),
        st.sampled_from([None, "", "a", "Re: a", "b", "Fwd: b", "[x] a (fwd)"]),
    ),
    max_size=25,
)


def _balanced(data: str) -> bool:
    depth = 0
    for ch in data:
        depth += {"(": 1, ")": -1}.get(ch, 0)
        if depth < 0:
            return False
    return depth == 0


@given(_MESSAGES, st.booleans())
@example([(1.0, ["<a@x>", "<b@x>"], "a"), (1.0, ["<b@x>", "<a@x>"], "a"), (1.0, ["<a@x>", "<a@x>"], None)], False)
@example([(1.0, ["", "<a@x>", "<b@x>", "<a@x>"], None)], True)
def test_every_message_once(messages: list[tuple[float, list[str], str | None]], refs: bool) -> None:
    """Whatever the ids, each message appears exactly once, in balanced parentheses, and threads never loop."""
    threader = References(refs=refs)
    threader.add([(uid, sent, ids) for uid, (sent, ids, _) in enumerate(messages, 1)])
    subjects = {uid: subject for uid, (_, _, subject) in enumerate(messages, 1)}
    found = threader.threads({uid: subjects[uid] for uid in threader.subjects_needed()})
    data = render(found, lambda uid: uid).decode()
    assert sorted(int(n) for n in re.findall(r"\d+", data)) == list(range(1, len(messages) + 1))
    assert _balanced(data)
    assert "()" not in data
