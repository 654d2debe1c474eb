"""The limits that bound the work of every parser in ``relate.mail``.

Policy: whatever a message contains, parsing it costs time linear in its size
and never recurses as deep as its input asks. Past a limit the parse degrades:
the data it could not interpret is left undecoded or skipped, never an error,
and ``ParsedMessage.limits`` names each limit the message reached. The raw
bytes are always stored whole, so IMAP and the API still serve everything a
parse skipped (BODY[...] sections, ``/raw``, ``part_content``).

The values are far above what real mail needs (the usual figure is given
beside each) and low enough that a hostile 50 MB message costs at most about a
second of CPU, in the worker thread that parses large messages.
"""

from __future__ import annotations

# The names ParsedMessage.limits uses for the limits below.
NOTES = frozenset(
    {
        "fields",  # MAX_FIELDS
        "field-bytes",  # MAX_FIELD_BYTES
        "encoded-words",  # MAX_ENCODED_WORDS
        "header-work",  # MAX_HEADER_WORK
        "nesting",  # MAX_NESTING
        "addresses",  # MAX_ADDRESSES
        "boundary",  # MAX_BOUNDARY
        "mime-depth",  # MAX_MIME_DEPTH
        "parts",  # MAX_PARTS
        "body-bytes",  # MAX_BODY_BYTES (text_body or html_body holds only the start of its part)
        "html-scan",  # MAX_HTML_SCAN
    }
)

# --- header fields -------------------------------------------------------------

# Occurrences of the fields parse_message reads (Subject, From, Content-Type...)
# examined per MIME entity; others are skipped unread. Real mail: under 30.
MAX_FIELDS = 100
# Header fields headers.decoded_fields() returns for showing a header (all names
# count). Real mail: 20 to 80, long Received chains a few hundred.
MAX_SHOWN_FIELDS = 1000
# Bytes of one field's value that are unfolded and decoded (a longer value is cut
# at a fold). Real mail: a few KiB for long To: or References: lists.
MAX_FIELD_BYTES = 64 * 1024
# RFC 2047 encoded words decoded per field; later ones stay as text. Real mail: tens.
MAX_ENCODED_WORDS = 1000
# Characters of header values per message read by the Python-level parsers (address
# lists and MIME parameters not of the simplest forms, encoded words); later values
# are left unparsed or undecoded. About a microsecond each on hostile input, so at
# most about 70 ms of CPU per message; real mail: well under 10 KiB (the simple forms
# take regular expressions that cost nothing here).
MAX_HEADER_WORK = 64 * 1024
# Bytes of a field's values (all occurrences together) that field_addresses reads
# before answering None: it runs on the SMTP daemon's event loop (hostile input:
# under 5 ms). Real From fields: under 200 bytes.
MAX_SENDER_FIELD_BYTES = 4 * 1024
# Comment nesting in a structured field (RFC 5322 §3.2.2); deeper is malformed.
# Real mail: 1, rarely 2.
MAX_NESTING = 16
# Addresses per address field (From, To, Cc...); later ones are skipped.
MAX_ADDRESSES = 1000
# Message-IDs kept from References (RFC 5322 §3.6.4). Long threads: about 100.
MAX_REFERENCES = 500
# Of those, the last ones threading links by (relate.mail.threadids): the nearest ancestors decide a
# message's thread. Replies usually name their parent last; deep threads reach a few dozen.
MAX_THREAD_REFERENCES = 20
# Characters of a Date field that are parsed; a longer one is malformed (RFC 5322
# §3.3 dates are about 40 characters, with a comment about 70).
MAX_DATE_CHARS = 256
# A MIME boundary longer than this is unusable (RFC 2046 §5.1.1 allows 70).
MAX_BOUNDARY = 200

# --- MIME structure --------------------------------------------------------------

# Nesting of multiparts and encapsulated messages; a deeper entity is an opaque
# leaf. Each level rescans its body for its boundary, so the scan costs up to
# this many times the message size (at about 2 GB/s). Real mail: under 10.
MAX_MIME_DEPTH = 32
# MIME entities per message (multiparts and leaves, encapsulated ones too);
# later parts are skipped. Real mail: digests reach a few hundred.
MAX_PARTS = 1000

# --- bodies ---------------------------------------------------------------------

# Transfer-decoded bytes of a text part decoded for display (text_body,
# html_body); the rest of the part is left to part_content and BODY[n].
MAX_BODY_BYTES = 4 * 1024 * 1024
# Characters of search text kept per message.
MAX_SEARCH_TEXT = 1024 * 1024
# Characters of HTML read for search text, per message (each markup construct and character reference
# costs a little Python work, so this bounds the hostile case to a few tenths of a second). Newsletters:
# 50-300 KiB.
MAX_HTML_SCAN = 512 * 1024
