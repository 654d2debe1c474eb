"""Sieve (RFC 5228 and extensions): users' mail filters, compiled when stored and run at delivery.

- :mod:`relate.sieve.parser`: the grammar, linear and bounded.
- :mod:`relate.sieve.grammar`: the commands and tests, and the check of a script against them.
- :mod:`relate.sieve.interpreter`: a run over one message, giving actions.
- :mod:`relate.sieve.filing`: the delivery side (the user's active script, applying the actions).
"""

from __future__ import annotations
