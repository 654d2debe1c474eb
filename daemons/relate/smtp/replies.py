"""Every reply the SMTP daemon sends, with its enhanced status code (RFC 3463).

Handlers send these, never string literals. Every reply after the greeting
carries an enhanced code (RFC 2034 §3), except those RFC 2034 exempts (the
replies to EHLO and HELO) and the go-aheads that clients match on their bare
code (220 to STARTTLS, 334, 354). No reply says more than it should: never
what went wrong inside, never an echo of what the client sent.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Reply:
    code: int
    enhanced: str  # "" for the replies RFC 2034 §3 exempts
    text: str

    def __str__(self) -> str:
        return f"{self.code} {self.enhanced} {self.text}" if self.enhanced else f"{self.code} {self.text}"

    def with_text(self, text: str) -> Reply:
        return Reply(self.code, self.enhanced, text)

    @property
    def temporary(self) -> bool:
        return 400 <= self.code < 500


OK = Reply(250, "2.0.0", "OK")
SENDER_OK = Reply(250, "2.1.0", "Sender OK")
RECIPIENT_OK = Reply(250, "2.1.5", "Recipient OK")
QUEUED = Reply(250, "2.0.0", "Message accepted")  # text gets the message's id appended
VRFY_NO = Reply(252, "2.5.2", "Cannot VRFY user, but will accept message and attempt delivery")
HELP = Reply(214, "2.0.0", "See RFC 5321; commands: EHLO HELO MAIL RCPT DATA RSET NOOP QUIT VRFY HELP STARTTLS AUTH")
BYE = Reply(221, "2.0.0", "Bye")
AUTH_OK = Reply(235, "2.7.0", "Authentication successful")
START_TLS = Reply(220, "", "Ready to start TLS")  # RFC 3207 §4; clients look for the bare 220
START_DATA = Reply(354, "", "End data with <CR><LF>.<CR><LF>")

TOO_MANY_CONNECTIONS = Reply(421, "4.7.0", "Too many connections from your address, try again later")
SHUTTING_DOWN = Reply(421, "4.3.2", "Service shutting down, try again later")
TIMEOUT = Reply(421, "4.4.2", "Timeout, closing connection")
TOO_MANY_ERRORS = Reply(421, "4.7.0", "Too many errors, closing connection")
TEMPFAIL = Reply(451, "4.3.0", "Temporary failure, try again later")
UNVERIFIED = Reply(451, "4.7.0", "Sender could not be verified now, try again later")  # relate.mailauth: DNS
SENDING_LIMIT = Reply(451, "4.7.0", "Daily sending limit reached, try again later")  # store/sending.py
SPAM_DEFERRED = Reply(451, "4.7.1", "Message deferred by the spam filter, try again later")  # relate.spam
NO_MEMORY = Reply(452, "4.3.1", "Insufficient system resources, try again later")
TOO_MANY_RECIPIENTS = Reply(452, "4.5.3", "Too many recipients")
MAILBOX_FULL = Reply(452, "4.2.2", "Mailbox full, try again later")  # quota, for now (store/quota.py)
AUTH_TEMPFAIL = Reply(454, "4.7.0", "Temporary authentication failure")
TLS_UNAVAILABLE = Reply(454, "4.7.0", "TLS not available")

SYNTAX_ERROR = Reply(500, "5.5.2", "Syntax error, command unrecognized")
LINE_TOO_LONG = Reply(500, "5.5.2", "Line too long")
BAD_ARGUMENTS = Reply(501, "5.5.4", "Syntax error in parameters or arguments")
BAD_HELO = Reply(501, "", "Syntax: EHLO hostname")  # RFC 2034 §3: no enhanced code on EHLO/HELO replies
BAD_BASE64 = Reply(501, "5.5.2", "Cannot decode response")
AUTH_ABORTED = Reply(501, "5.7.0", "Authentication aborted")
NOT_IMPLEMENTED = Reply(502, "5.5.1", "Command not implemented")
TOO_MANY_UNKNOWN = Reply(502, "5.5.1", "Too many unrecognized commands, goodbye")
BAD_SEQUENCE = Reply(503, "5.5.1", "Bad sequence of commands")
AUTH_MECHANISM = Reply(504, "5.5.4", "Unrecognized authentication type")
AUTH_REQUIRED = Reply(530, "5.7.0", "Authentication required")
STARTTLS_FIRST = Reply(530, "5.7.0", "Must issue a STARTTLS command first")
AUTH_FAILED = Reply(535, "5.7.8", "Authentication credentials invalid")
UNKNOWN_USER = Reply(550, "5.1.1", "No such user here")
NOT_AUTHENTICATED = Reply(550, "5.7.1", "Message refused: sender domain's authentication policy (DMARC) failed")
SPAM_REFUSED = Reply(550, "5.7.1", "Message refused as spam")  # relate.spam: rspamd, or a sender list
FROM_NOT_OWNED = Reply(550, "5.7.1", "From header address not owned by the authenticated user")
SENDER_HEADER_NOT_OWNED = Reply(550, "5.7.1", "Sender header address not owned by the authenticated user")
TOO_BIG = Reply(552, "5.3.4", "Message size exceeds fixed maximum message size")
MAILBOX_FULL_FOR_GOOD = Reply(552, "5.2.2", "Mailbox full")  # quota, for good (store/quota.py)
HEADER_TOO_BIG = Reply(552, "5.3.4", "Message header too large")
SENDER_NOT_OWNED = Reply(553, "5.7.1", "Sender address not owned by the authenticated user")
BAD_ADDRESS = Reply(553, "5.1.3", "Address not accepted")
NEEDS_SMTPUTF8 = Reply(553, "5.6.7", "Non-ASCII address needs SMTPUTF8")  # RFC 6531 §3.5
RELAY_DENIED = Reply(554, "5.7.1", "Relay access denied")
BAD_PARAMETER = Reply(555, "5.5.4", "Parameter not recognized or not implemented")


# What a refusal is counted as in metrics (relate_smtp_messages_refused_total{reason}): a fixed set of
# words; a reply missing here counts as its code and enhanced code (still a fixed set: this catalogue).
REASONS: dict[Reply, str] = {
    TOO_MANY_RECIPIENTS: "too-many-recipients",
    TEMPFAIL: "tempfail",
    UNVERIFIED: "dmarc-unverified",
    SENDING_LIMIT: "sending-limit",
    SPAM_DEFERRED: "spam-deferred",
    NO_MEMORY: "no-memory",
    MAILBOX_FULL: "mailbox-full",
    LINE_TOO_LONG: "line-too-long",
    BAD_SEQUENCE: "bad-sequence",
    UNKNOWN_USER: "unknown-user",
    NOT_AUTHENTICATED: "dmarc",
    SPAM_REFUSED: "spam",
    FROM_NOT_OWNED: "from-not-owned",
    SENDER_HEADER_NOT_OWNED: "sender-not-owned",
    TOO_BIG: "too-big",
    MAILBOX_FULL_FOR_GOOD: "mailbox-full-for-good",
    HEADER_TOO_BIG: "header-too-big",
    SENDER_NOT_OWNED: "sender-not-owned",
    BAD_ADDRESS: "bad-address",
    NEEDS_SMTPUTF8: "needs-smtputf8",
    RELAY_DENIED: "relay-denied",
    BAD_ARGUMENTS: "bad-arguments",
    BAD_PARAMETER: "bad-parameter",
    AUTH_REQUIRED: "auth-required",
}


def refusal_reason(reply: Reply) -> str:
    """The metrics reason of a refusal (see REASONS)."""
    return REASONS.get(reply) or f"{reply.code}-{reply.enhanced or 'none'}"
