"""A running POP3 daemon on loopback ephemeral ports (pop3 with STLS, pop3s), against the test's own database."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from relate.config import Config
from tests.support import close_all

from .helpers import Pop3, pop3_config, start_world


@pytest.fixture
def config(dsn: str, tmp_path: Path) -> Config:
    """The daemon's live config object: tests may change it (idle_timeout, allow_plaintext_auth) before connecting."""
    return pop3_config(dsn, tmp_path)


@pytest.fixture
async def pop3(pool: asyncpg.Pool, config: Config) -> AsyncIterator[Pop3]:
    """The POP3 daemon serving example.com: alice (pop3 key, imap-only key; alias al@) and bob (pop3 key)."""
    world = await start_world(pool, config)
    yield world
    await world.server.stop(grace=2)


@pytest.fixture(autouse=True)
async def _close_clients() -> AsyncIterator[None]:
    """Close every raw client a test opened, also when it failed half-way."""
    yield
    await close_all()
