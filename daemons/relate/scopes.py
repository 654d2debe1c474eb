"""The scopes of API keys, in a module of their own so that relatectl can name them without loading auth."""

from __future__ import annotations

# Scopes a user's key may carry; `internal` is for daemon-to-API calls only.
USER_SCOPES = ("smtp", "imap", "pop3", "api:read", "api:write", "app")
INTERNAL_SCOPE = "internal"
