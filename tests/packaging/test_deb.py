"""The .deb installs into a clean Debian 12 root and runs there.

The test builds the package with scripts/build-deb, makes a minimal Debian 12
root with debootstrap (cached as a tarball under the temp dir between runs;
each run unpacks a fresh copy), and inside it runs packaging/provision.sh
--no-systemd, the Vagrantfile's own provisioning less systemd: apt installs
the .deb and PostgreSQL, `relatectl setup --non-interactive` creates the
role and database on that PostgreSQL, and the smoke test sends by SMTP
submission and reads back by IMAP and POP3. Then `relatectl --version`,
and `systemd-analyze verify` on every installed unit.

Needs root, debootstrap and the Debian mirror; it is slow (a few minutes),
so it runs only with SLOW_TESTS=1 (`SLOW_TESTS=1 bash scripts/test
tests/packaging`), and fails rather than skips under CI when asked for.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
MIRROR = "http://deb.debian.org/debian"
CACHE = Path(tempfile.gettempdir()) / "relate-test-debootstrap"

pytestmark = pytest.mark.slow


def _require() -> None:
    if os.environ.get("SLOW_TESTS") != "1":
        pytest.skip("slow: set SLOW_TESTS=1 to build the .deb and install it in a debootstrapped root")
    missing = [tool for tool in ("debootstrap", "unshare", "dpkg-deb", "strip") if shutil.which(tool) is None]
    if os.geteuid() != 0 or missing:
        why = f"needs root and {', '.join(missing) or 'nothing else'} (scripts/test-deps installs the tools)"
        if os.environ.get("CI"):
            pytest.fail(why)
        pytest.skip(why)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _minbase_tarball() -> Path:
    """A debootstrap --variant=minbase bookworm root as a tarball, made once and kept under the temp dir."""
    tarball = CACHE / "bookworm-minbase.tar"
    if tarball.exists():
        return tarball
    CACHE.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(dir=CACHE))
    try:
        started = time.monotonic()
        subprocess.run(
            ["debootstrap", "--variant=minbase", "bookworm", str(work / "root"), MIRROR],
            check=True,
            capture_output=True,
            timeout=900,
        )
        print(f"debootstrap took {time.monotonic() - started:.0f} s")
        subprocess.run(["tar", "-C", str(work / "root"), "-cf", str(work / "root.tar"), "."], check=True, timeout=300)
        os.replace(work / "root.tar", tarball)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return tarball


@pytest.fixture(scope="module")
def deb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The package built from this tree."""
    _require()
    out = tmp_path_factory.mktemp("dist")
    started = time.monotonic()
    built = subprocess.run(
        ["bash", str(REPO / "scripts" / "build-deb"), str(out)], capture_output=True, text=True, timeout=900
    )
    assert built.returncode == 0, built.stderr
    print(f"build-deb took {time.monotonic() - started:.0f} s")
    path = Path(built.stdout.strip().splitlines()[-1])
    assert path.name.startswith("relate-mail_")
    assert path.suffix == ".deb"
    return path


@pytest.fixture
def root(tmp_path: Path) -> Iterator[Path]:
    """A fresh Debian 12 minbase root, with apt's downloads cached across runs."""
    _require()
    started = time.monotonic()
    tarball = _minbase_tarball()
    print(f"minbase root ready in {time.monotonic() - started:.0f} s")
    path = tmp_path / "root"
    path.mkdir()
    subprocess.run(["tar", "-C", str(path), "-xf", str(tarball)], check=True, timeout=300)
    (CACHE / "apt-archives" / "partial").mkdir(parents=True, exist_ok=True)
    # Keep the .debs apt downloads (minbase's apt deletes them after install).
    (path / "etc/apt/apt.conf.d/99relate-test-keep").write_text('Binary::apt::APT::Keep-Downloaded-Packages "true";\n')
    (path / "etc/resolv.conf").write_text(Path("/etc/resolv.conf").read_text())
    yield path
    subprocess.run(["rm", "-rf", "--one-file-system", str(path)], check=False, timeout=300)


def in_root(root: Path, script: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    """Run a shell script chrooted in ``root``, with /proc, /dev and apt's cache mounted in a private namespace."""
    wrapper = f"""
set -e
mount -t proc proc {root}/proc
mount --rbind /dev {root}/dev
mount --bind {CACHE}/apt-archives {root}/var/cache/apt/archives
exec chroot {root} /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 \\
    SMTP_PORT="$SMTP_PORT" IMAPS_PORT="$IMAPS_PORT" POP3S_PORT="$POP3S_PORT" API_PORT="$API_PORT" \\
    /bin/bash -c "$SCRIPT"
"""
    env = {
        **os.environ,
        "SCRIPT": script,
        "SMTP_PORT": str(_free_port()),
        "IMAPS_PORT": str(_free_port()),
        "POP3S_PORT": str(_free_port()),
        "API_PORT": str(_free_port()),
    }
    return subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "--fork", "bash", "-c", wrapper],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


def test_deb_installs_sets_up_and_serves_mail_in_a_clean_debian_root(deb: Path, root: Path) -> None:
    """In a clean Debian 12 root: apt installs the .deb, setup makes the database, mail goes in and comes out."""
    shutil.copy(deb, root / "tmp" / deb.name)
    shutil.copy(REPO / "packaging" / "provision.sh", root / "tmp" / "provision.sh")
    started = time.monotonic()
    result = in_root(root, f"bash /tmp/provision.sh --no-systemd /tmp/{deb.name}")
    print(f"provision.sh --no-systemd took {time.monotonic() - started:.0f} s")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    for line in ("smoke: sent by SMTP submission", "smoke: read by IMAP", "smoke: read by POP3", "smoke: ok"):
        assert line in result.stdout, result.stdout

    config = root / "etc" / "relate" / "relate.yaml"
    text = config.read_text(encoding="utf-8")
    assert "dsn: postgresql://relate@/relate?host=/var/run/postgresql" in text
    assert "# --- reference: every key with its default ---" in text  # the conffile's reference survived setup

    version = in_root(root, "relatectl --version && stat -c '%U:%G %a' /etc/relate/relate.yaml")
    assert version.returncode == 0, version.stderr
    assert version.stdout.splitlines() == ["relatectl 0.1.0", "root:relate 640"]

    again = in_root(
        root, "pg_ctlcluster 15 main start && relatectl setup --non-interactive; pg_ctlcluster 15 main stop"
    )
    assert "setup: nothing to change" in again.stdout, again.stdout + again.stderr


def test_installed_units_pass_systemd_analyze_verify(deb: Path, root: Path) -> None:
    """Every systemd unit the package installs passes `systemd-analyze verify` inside the installed root."""
    shutil.copy(deb, root / "tmp" / deb.name)
    script = f"""
set -e
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends /tmp/{deb.name} systemd >/dev/null
units=$(dpkg -L relate-mail | grep -E '^/lib/systemd/system/.+[.](service|socket|target)$')
[ -n "$units" ] || {{ echo "no units in the package"; exit 3; }}
echo "$units"
SYSTEMD_LOG_LEVEL=notice systemd-analyze verify --man=no $units
"""
    result = in_root(root, script)
    if result.returncode == 3:
        pytest.fail("the package installs no systemd units (systemd/ was empty when it was built)")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "relate.target" in result.stdout
    problems = [line for line in result.stderr.splitlines() if "relate" in line]
    assert problems == []
