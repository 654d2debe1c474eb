"""Errors with texts fit to show an admin or a client, shared by every layer."""


class RelateError(Exception):
    """Base of Relate Mail's own errors; the text is safe to show an admin."""


class SchemaOutdated(RelateError):
    """The database schema does not match this release."""


class NotFound(RelateError):
    """The named row does not exist."""


class Conflict(RelateError):
    """The change clashes with existing data (a duplicate, a row still in use)."""


class Invalid(RelateError):
    """The input is not acceptable (a malformed address, an unknown scope)."""


class MailboxGone(NotFound, LookupError):
    """The mailbox a change was meant for no longer exists (deleted meanwhile)."""


class OverQuota(RelateError):
    """Storing would take a user past a quota limit (store/quota.py)."""


class TooMany(RelateError):
    """A user would have more of something than its limit allows (mailboxes, subscriptions)."""
