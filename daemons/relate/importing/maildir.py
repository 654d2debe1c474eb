"""Reading a Maildir++ tree as Dovecot writes it: folders, messages in order, flags, keywords, dates.

Policy:

- Folders: the root's ``cur``/``new`` is INBOX; a directory ``.A.B`` beside
  them is the folder ``A/B`` (Maildir++: ``.`` is the separator on disk,
  each name modified UTF-7, RFC 3501 §5.1.3, unless it does not decode).
  A directory without ``cur`` is a folder's parent only (nothing to read).
- Messages: every file in ``cur`` and ``new`` (``tmp`` holds deliveries in
  progress, never read). Order: the UIDs of Dovecot's ``dovecot-uidlist``
  where it names the file, then the rest by file name (which starts with
  the delivery time), so the copies get their UIDs in the source's order.
- Flags: the info after ``:2,`` (or ``!2,``/``;2,``, as some file systems
  need): D \\Draft, F \\Flagged, R \\Answered, S \\Seen, T \\Deleted,
  P the keyword $Forwarded; a lower-case letter is keyword number
  ``letter - 'a'`` of the folder's ``dovecot-keywords`` file. A message in
  ``new`` has no flags.
- The internal date is the file's mtime: Dovecot sets it to the time the
  message arrived (and reads it back as INTERNALDATE).
- Compressed files (Dovecot's zlib plugin: gzip, bzip2 or xz) are read
  uncompressed: a file whose ``,S=`` size (the message's) differs from its
  size on disk and that starts with one of those formats' magic bytes.
- Linear and bounded: listing a folder holds its file names, never the
  messages; a file is read when its turn comes.
"""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from relate.importing import KEYWORD
from relate.mail import mutf7

_SYSTEM = {"D": "\\Draft", "F": "\\Flagged", "R": "\\Answered", "S": "\\Seen", "T": "\\Deleted", "P": "$Forwarded"}
_INFO = re.compile(r"[:!;]2,([A-Za-z]*)$")
_SIZE = re.compile(r",S=(\d+)")
_COMPRESSED: tuple[tuple[bytes, Callable[[io.BytesIO], io.BufferedIOBase]], ...] = (
    (b"\x1f\x8b", lambda raw: gzip.GzipFile(fileobj=raw)),
    (b"BZh", bz2.BZ2File),
    (b"\xfd7zXZ\x00", lzma.LZMAFile),
)
_UIDLIST_LINE = re.compile(r"^(\d+)\s(?:.*?\s)?:(.+)$")


@dataclass(frozen=True)
class MaildirMessage:
    path: Path
    flags: tuple[str, ...]
    internal_date: datetime


@dataclass(frozen=True)
class Folder:
    name: str  # with "/" between levels; "INBOX" for the root
    path: Path


def folder_name(directory: str) -> str:
    """The folder a Maildir++ directory name (``.A.B``) stands for: ``A/B``."""
    parts = directory[1:].split(".")
    names = []
    for part in parts:
        try:
            names.append(mutf7.decode(part))
        except mutf7.InvalidName:
            names.append(part)  # not modified UTF-7 (Dovecot's UTF-8 option): the name as it stands
    return "/".join(names)


def folders(root: Path) -> list[Folder]:
    """The folders of the Maildir++ tree at ``root``, INBOX first, then by name."""
    found: list[Folder] = []
    if (root / "cur").is_dir() or (root / "new").is_dir():
        found.append(Folder("INBOX", root))
    others = []
    for entry in os.scandir(root):
        if entry.is_dir() and entry.name.startswith(".") and entry.name not in (".", ".."):
            path = Path(entry.path)
            if (path / "cur").is_dir() or (path / "new").is_dir():
                others.append(Folder(folder_name(entry.name), path))
    found.extend(sorted(others, key=lambda f: f.name))
    return found


def keywords(folder: Path) -> dict[int, str]:
    """Dovecot's ``dovecot-keywords``: keyword number -> name (lines ``0 $Label1``)."""
    table: dict[int, str] = {}
    try:
        text = (folder / "dovecot-keywords").read_text("utf-8", "replace")
    except FileNotFoundError:
        return table
    for line in text.splitlines():
        number, _, name = line.partition(" ")
        if number.isdigit() and KEYWORD.match(name):
            table[int(number)] = name
    return table


def uid_order(folder: Path) -> dict[str, int]:
    """Dovecot's ``dovecot-uidlist``: file base name (before the info) -> UID."""
    order: dict[str, int] = {}
    try:
        with (folder / "dovecot-uidlist").open(encoding="utf-8", errors="replace") as f:
            f.readline()  # the header: version, UIDVALIDITY, next UID...
            for line in f:
                m = _UIDLIST_LINE.match(line.rstrip("\n"))
                if m:
                    order[m.group(2)] = int(m.group(1))
    except FileNotFoundError:
        pass
    return order


def flags_of(name: str, table: dict[int, str]) -> tuple[str, ...]:
    """The flags a ``cur`` file name carries (see the module's policy)."""
    m = _INFO.search(name)
    if not m:
        return ()
    found = []
    for letter in m.group(1):
        if letter in _SYSTEM:
            found.append(_SYSTEM[letter])
        elif letter.islower() and ord(letter) - ord("a") in table:
            found.append(table[ord(letter) - ord("a")])
    return tuple(dict.fromkeys(found))


def base_name(name: str) -> str:
    m = _INFO.search(name)
    return name[: m.start()] if m else name


def messages(folder: Path) -> Iterator[MaildirMessage]:
    """The messages of one Maildir folder, in the source's order (see the module's policy)."""
    table = keywords(folder)
    order = uid_order(folder)
    entries: list[tuple[int, str, str]] = []  # (uid or a number past every uid, file name, sub-directory)
    past = 1 << 62
    for sub in ("cur", "new"):
        try:
            with os.scandir(folder / sub) as it:
                for entry in it:
                    if not entry.name.startswith("."):
                        entries.append((order.get(base_name(entry.name), past), entry.name, sub))
        except FileNotFoundError:
            continue
    entries.sort()
    for _, name, sub in entries:
        path = folder / sub / name
        try:
            mtime = path.stat().st_mtime
        except FileNotFoundError:
            continue  # expunged or moved by a client meanwhile
        flags = flags_of(name, table) if sub == "cur" else ()
        yield MaildirMessage(path, flags, datetime.fromtimestamp(mtime, UTC))


class TooBig(Exception):
    """A message larger than the limit it was read with (``size``: as far as it was read)."""

    def __init__(self, size: int) -> None:
        super().__init__(size)
        self.size = size


def declared_size(name: str) -> int | None:
    """The message's size that a Dovecot file name carries (``,S=``), if it does."""
    m = _SIZE.search(base_name(name))
    return int(m.group(1)) if m else None


def read(path: Path, max_size: int) -> bytes:
    """A message file's octets, uncompressed (see the module's policy); TooBig past ``max_size``."""
    on_disk = path.stat().st_size
    declared = declared_size(path.name)
    if on_disk > max_size and declared is None:
        raise TooBig(on_disk)
    with path.open("rb") as f:
        data = f.read(max_size + 1)
    if declared is not None and declared != on_disk:
        for magic, opener in _COMPRESSED:
            if data.startswith(magic):
                if len(data) > max_size:
                    raise TooBig(on_disk)
                with opener(io.BytesIO(data)) as unpacked:
                    data = unpacked.read(max_size + 1)
                break
    if len(data) > max_size:
        raise TooBig(len(data))
    return data
