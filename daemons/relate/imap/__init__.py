"""The IMAP daemon: IMAP4rev2 (RFC 9051) with IMAP4rev1 (RFC 3501) compatibility."""
