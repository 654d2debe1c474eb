"""schemathesis against the live API: no 5xx, no undocumented status, answers that match openapi.json."""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
from pathlib import Path

import pytest

from tests.api.conftest import Api
from tests.api.test_hub import another_api

# The routes of the apps features (preferences, export, cid: parts, the reference page); the others are
# walked by test_openapi.py's calls. Widen the pattern to take in more.
PATHS = r"^/api/(preferences|export/mbox|emails/\{id\}/(eml|cid/\{cid\})|docs)$"
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
    limit = 1_000_000
    async with another_api(
        api, tmp_path, api__requests_per_minute=limit, api__writes_per_minute=limit, api__exports_per_hour=limit
    ) as (_, url):
        proc = await asyncio.create_subprocess_exec(
            st,
            "run",
            f"{url}/api/openapi.json",
            "--url",
            url,
            "--header",
            f"Authorization: Bearer {api.alice}",
            "--include-path-regex",
            PATHS,
            "--checks",
            CHECKS,
            "--max-examples",
            "40",
            "--phases",
            "examples,coverage,fuzzing",
            "--workers",
            "1",
            "--seed",
            "17",
            "--no-color",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            cwd=tmp_path,
            env=os.environ | {"SCHEMATHESIS_HOOKS": ""},
        )
        out, _ = await asyncio.wait_for(proc.communicate(), 600)
    report = out.decode(errors="replace")
    assert proc.returncode == 0, report[-6000:]
    assert "Tested: 7" in report, report[-3000:]  # every selected operation was reached
