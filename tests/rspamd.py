"""The test suite's rspamd: relate.testing.rspamd's server, skipped when the binary is missing (failing under CI)."""

from __future__ import annotations

from pathlib import Path

from relate.testing.rspamd import RspamdServer as _Server
from tests.daemons import need


class RspamdServer(_Server):
    def __init__(self, directory: Path) -> None:
        super().__init__(directory, need("rspamd"))
