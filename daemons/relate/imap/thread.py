"""THREAD (RFC 5256 §3): ORDEREDSUBJECT, REFERENCES and REFS, as pure functions over what the store read.

Policy:

- Each message comes with the ids ingest read (``relate.mail.threadids``:
  its own valid Message-ID, then its references, nearest last). One without
  an id, or whose id an earlier (lower-numbered) message already has, gets
  an id of its own that nothing references (RFC 5256 §3, step 1.A).
- REFERENCES follows RFC 5256 §3 steps 1 to 6. REFS (draft-ietf-morg-inthread,
  as Dovecot implements it) is REFERENCES without step 5 (no grouping by
  subject), with each thread placed by its newest message's sent date.
  ORDEREDSUBJECT groups messages by base subject, each group under its
  oldest message, groups in the order of those messages.
- Ties in sent date fall to the UID (the message number's order).

Cost and bounds: linear in the messages and the references read, except the
loop check of step 1 (is the new parent a descendant of the child?), which
walks up from the parent; it runs only when the child already has children,
and all walks of one command together take at most ``imap.thread_max_walk``
steps, after which a link that would need one is not made (as if it made a
loop). Memory is a few small entries per message-id; at most
``imap.thread_max_dummies`` ids that no message here has are kept, references
to further ones are skipped. Nothing recurses: every tree walk keeps its own
stack. The work is meant for a worker thread, a batch of messages at a time.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Sequence

from relate.mail.basesubject import base_subject
from relate.store.sorting import ThreadRow

__all__ = ["ALGORITHMS", "References", "ordered_subject", "render"]

ALGORITHMS = ("ORDEREDSUBJECT", "REFERENCES", "REFS")

# A thread as nested nodes: (message UID or 0 for a dummy, its children).
Tree = tuple[int, list["Tree"]]


class _Forest:
    """Step 1's containers: one per message-id (or per message without a usable one), linked by parent index."""

    def __init__(self, *, walk: int, dummies: int) -> None:
        self.index: dict[str, int] = {}
        self.parent: list[int] = []
        self.children: list[int] = []  # how many children each container has
        self.uid: list[int] = []  # 0: a dummy (a referenced id no message here has)
        self.sent: list[float] = []
        self.walk_left = walk
        self.dummies_left = dummies

    def new(self) -> int:
        self.parent.append(-1)
        self.children.append(0)
        self.uid.append(0)
        self.sent.append(0.0)
        return len(self.parent) - 1

    def _descends(self, node: int, ancestor: int) -> bool:
        """Whether ``node`` is ``ancestor`` or below it; True (no link) once the walking budget is spent."""
        if self.children[ancestor] == 0:
            return node == ancestor
        while node >= 0:
            if node == ancestor:
                return True
            self.walk_left -= 1
            if self.walk_left < 0:
                return True
            node = self.parent[node]
        return False

    def link(self, parent: int, child: int) -> None:
        """Make ``parent`` the parent of a ``child`` that has none, unless that would make a loop."""
        if self.parent[child] >= 0 or self._descends(parent, child):
            return
        self.parent[child] = parent
        self.children[parent] += 1

    def unlink(self, child: int) -> None:
        old = self.parent[child]
        if old >= 0:
            self.children[old] -= 1
            self.parent[child] = -1

    def container(self, msg_id: str) -> int:
        found = self.index.get(msg_id)
        if found is None:
            if self.dummies_left <= 0:
                return -1
            self.dummies_left -= 1
            found = self.index[msg_id] = self.new()
        return found

    def add(self, uid: int, sent: float, ids: Sequence[str]) -> None:
        """Step 1 for one message (messages come in UID order)."""
        own = ids[0] if ids else ""
        node = self.index.get(own) if own else None
        if node is None:
            node = self.new()
            if own:
                self.index[own] = node
        elif self.uid[node]:
            node = self.new()  # a duplicate Message-ID: this message gets one of its own
        else:
            self.dummies_left += 1  # a referenced id is a message here after all
        self.uid[node] = uid
        self.sent[node] = sent
        chain = [c for c in (self.container(r) for r in ids[1:]) if c >= 0]
        for parent, child in itertools.pairwise(chain):  # step 1.A
            if parent != child:
                self.link(parent, child)
        self.unlink(node)  # step 1.B: the message's own last reference decides its parent
        if chain and chain[-1] != node:
            self.link(chain[-1], node)


