"""schemathesis against the live API, every route: no 5xx, no undocumented status, answers that match openapi.json.

Bounded for CI (a budget of 60-90 s): five examples per operation in the examples, coverage and fuzzing
phases, two workers; schemathesis itself took 93 s on a 2-core machine at load 15 (other work running).
The API runs as `relatectl setup` leaves it (VAPID keys for web push made; without them the push routes answer
the documented 503 push_not_configured, which test_push.py checks), with its per-key limits and the failed-login
lockout lifted so generated requests are not refused as too many.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
from pathlib import Path

import pytest

from relate.api import openapi
from relate.services import accounts
from relate.services.setup import new_vapid_keys
from tests.api.conftest import Api, operations
from tests.api.test_hub import another_api

HOOKS = Path(__file__).with_name("schemathesis_hooks.py")
CHECKS = "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance"


def _schemathesis() -> str:
    found = shutil.which("st", path=str(Path(sys.executable).parent))
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("schemathesis is not installed; it is in the dev extra: pip install -e '.[dev]'")
        pytest.skip("schemathesis is not installed (the dev extra has it)")
    return found


async def test_schemathesis_finds_no_5xx_and_no_undocumented_answer(api: Api, tmp_path: Path) -> None:
    """Generated requests (examples, boundaries, random) to the routes get only documented, well-formed answers."""
    st = _schemathesis()
    await api.deliver(b"From: a@remote.example\r\nSubject: x\r\n\r\nx\r\n", "alice@example.com")
    key, _ = await accounts.create_key(api.pool, "alice@example.com", "schemathesis", "app", rounds=4)
    limit = 1_000_000
    public, private = new_vapid_keys()
    async with another_api(
        api,
        tmp_path,
        api__requests_per_minute=limit,
        api__writes_per_minute=limit,
        api__key_calls_per_minute=limit,
        api__exports_per_hour=limit,
        # Generated requests include bad credentials: without this the address is locked out within seconds
        # and every later request is a 401.
        auth__max_failures=limit,
        auth__max_failures_per_address=limit,
        push__vapid_public_key=public,
        push__vapid_private_key=private,
        push__vapid_subject="mailto:postmaster@example.com",
    ) as (_, url):
        async with api.session.get(url + "/api/openapi.json") as resp:
            live = len(operations(await resp.json()))
        proc = await asyncio.create_subprocess_exec(
            st,
            "run",
            f"{url}/api/openapi.json",
            "--url",
            url,
            "--header",
            f"Authorization: Bearer {key}",
            "--checks",
            CHECKS,
            "--max-examples",
            "5",
            "--phases",
            "examples,coverage,fuzzing",
            "--workers",
            "2",
            "--seed",
            "17",
            "--no-color",
            # Without a filter, schemathesis leaves out the operation that serves the document itself.
            "--include-path-regex",
            "^/",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            cwd=tmp_path,
            env=os.environ | {"SCHEMATHESIS_HOOKS": str(HOOKS)},
        )
        out, _ = await asyncio.wait_for(proc.communicate(), 600)
    report = out.decode(errors="replace")
    assert proc.returncode == 0, report[-6000:]
    status, _ = await api.call("GET", "/api/profile", key)
    assert status == 200  # the key held to the end: the operations were reached, not refused
    assert live == len(operations(openapi.document()))
    assert f"Tested: {live}" in report, report[-3000:]  # every operation was reached
