"""The msg-id reader THREAD relies on (relate.mail.threadids), on any Message-ID, In-Reply-To and References."""

from __future__ import annotations

from hypothesis import example, given
from hypothesis import strategies as st

from relate.mail.limits import MAX_THREAD_REFERENCES
from relate.mail.threadids import msg_ids, thread_ids

_PIECES = st.sampled_from(["<", ">", "@", "a", "b", " ", "\t", "\r\n ", "(", ")", '"'])
_FIELDS = st.one_of(st.none(), st.text(max_size=200), st.lists(_PIECES, max_size=60).map("".join))


@given(_FIELDS)
@example("<" * 5000 + "a@b")
@example("<a" * 3000)
def test_every_id_is_valid(value: str | None) -> None:
    """Every id found is <...> with one or more characters around an @ and no white space."""
    for found in msg_ids(value):
        assert found.startswith("<")
        assert found.endswith(">")
        local, at, domain = found[1:-1].partition("@")
        assert at
        assert local
        assert domain
        assert not any(c.isspace() for c in found)


@given(_FIELDS, _FIELDS, st.lists(st.text(max_size=30), max_size=60))
def test_thread_ids_shape(message_id: str | None, in_reply_to: str | None, references: list[str]) -> None:
    """The own id (or "") comes first, then at most MAX_THREAD_REFERENCES valid references."""
    ids = thread_ids(message_id, in_reply_to, references)
    assert ids[0] == "" or ids[0] in msg_ids(message_id)
    assert len(ids) <= 1 + MAX_THREAD_REFERENCES
    assert all(ref.startswith("<") and "@" in ref for ref in ids[1:])
