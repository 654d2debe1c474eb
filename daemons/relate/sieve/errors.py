"""Sieve errors: a script that does not compile (with where), and a run that fails (implicit keep)."""

from __future__ import annotations


class SieveError(Exception):
    """A script that does not parse or validate: the message names the line and column (1-based)."""

    def __init__(self, message: str, line: int = 0, column: int = 0) -> None:
        self.reason = message
        self.line = line
        self.column = column
        super().__init__(f"line {line}, column {column}: {message}" if line else message)


class SieveRuntimeError(Exception):
    """A run that cannot finish (a limit reached, a bad value met at run time): RFC 5228 §2.10.6 says
    the implicit keep then applies; the message is the reason the user is shown."""
