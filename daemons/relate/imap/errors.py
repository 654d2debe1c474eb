"""The IMAP error taxonomy; the session loop turns each into its wire form in one place."""

from __future__ import annotations


class ImapError(Exception):
    """A command failed; ``text`` goes to the client, so it stays short."""

    kind = "NO"

    def __init__(self, text: str, code: str | None = None) -> None:
        super().__init__(text)
        self.text = text
        self.code = code  # response code without brackets, e.g. "TRYCREATE", "NONEXISTENT"


class ParseError(ImapError):
    """The command does not follow the grammar: tagged BAD."""

    kind = "BAD"


class No(ImapError):
    """Tagged NO: the command was understood and refused or failed."""


class Bad(ImapError):
    """Tagged BAD that is not a parse error (e.g. a command in the wrong state)."""

    kind = "BAD"


class Bye(ImapError):
    """Untagged BYE, then the connection closes."""

    kind = "BYE"
