"""The config schema: YAML, environment overrides, secrets from files, one-line errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from relate import config
from relate.config import ConfigError


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "relate.yaml"
    path.write_text(text)
    return path


def test_defaults_without_file() -> None:
    """With no file at the default path, every key has its documented default."""
    if config.DEFAULT_PATH.exists():
        pytest.skip(f"{config.DEFAULT_PATH} exists on this machine")
    cfg = config.load(environ={})
    assert cfg.database.dsn is None
    assert cfg.auth.cache_seconds == 30.0
    assert cfg.auth.max_failures == 5
    assert cfg.internal.api_socket == Path("/run/relate/api.sock")


def test_yaml_values_are_typed(tmp_path: Path) -> None:
    """Values in the YAML file land in the typed schema."""
    path = write(
        tmp_path,
        "hostname: mail.example.org\n"
        "database:\n  dsn: postgresql://relate@/relate\n  pool_max: 20\n  connect_timeout: 3\n"
        "tls:\n  cert: /etc/ssl/a.pem\n  key: /etc/ssl/a.key\n",
    )
    cfg = config.load(path, environ={})
    assert cfg.hostname == "mail.example.org"
    assert cfg.database.dsn == "postgresql://relate@/relate"
    assert cfg.database.pool_max == 20
    assert cfg.database.connect_timeout == 3.0
    assert cfg.tls.cert == Path("/etc/ssl/a.pem")
    assert cfg.source == path


def test_environment_overrides_file(tmp_path: Path) -> None:
    """RELATE_SECTION__KEY beats the file, and is coerced to the key's type."""
    path = write(tmp_path, "database:\n  dsn: postgresql://file/db\n  pool_max: 5\n")
    env = {
        "RELATE_DATABASE__DSN": "postgresql://env/db",
        "RELATE_DATABASE__POOL_MAX": "12",
        "RELATE_INTERNAL__API_KEY": "secret-from-env",
        "RELATE_HOSTNAME": "env.example.org",
    }
    cfg = config.load(path, environ=env)
    assert cfg.database.dsn == "postgresql://env/db"
    assert cfg.database.pool_max == 12
    assert cfg.internal.api_key == "secret-from-env"
    assert cfg.hostname == "env.example.org"


def test_relate_config_variable_names_the_file(tmp_path: Path) -> None:
    """RELATE_CONFIG picks the file when no path is passed."""
    path = write(tmp_path, "hostname: from-variable.example\n")
    cfg = config.load(environ={"RELATE_CONFIG": str(path)})
    assert cfg.hostname == "from-variable.example"


def test_secret_from_file_in_yaml_and_env(tmp_path: Path) -> None:
    """`key_file` reads the secret from a file, in YAML and as RELATE_..._FILE."""
    secret = tmp_path / "internal.key"
    secret.write_text("  s3cret-value\n")
    dsn_file = tmp_path / "dsn"
    dsn_file.write_text("postgresql://from-file/db\n")
    path = write(tmp_path, f"internal:\n  api_key_file: {secret}\n")
    cfg = config.load(path, environ={"RELATE_DATABASE__DSN_FILE": str(dsn_file)})
    assert cfg.internal.api_key == "s3cret-value"
    assert cfg.database.dsn == "postgresql://from-file/db"


@pytest.mark.parametrize(
    ("text", "env", "needles"),
    [
        ("databse:\n  dsn: x\n", {}, ["databse", "unknown key", "relate.yaml"]),
        ("database:\n  pool_max: ten\n", {}, ["database.pool_max", "integer", "'ten'", "relate.yaml"]),
        ("database:\n  pool_max: true\n", {}, ["database.pool_max", "integer"]),
        ("database: 5\n", {}, ["database", "section"]),
        ("auth:\n  cache_seconds: soon\n", {}, ["auth.cache_seconds", "number"]),
        ("logging:\n  level: LOUD\n", {}, ["logging.level"]),
        ("tls:\n  cert: /a.pem\n", {}, ["tls.cert and tls.key"]),
        ("", {"RELATE_DATABASE__POOL_MAX": "ten"}, ["database.pool_max", "$RELATE_DATABASE__POOL_MAX"]),
        ("", {"RELATE_DATABASE__NOPE": "1"}, ["$RELATE_DATABASE__NOPE", "unknown key database.nope"]),
        ("", {"RELATE_NOSUCH__DSN": "x"}, ["$RELATE_NOSUCH__DSN", "unknown key"]),
        ("", {"RELATE_INTERNAL__API_KEY_FILE": "/nonexistent/key"}, ["api_key_file", "cannot read"]),
        ("- a\n- b\n", {}, ["top level must be a mapping"]),
        ("database:\n  dsn: [unclosed\n", {}, ["relate.yaml", "line"]),
        ("smtp:\n  rspamd:\n    url: 127.0.0.1:11333\n", {}, ["smtp.rspamd.url", "http://"]),
        ("", {"RELATE_SMTP__RSPAMD__ON_UNREACHABLE": "drop"}, ["smtp.rspamd.on_unreachable", "accept or tempfail"]),
        ("", {"RELATE_SMTP__RSPAMD__BLOCK_ACTION": "bounce"}, ["smtp.rspamd.block_action", "junk or refuse"]),
        ("api:\n  oidc:\n    issuer: http://idp.example\n    audience: a\n", {}, ["api.oidc.issuer", "https"]),
        ("api:\n  oidc:\n    issuer: https://idp.example\n", {}, ["api.oidc.audience", "required"]),
        ("", {"RELATE_API__OIDC__ALGORITHMS": "RS256,HS256"}, ["api.oidc.algorithms", "RS256, ES256, EdDSA"]),
        ("", {"RELATE_API__OIDC__SCOPES": "mail=internal"}, ["api.oidc.scopes", "api:read"]),
    ],
)
def test_bad_config_is_one_line_naming_key_and_source(
    tmp_path: Path, text: str, env: dict[str, str], needles: list[str]
) -> None:
    """Unknown keys and bad values stop loading with one line naming the key, problem and source."""
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        config.load(path, environ=env)
    message = str(info.value)
    assert "\n" not in message
    for needle in needles:
        assert needle in message


def test_named_file_must_exist(tmp_path: Path) -> None:
    """A config file named explicitly but missing is an error, not silently defaults."""
    with pytest.raises(ConfigError, match="no such configuration file"):
        config.load(tmp_path / "missing.yaml", environ={})
    with pytest.raises(ConfigError, match="no such configuration file"):
        config.load(environ={"RELATE_CONFIG": str(tmp_path / "missing.yaml")})


def test_long_values_are_cut_short_in_errors(tmp_path: Path) -> None:
    """A bad value names its key, and a long neighbouring value (a secret) is never echoed whole."""
    path = write(tmp_path, "internal:\n  api_key: " + "x" * 200 + "\n  notify_timeout: slow\n")
    with pytest.raises(ConfigError) as info:
        config.load(path, environ={})
    assert "x" * 100 not in str(info.value)
    assert "internal.notify_timeout" in str(info.value)
