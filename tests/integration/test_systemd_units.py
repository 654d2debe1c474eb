"""The unit files in systemd/: systemd itself checks them, scores their hardening, and their socket names match
the roles the daemons serve."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from relate.config import Config
from relate.smtp.server import ROLES as SMTP_ROLES
from tests.daemons import need

UNITS = Path(__file__).resolve().parents[2] / "systemd"
SERVICES = ["relate-smtp", "relate-imap", "relate-pop3", "relate-api", "relate-delivery"]
ROLES = {
    "relate-smtp": set(SMTP_ROLES),
    "relate-imap": {"imap", "imaps"},
    "relate-pop3": {"pop3", "pop3s"},
}


def read_unit(path: Path) -> dict[str, dict[str, list[str]]]:
    """Sections -> key -> every value given (unit files repeat keys)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] = {}
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), {})
            continue
        key, _, value = line.partition("=")
        current.setdefault(key, []).append(value)
    return sections


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The units as the package installs them, with ExecStart pointing at this checkout's console scripts."""
    out = tmp_path_factory.mktemp("units")
    bin_dir = Path(sys.executable).parent
    for unit in UNITS.iterdir():
        if unit.suffix in {".service", ".socket", ".target"}:
            (out / unit.name).write_text(unit.read_text().replace("/usr/bin/relate-", f"{bin_dir}/relate-"))
    return out


def test_systemd_analyze_verify_passes(installed: Path) -> None:
    """systemd-analyze verify accepts every unit with no warning at all."""
    tool = need("systemd-analyze")
    units = sorted(str(p) for p in installed.iterdir())
    done = subprocess.run([tool, "verify", "--man=no", *units], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stderr.strip() == "", done.stderr


@pytest.mark.parametrize("service", SERVICES)
def test_security_score_ok_or_better(installed: Path, service: str) -> None:
    """systemd-analyze security rates each service OK or better (exposure under 5.0)."""
    tool = need("systemd-analyze")
    done = subprocess.run(
        [tool, "security", "--offline=yes", "--no-pager", str(installed / f"{service}.service")],
        capture_output=True,
        text=True,
        check=False,
    )
    m = re.search(r"Overall exposure level for \S+: (\d+\.\d+) (\w+)", done.stdout)
    assert m is not None, done.stdout + done.stderr
    assert float(m.group(1)) < 5.0, f"{service}: {m.group(1)} {m.group(2)}"
    assert m.group(2) in {"PERFECT", "SAFE", "OK"}


def test_sockets_name_the_roles_each_daemon_serves() -> None:
    """Every .socket's FileDescriptorName= is a role its service serves, and the service inherits every socket."""
    for service, roles in ROLES.items():
        unit = read_unit(UNITS / f"{service}.service")
        sockets = " ".join(unit["Service"]["Sockets"]).split()
        names = set()
        for sock in sockets:
            spec = read_unit(UNITS / sock)
            assert spec["Socket"]["Service"] == [f"{service}.service"], sock
            (name,) = spec["Socket"]["FileDescriptorName"]
            names.add(name)
        assert names == roles, service


def test_services_run_unprivileged_as_notify_with_watchdog() -> None:
    """Each service is Type=notify with a watchdog, runs as relate with no capabilities, and reloads with SIGHUP."""
    for service in SERVICES:
        spec = read_unit(UNITS / f"{service}.service")["Service"]
        assert spec["Type"] == ["notify"]
        assert spec["User"] == ["relate"]
        assert spec["CapabilityBoundingSet"] == [""]
        assert spec["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
        assert spec["ExecStart"] == [f"/usr/bin/{service} --config /etc/relate/relate.yaml"]
        assert "WatchdogSec" in spec
        assert spec["RuntimeDirectory"] == ["relate"]


def test_target_pulls_in_every_service_and_socket() -> None:
    """relate.target wants every service and every socket, so enabling it starts the whole system."""
    wants = " ".join(read_unit(UNITS / "relate.target")["Unit"]["Wants"]).split()
    expected = {f"{s}.service" for s in SERVICES} | {p.name for p in UNITS.glob("*.socket")}
    assert set(wants) == expected


def test_default_config_ports_match_the_sockets() -> None:
    """The ports the daemons bind by themselves are the ones the .socket units listen on."""
    cfg = Config()
    expected = {
        "mx": cfg.smtp.mx.listen,
        "submission": cfg.smtp.submission.listen,
        "submissions": cfg.smtp.submissions.listen,
        "imap": cfg.imap.imap.listen,
        "imaps": cfg.imap.imaps.listen,
        "pop3": cfg.pop3.pop3.listen,
        "pop3s": cfg.pop3.pop3s.listen,
    }
    for sock in UNITS.glob("*.socket"):
        spec = read_unit(sock)["Socket"]
        (name,) = spec["FileDescriptorName"]
        ports = {item.rpartition(":")[2] for item in expected[name]}
        assert set(spec["ListenStream"]) == ports, sock.name


def test_sysusers_and_tmpfiles() -> None:
    """sysusers.d creates the relate user; tmpfiles.d makes /run/relate for it."""
    assert re.search(r"^u relate ", (UNITS / "sysusers.d" / "relate.conf").read_text(), re.M)
    assert re.search(r"^d /run/relate 0750 relate relate", (UNITS / "tmpfiles.d" / "relate.conf").read_text(), re.M)
