"""The API's one error shape: ``{"error": code, "message": text}`` with an HTTP status.

Handlers raise :class:`ApiError` (or the store's RelateError kinds, which
the middleware maps); nothing else reaches the client: an unexpected
exception is a 500 with a generic message and one log line.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}


def bad_request(message: str) -> ApiError:
    return ApiError(400, "bad_request", message)


def invalid(message: str) -> ApiError:
    return ApiError(422, "invalid", message)


def not_found(what: str = "resource") -> ApiError:
    return ApiError(404, "not_found", f"{what} not found")


def error_response(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> web.Response:
    body: dict[str, Any] = {"error": code, "message": message}
    return web.json_response(body, status=status, headers=headers)
