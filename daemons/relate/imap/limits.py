"""Bounds on what one IMAP command may ask for, in one place.

Policy: every count and length a client controls has a ceiling here (or a
config key in ``imap.*`` where an admin may want to move it: line length,
literal size, bad commands, memory). A command past one is refused with a
tagged BAD naming the limit (a mailbox name that can never exist gets
``NO [NONEXISTENT]`` or ``NO [CANNOT]`` instead), the session goes on, and
the work any accepted command costs stays linear in its size. The values sit
well above what real clients send (Thunderbird, Apple Mail, Outlook, mutt,
mbsync, K-9 were the yardstick) and far below what would let one session
cost the others.

Octets of a command outside the APPEND message (its lines and every other
literal together) are bounded by ``imap.max_line_length``; only an APPEND's
message literal may be bigger, up to ``imap.max_literal_size``.
"""

from __future__ import annotations

from relate.store import mailboxes

# Literals in one command (LOGIN has 2, a SEARCH with non-ASCII strings a few, ID at most 60).
MAX_LITERALS = 64

# Parentheses (and NOT/OR operands) nested in one SEARCH.
MAX_NESTING = 64
# Search keys in one SEARCH, counting every key at every level: each costs work per message.
MAX_SEARCH_KEYS = 500

# LIST: patterns in one command (RFC 5258 multiple patterns), and the length of reference + pattern
# in characters. A stored name is at most MAX_MAILBOX_NAME octets, so a pattern that could match one
# needs at most that many literal characters, with wildcards between them.
MAX_LIST_PATTERNS = 32
MAX_PATTERN_LENGTH = 2048

# Mailbox names: octets of UTF-8, and levels below the root (a/b/c has 3): the store's, which REST keeps too.
MAX_MAILBOX_NAME = mailboxes.MAX_NAME
MAX_MAILBOX_DEPTH = mailboxes.MAX_DEPTH

# FETCH: items in one command, field names in one HEADER.FIELDS list, levels of a part number (1.2.3).
MAX_FETCH_ITEMS = 100
MAX_HEADER_FIELDS = 200
MAX_SECTION_DEPTH = 32

# Flags in one STORE or APPEND, and the length of one keyword in octets.
MAX_FLAGS = 100
MAX_KEYWORD_LENGTH = 256

# RFC 2971 §3.3 (ID): at most 30 field-value pairs, fields of at most 30 octets, values of at most 1024.
MAX_ID_PARAMS = 30
MAX_ID_FIELD = 30
MAX_ID_VALUE = 1024

# LOGIN user and password, and each part of an AUTHENTICATE PLAIN response, in octets.
MAX_CREDENTIAL = 1024
# An AUTHENTICATE response line (base64), in octets: three credentials and their separators, encoded.
MAX_SASL_RESPONSE = 4 * (3 * MAX_CREDENTIAL + 2 + 2) // 3

# Capabilities named in one ENABLE.
MAX_ENABLE = 32
# Items in one STATUS (or LIST RETURN (STATUS (...))) list; RFC 9051 and RFC 8438 define 8.
MAX_STATUS_ITEMS = 16

# SEARCH and SORT return options in one command (RFC 4731, RFC 5267 define 8), and the tags one
# CANCELUPDATE names; criteria in one SORT (RFC 5256 and RFC 5957 define 9, each usable once in practice).
MAX_RETURN_OPTIONS = 16
MAX_SORT_CRITERIA = 16

# Resources named in one SETQUOTA (RFC 9208 defines 4; it is refused anyway, but parsed first).
MAX_QUOTA_RESOURCES = 16

# APPEND: messages in one MULTIAPPEND (RFC 3502), parts of one CATENATE message (RFC 4469), and the
# length of one IMAP URL there (RFC 5092) in octets. Octets of all the messages of one APPEND together
# are bounded by imap.max_append_size (each message by imap.max_literal_size).
MAX_APPEND_MESSAGES = 100
MAX_CATENATE_PARTS = 100
MAX_URL_LENGTH = 4096

# NOTIFY (RFC 5465): event groups in one NOTIFY SET, mailboxes named in one group, events in one group.
MAX_NOTIFY_GROUPS = 16
MAX_NOTIFY_MAILBOXES = 100
MAX_NOTIFY_EVENTS = 16
