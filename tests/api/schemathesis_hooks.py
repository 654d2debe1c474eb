"""schemathesis hooks for tests/api/test_schemathesis.py (loaded by its CLI through SCHEMATHESIS_HOOKS).

The run authenticates with one key. A generated ``?self=true`` on the key routes
(``DELETE /api/smtp-credentials/{id}``, ``POST .../rotate``) may name that key,
learnt from ``GET /api/smtp-credentials``, and revoke or rotate it: every later
request would be a 401 and reach no route. So ``self`` is dropped from every
request; tests/api/test_keys.py checks what ``self=true`` does.
"""

from __future__ import annotations

from typing import Any

import schemathesis


@schemathesis.hook
def before_call(ctx: Any, case: Any, **kwargs: Any) -> None:
    if case.query:
        case.query.pop("self", None)
