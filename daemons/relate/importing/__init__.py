"""Moving mail in (relatectl import): readers of the sources an old server leaves (Maildir, mbox, IMAP)."""

import re

# A keyword as IMAP allows it (RFC 9051 §9 flag-keyword: an atom; a leading \ is a system flag's).
KEYWORD = re.compile(r"^[!#$&'+-\[^-z|}~]{1,256}$")

# Messages larger than this are skipped (and counted) unless --max-size says otherwise.
DEFAULT_MAX_SIZE = 100 * 1024 * 1024
