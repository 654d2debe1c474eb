"""A daemon's log lines on stderr (outside systemd): the timestamp as logging's own format writes it."""

from __future__ import annotations

import logging
import re
import subprocess
import sys

from relate.runtime.daemon import _Timestamped

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def record(created: float) -> logging.LogRecord:
    rec = logging.LogRecord("relate.smtp", logging.INFO, __file__, 1, "smtp-session client=%s", ("127.0.0.1",), None)
    rec.created = created
    rec.msecs = float(int((created - int(created)) * 1000))
    return rec


def test_timestamps_match_logging_across_seconds() -> None:
    """Lines within one second, across a second and after a jump back in time read as logging.Formatter's."""
    ours, standard = _Timestamped(FORMAT), logging.Formatter(FORMAT)
    for created in (1_800_000_000.001, 1_800_000_000.999, 1_800_000_001.0, 1_800_000_001.5, 1_700_000_000.25):
        assert ours.format(record(created)) == standard.format(record(created))


def test_daemon_stderr_line() -> None:
    """setup_logging's stderr handler writes "date time,ms LEVEL logger: text", one line per record."""
    code = (
        "import logging; from relate.runtime.daemon import setup_logging; setup_logging('info', 'relate-smtp'); "
        "logging.getLogger('relate.smtp').info('smtp-session client=%s', '127.0.0.1'); "
        "logging.getLogger('relate.smtp').debug('not shown')"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    lines = done.stderr.splitlines()
    assert len(lines) == 1
    line = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} INFO relate\.smtp: smtp-session client=127\.0\.0\.1"
    assert re.fullmatch(line, lines[0])