def _key(forest: _Forest, kids: dict[int, list[int]]) -> Callable[[int], tuple[float, int]]:
    """Sort key of a node: its sent date and UID; a dummy's, those of its first child (sorted already)."""

    def key(node: int) -> tuple[float, int]:
        if forest.uid[node] == 0:
            node = kids[node][0]
        return forest.sent[node], forest.uid[node]

    return key


def _prune(forest: _Forest, *, promote: bool) -> tuple[list[int], dict[int, list[int]]]:
    """Steps 2 and 3: the roots, and each real message's children, dummies gone.

    A message below dummies hangs from its nearest real ancestor, or from its root dummy when it has
    none; a root dummy with no child disappears, and one with one child gives way to it if ``promote``
    (REFS keeps it: it shows as its child, but places its thread as Dovecot does, ahead on equal dates).
    """
    below: dict[int, list[int]] = {}
    for node, parent in enumerate(forest.parent):
        if parent >= 0:
            below.setdefault(parent, []).append(node)
    kids: dict[int, list[int]] = {}
    roots: list[int] = []
    for root, parent in enumerate(forest.parent):
        if parent >= 0:
            continue
        stack = [(child, root) for child in below.get(root, ())]
        while stack:
            node, anchor = stack.pop()
            if forest.uid[node]:
                kids.setdefault(anchor, []).append(node)
                anchor = node
            stack.extend((child, anchor) for child in below.get(node, ()))
        if forest.uid[root]:
            roots.append(root)
        elif promote and len(kids.get(root, ())) == 1:
            roots.append(kids.pop(root)[0])
        elif root in kids:
            roots.append(root)
    return roots, kids


def _gather_subjects(
    forest: _Forest, roots: list[int], kids: dict[int, list[int]], subjects: dict[int, str | None]
) -> list[int]:
    """Step 5: threads whose (first) messages share a base subject become one."""
    found: dict[int, tuple[str, bool]] = {}

    def subject_of(root: int) -> tuple[str, bool]:
        node = root if forest.uid[root] else kids[root][0]
        if node not in found:
            base = base_subject(subjects.get(forest.uid[node]))
            found[node] = (base.text, base.reply)
        return found[node]

    table: dict[str, int] = {}
    for root in roots:  # 5.B
        text, reply = subject_of(root)
        if not text:
            continue
        held = table.get(text)
        # Replace a real message in the table by a dummy, or a reply by a message that is none (5.B.iii).
        if held is None or (forest.uid[held] and (not forest.uid[root] or (subject_of(held)[1] and not reply))):
            table[text] = root
    out: list[int] = []
    moved: set[int] = set()  # roots that went below another thread
    for root in roots:  # 5.C
        if root in moved:
            continue
        text, reply = subject_of(root)
        held = table.get(text) if text else None
        if held is None or held == root:
            out.append(root)
            continue
        if not forest.uid[root]:  # both dummies (5.B put a dummy in the table): the children become siblings
            kids[held].extend(kids.pop(root))
        elif not forest.uid[held] or (reply and not subject_of(held)[1]):
            kids.setdefault(held, []).append(root)
        else:  # a new dummy over both, in the table from now on
            dummy = forest.new()
            kids[dummy] = [held, root]
            table[text] = dummy
            moved.add(held)
            out.append(dummy)
        moved.add(root)
    return [r for r in out if r not in moved]


def _sort_all(forest: _Forest, roots: list[int], kids: dict[int, list[int]]) -> None:
    """Steps 4 and 6: every set of siblings by sent date (real messages' children first, then roots)."""
    key = _key(forest, kids)
    for node, children in kids.items():
        if forest.uid[node]:
            children.sort(key=key)
    for node in roots:
        if not forest.uid[node]:
            kids[node].sort(key=key)
    roots.sort(key=key)


