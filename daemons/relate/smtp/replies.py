"""Every reply the SMTP daemon sends, with its enhanced status code (RFC 3463).

Handlers send these, never string literals. aiosmtpd's own replies are
mapped onto this catalogue in one place (:func:`normalize`), so every reply
after EHLO carries an enhanced code (RFC 2034 §3) and none says more than
it should.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Reply:
    code: int
    enhanced: str
    text: str

    def __str__(self) -> str:
        return f"{self.code} {self.enhanced} {self.text}"

    def with_text(self, text: str) -> Reply:
        return Reply(self.code, self.enhanced, text)


OK = Reply(250, "2.0.0", "OK")
SENDER_OK = Reply(250, "2.1.0", "Sender OK")
RECIPIENT_OK = Reply(250, "2.1.5", "Recipient OK")
QUEUED = Reply(250, "2.0.0", "Message accepted")  # text gets the message's id appended
AUTH_OK = Reply(235, "2.7.0", "Authentication successful")

TOO_MANY_CONNECTIONS = Reply(421, "4.7.0", "Too many connections from your address, try again later")
SHUTTING_DOWN = Reply(421, "4.3.2", "Service shutting down, try again later")
TEMPFAIL = Reply(451, "4.3.0", "Temporary failure, try again later")
TOO_MANY_RECIPIENTS = Reply(452, "4.5.3", "Too many recipients")
AUTH_TEMPFAIL = Reply(454, "4.7.0", "Temporary authentication failure")

SYNTAX_ERROR = Reply(500, "5.5.2", "Syntax error, command unrecognized")
LINE_TOO_LONG = Reply(500, "5.5.2", "Line too long")
BAD_ARGUMENTS = Reply(501, "5.5.4", "Syntax error in parameters or arguments")
BAD_BASE64 = Reply(501, "5.5.2", "Cannot decode response")
AUTH_ABORTED = Reply(501, "5.7.0", "Authentication aborted")
NOT_IMPLEMENTED = Reply(502, "5.5.1", "Command not implemented")
BAD_SEQUENCE = Reply(503, "5.5.1", "Bad sequence of commands")
AUTH_MECHANISM = Reply(504, "5.5.4", "Unrecognized authentication type")
AUTH_REQUIRED = Reply(530, "5.7.0", "Authentication required")
STARTTLS_FIRST = Reply(530, "5.7.0", "Must issue a STARTTLS command first")
AUTH_FAILED = Reply(535, "5.7.8", "Authentication credentials invalid")
ENCRYPTION_REQUIRED = Reply(538, "5.7.11", "Encryption required for requested authentication mechanism")
UNKNOWN_USER = Reply(550, "5.1.1", "No such user here")
SENDER_NOT_OWNED = Reply(553, "5.7.1", "Sender address not owned by the authenticated user")
FROM_NOT_OWNED = Reply(550, "5.7.1", "From header address not owned by the authenticated user")
BAD_ADDRESS = Reply(553, "5.1.3", "Address not accepted")
RELAY_DENIED = Reply(554, "5.7.1", "Relay access denied")
TOO_BIG = Reply(552, "5.3.4", "Message size exceeds fixed maximum message size")
TLS_FAILED = Reply(554, "5.7.0", "Command refused due to lack of security")
BYE = Reply(221, "2.0.0", "Bye")

# aiosmtpd's own replies, by their text after the code, onto the catalogue.
_AIOSMTPD: dict[str, Reply] = {
    "Error: bad syntax": SYNTAX_ERROR,
    "Command line too long": LINE_TOO_LONG,
    "Line too long (see RFC5321 4.5.3.1.6)": LINE_TOO_LONG,
    "Error: Too much mail data": TOO_BIG,
    "Error: strict ASCII mode": SYNTAX_ERROR,
    "Error: need MAIL command": BAD_SEQUENCE,
    "Error: need RCPT command": BAD_SEQUENCE,
    "Error: nested MAIL command": BAD_SEQUENCE,
    "Error: send HELO first": BAD_SEQUENCE,
    "Error: send EHLO first": BAD_SEQUENCE,
    "Already authenticated": BAD_SEQUENCE,
    "Not enough value": BAD_ARGUMENTS,
    "Too many values": BAD_ARGUMENTS,
    "Error: BODY can only be one of 7BIT, 8BITMIME": BAD_ARGUMENTS,
    "Error: SMTPUTF8 takes no arguments": BAD_ARGUMENTS,
    "Error: SMTPUTF8 disabled": BAD_ARGUMENTS,
    "Command refused due to lack of security": TLS_FAILED,
    "Must issue a STARTTLS command first": STARTTLS_FIRST,
    "Authentication required": AUTH_REQUIRED,
    "Error: malformed address": BAD_ADDRESS,
    "Error: message size exceeds fixed maximum message size": TOO_BIG,
    "TLS not available": Reply(454, "4.7.0", "TLS not available"),
    "Bye": BYE,
}
_HAS_ENHANCED = re.compile(r"^\d{3}[ -][245]\.\d{1,3}\.\d{1,3}(?: |$)")
_DEFAULT_ENHANCED = {2: "2.0.0", 4: "4.0.0", 5: "5.5.0"}


def normalize(line: str) -> str:
    """One reply line as the client must see it: catalogued, with an enhanced code.

    Greetings (220), STARTTLS's go-ahead and continuation lines are left as they are.
    """
    code, sep, text = line.partition(" ")
    if not sep or len(code) != 3 or not code.isdigit() or code in ("220", "334", "354"):
        return line
    bare = text.split(" ", 1)[1] if _HAS_ENHANCED.match(line) else text
    known = _AIOSMTPD.get(bare)
    if known is not None:
        return str(known)
    if _HAS_ENHANCED.match(line):
        return line
    if code[0] == "5" and (text.startswith("Syntax:") or text.startswith("Error: command")):
        return str(SYNTAX_ERROR if code == "500" else BAD_ARGUMENTS)
    if text.startswith("Error: MAIL FROM") or text.startswith("Error: RCPT"):
        return str(BAD_SEQUENCE if code == "503" else BAD_ARGUMENTS)
    enhanced = _DEFAULT_ENHANCED.get(int(code[0]), "")
    return f"{code} {enhanced} {text}" if enhanced else line
