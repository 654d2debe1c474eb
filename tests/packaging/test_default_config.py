"""The commented /etc/relate/relate.yaml the package installs: loads as is, and lists every key with its default."""

from __future__ import annotations

from pathlib import Path

import yaml

from relate import config as config_mod
from tests.docs.test_man import config_keys

PACKAGED = Path(__file__).resolve().parents[2] / "packaging" / "relate.yaml"
MARKER = "# --- reference: every key with its default ---"


def reference() -> str:
    """The reference part of the file with its keys uncommented."""
    text = PACKAGED.read_text(encoding="utf-8").split(MARKER, 1)[1]
    return "\n".join(line[1:] if line.startswith("#") else line for line in text.splitlines())


def test_packaged_config_loads_as_installed(tmp_path: Path) -> None:
    """The file as installed (all comments) is a valid configuration of defaults."""
    assert MARKER in PACKAGED.read_text(encoding="utf-8")
    cfg = config_mod.load(PACKAGED, environ={})
    assert cfg.database.dsn is None


def test_packaged_reference_uncommented_is_every_key_at_its_default(tmp_path: Path) -> None:
    """Uncommented, the reference names every config key with its default value and RELATE_* variable."""
    data = yaml.safe_load(reference())
    data["hostname"] = config_mod.Config().hostname
    assert config_mod.from_mapping(data, "reference", environ={}) == config_mod.Config()
    for key, _ in config_keys():
        section = data
        for part in key.split("."):
            section = section[part]  # KeyError: a key missing from the reference
        env = "RELATE_" + "__".join(p.upper() for p in key.split("."))
        assert f"# {env}" in PACKAGED.read_text(encoding="utf-8"), env