def _newest(forest: _Forest, root: int, kids: dict[int, list[int]]) -> tuple[float, int, int]:
    """REFS: a thread's place: the newest sent date in it, then its root's UID (0 for a dummy, as Dovecot
    does), then its first message's UID (two dummies on one date: Dovecot's order there is arbitrary)."""
    newest = float("-inf")
    stack = [root]
    while stack:
        node = stack.pop()
        if forest.uid[node]:
            newest = max(newest, forest.sent[node])
        stack.extend(kids.get(node, ()))
    return newest, forest.uid[root], forest.uid[root] or forest.uid[kids[root][0]]


class References:
    """THREAD=REFERENCES, or with ``refs`` THREAD=REFS: fed messages in UID order, a batch at a time.

    :meth:`add` runs step 1; :meth:`subjects_needed` names the messages whose subjects step 5 reads
    (none for REFS), and :meth:`threads` does the rest with those subjects.
    """

    def __init__(self, *, refs: bool = False, walk: int = 5_000_000, dummies: int = 500_000) -> None:
        self.refs = refs
        self._forest = _Forest(walk=walk, dummies=dummies)
        self._roots: list[int] = []
        self._kids: dict[int, list[int]] = {}

    def add(self, rows: Iterable[ThreadRow]) -> None:
        for uid, sent, ids in rows:
            self._forest.add(uid, sent, ids)

    def subjects_needed(self) -> list[int]:
        """Steps 2 to 4; the UIDs of the messages that stand for a thread (whose subjects step 5 compares)."""
        forest = self._forest
        self._roots, self._kids = _prune(forest, promote=not self.refs)
        if self.refs:
            return []
        _sort_all(forest, self._roots, self._kids)
        return [forest.uid[r] if forest.uid[r] else forest.uid[self._kids[r][0]] for r in self._roots]

    def threads(self, subjects: dict[int, str | None]) -> list[Tree]:
        """The threads in order (step 5 with the ``subjects`` of :meth:`subjects_needed`, and 6)."""
        forest, roots, kids = self._forest, self._roots, self._kids
        if self.refs:
            key = _key(forest, kids)
            for children in kids.values():
                children.sort(key=key)
            roots.sort(key=lambda root: _newest(forest, root, kids))
        else:
            roots = _gather_subjects(forest, roots, kids, subjects)
            _sort_all(forest, roots, kids)
        return [_tree(forest, root, kids) for root in roots]


def _tree(forest: _Forest, root: int, kids: dict[int, list[int]]) -> Tree:
    """The nested form of one thread, built without recursion."""
    top: Tree = (forest.uid[root], [])
    stack = [(root, top)]
    while stack:
        node, made = stack.pop()
        for child in kids.get(node, ()):
            sub: Tree = (forest.uid[child], [])
            made[1].append(sub)
            stack.append((child, sub))
    return top


def ordered_subject(uids: Sequence[int], sent: Sequence[float], groups: Sequence[int]) -> list[Tree]:
    """THREAD=ORDEREDSUBJECT from the messages in (base subject, sent date, UID) order and their subject groups."""
    threads: list[tuple[float, int, Tree]] = []
    for i, uid in enumerate(uids):
        if i and groups[i] == groups[i - 1]:
            threads[-1][2][1].append((uid, []))
        else:
            threads.append((sent[i], uid, (uid, [])))
    threads.sort(key=lambda t: (t[0], t[1]))
    return [t[2] for t in threads]


def render(threads: Sequence[Tree], number: Callable[[int], int | None]) -> bytes:
    """The THREAD response's data (``(1 2 (3)(4))(5)``), UIDs shown as ``number`` says (a message
    ``number`` gives None for is left out, its children taking its place)."""
    out: list[str] = []
    for thread in threads:
        out.append("(")
        stack: list[Tree | str] = [thread]
        while stack:
            item = stack.pop()
            if isinstance(item, str):
                out.append(item)
                continue
            uid, children = item
            shown = number(uid) if uid else None
            if shown is not None:
                out.append(str(shown))
                if children:
                    out.append(" ")
            if len(children) == 1:
                stack.append(children[0])
            else:
                for child in reversed(children):
                    stack += [")", child, "("]
        out.append(")")
    return "".join(out).encode()
