"""Sieve (RFC 5228 and extensions): users' mail filters, compiled when stored and run at delivery.

- :mod:`relate.sieve.parser`: the grammar, linear and bounded.
- :mod:`relate.sieve.grammar`: the commands and tests, and the check of a script against them.
- :mod:`relate.sieve.interpreter`: a run over one message, giving actions.
- :mod:`relate.sieve.filing`: the delivery side (the user's active script, applying the actions).
"""

from __future__ import annotations

from relate.config import SieveConfig
from relate.sieve.errors import SieveError, SieveRuntimeError
from relate.sieve.grammar import Script
from relate.sieve.interpreter import Limits

__all__ = ["SieveError", "SieveRuntimeError", "compile_script", "limits"]


def compile_script(text: str | bytes, cfg: SieveConfig | None = None) -> Script:
    """A script checked with the configured size and nesting limits; raises SieveError."""
    from relate.sieve import grammar

    cfg = cfg or SieveConfig()
    return grammar.compile(text, max_size=cfg.max_script_size, max_nesting=cfg.max_nesting)


def limits(cfg: SieveConfig | None = None) -> Limits:
    cfg = cfg or SieveConfig()
    return Limits(cfg.max_steps, cfg.max_actions, cfg.max_redirects, cfg.max_body_bytes)
