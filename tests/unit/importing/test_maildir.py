"""Reading a Maildir++ tree: folder names, flags and Dovecot keywords from file names, order, dates."""

from __future__ import annotations

import bz2
import gzip
import lzma
import os
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from relate.importing import maildir


def _file(folder: Path, sub: str, name: str, when: float) -> Path:
    (folder / sub).mkdir(parents=True, exist_ok=True)
    path = folder / sub / name
    path.write_bytes(b"Subject: x\n\n" + name.encode() + b"\n")
    os.utime(path, (when, when))
    return path


def test_folder_names_from_maildir_plus_plus_directories() -> None:
    """'.A.B' is A/B; each level modified UTF-7, or as it stands when it is not."""
    assert maildir.folder_name(".Work.Reports") == "Work/Reports"
    assert maildir.folder_name(".&AMk-t&AOk-") == "Été"
    assert maildir.folder_name(".Caf&-") == "Caf&"
    assert maildir.folder_name(".broken&AMk") == "broken&AMk"


def test_folders_inbox_first_and_only_real_maildirs(tmp_path: Path) -> None:
    """INBOX is the root; a '.X' with cur/ or new/ is a folder; other entries are not."""
    for d in ("cur", "new", "tmp", ".Sent/cur", ".Work.Reports/new", ".Work.Reports/cur", ".notafolder/x"):
        (tmp_path / d).mkdir(parents=True)
    (tmp_path / "dovecot-uidlist").write_text("3 V1 N1\n")
    assert [f.name for f in maildir.folders(tmp_path)] == ["INBOX", "Sent", "Work/Reports"]


def test_flags_and_keywords_from_the_file_name(tmp_path: Path) -> None:
    """D F P R S T, lower-case letters by dovecot-keywords; new/ carries no flags; mtime is the date."""
    (tmp_path / "dovecot-keywords").write_text("0 $Label1\n1 Junk\n3 bad word\n")
    _file(tmp_path, "cur", "1700000000.M1P1.host,S=20,W=21:2,FPRSTabcd", 1_700_000_000)
    _file(tmp_path, "new", "1700000001.M2P1.host", 1_700_000_001)
    found = list(maildir.messages(tmp_path))
    assert [set(m.flags) for m in found] == [
        {"\\Flagged", "$Forwarded", "\\Answered", "\\Seen", "\\Deleted", "$Label1", "Junk"},
        set(),
    ]
    assert found[0].internal_date == datetime.fromtimestamp(1_700_000_000, UTC)


def test_order_follows_dovecot_uidlist_then_names(tmp_path: Path) -> None:
    """Messages come in the UIDs Dovecot gave them; files it does not list follow, by name."""
    _file(tmp_path, "cur", "b:2,S", 1)
    _file(tmp_path, "cur", "a:2,", 2)
    _file(tmp_path, "new", "c", 3)
    _file(tmp_path, "new", "0-unlisted", 4)
    (tmp_path / "dovecot-uidlist").write_text("3 V123 N4 Gabc\n1 :c\n2 W40 :b\n3 :a\n")
    assert [m.path.name for m in maildir.messages(tmp_path)] == ["c", "b:2,S", "a:2,", "0-unlisted"]


@pytest.mark.parametrize("pack", [gzip.compress, bz2.compress, lzma.compress])
def test_files_dovecot_compressed_are_read_uncompressed(tmp_path: Path, pack: Callable[[bytes], bytes]) -> None:
    """A file whose ,S= size is not its size on disk and that starts with gzip, bzip2 or xz magic is unpacked."""
    message = b"Subject: packed\n\n" + b"line of text\n" * 500
    path = tmp_path / f"1700000000.M1P1.host,S={len(message)},W={len(message) + 501}:2,S"
    path.write_bytes(pack(message))
    assert maildir.read(path, 1 << 20) == message
    with pytest.raises(maildir.TooBig):
        maildir.read(path, 1000)


def test_a_plain_file_is_read_as_it_is_and_limited(tmp_path: Path) -> None:
    """Without a differing ,S= a file is read byte for byte, even one that happens to start like a gzip file."""
    data = b"\x1f\x8bnot really\n"
    path = tmp_path / f"1.M1.host,S={len(data)}:2,"
    path.write_bytes(data)
    assert maildir.read(path, 100) == data
    with pytest.raises(maildir.TooBig):
        maildir.read(path, 5)
