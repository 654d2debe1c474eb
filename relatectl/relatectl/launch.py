"""The ``relatectl`` console script: ``--version`` alone is answered before the commands load.

Loading the command tree imports what the commands use (the database driver,
DNS, DKIM, the mail parser): about a quarter of a second, needless for the
version a packaging script or a bug report asks for.
"""

from __future__ import annotations

import sys


def main() -> None:
    if sys.argv[1:] == ["--version"]:
        from relate import __version__

        sys.stdout.write(f"relatectl {__version__}\n")
        return
    from relatectl.main import main as run

    run()
