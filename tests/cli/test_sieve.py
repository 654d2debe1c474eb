"""relatectl sieve: storing, checking, activating, listing, showing and deleting a user's Sieve scripts."""

from __future__ import annotations

from pathlib import Path

from tests.cli.test_relatectl import Invoke, as_json, bob, ok, one_error, relatectl  # noqa: F401 - fixtures

SCRIPT = 'require "fileinto";\nif header :contains "subject" "invoice" { fileinto "Bills"; }\n'


def test_put_activate_list_show_delete(relatectl: Invoke, bob: str, tmp_path: Path) -> None:  # noqa: F811
    """A script stored with --activate is listed active, shown byte for byte, deactivated and deleted."""
    path = tmp_path / "main.sieve"
    path.write_text(SCRIPT)
    assert "stored main (active)" in ok(relatectl("sieve", "put", bob, "main", str(path), "--activate")).stdout
    ok(relatectl("sieve", "put", bob, "spare", "-", input="keep;\n"))
    rows = as_json(relatectl("sieve", "list", bob, "--json"))
    assert [(r["name"], r["active"], r["size"]) for r in rows] == [("main", True, len(SCRIPT)), ("spare", False, 6)]
    assert ok(relatectl("sieve", "show", bob, "main")).stdout == SCRIPT
    ok(relatectl("sieve", "activate", bob, "spare"))
    rows = as_json(relatectl("sieve", "list", bob, "--json"))
    assert [r["name"] for r in rows if r["active"]] == ["spare"]
    ok(relatectl("sieve", "activate", bob))
    assert not any(r["active"] for r in as_json(relatectl("sieve", "list", bob, "--json")))
    ok(relatectl("sieve", "delete", bob, "main"))
    assert [r["name"] for r in as_json(relatectl("sieve", "list", bob, "--json"))] == ["spare"]
    assert "no script 'main'" in one_error(relatectl("sieve", "show", bob, "main"))


def test_a_script_that_does_not_compile_is_refused_with_where(relatectl: Invoke, bob: str) -> None:  # noqa: F811
    """put and check refuse a faulty script with its line and column; nothing is stored."""
    bad = 'require "fileinto";\nfileinto "x"\n'
    error = one_error(relatectl("sieve", "put", bob, "bad", "-", input=bad))
    assert "line 3, column 1" in error
    assert as_json(relatectl("sieve", "list", bob, "--json")) == []
    assert 'needs require "fileinto"' in one_error(relatectl("sieve", "check", "-", input='fileinto "x";'))
    assert ok(relatectl("sieve", "check", "-", input=SCRIPT)).stdout.strip() == "ok"
