"""The .deb installs into a clean Debian 12 root and runs there.

The test builds the package with scripts/build-deb, makes a minimal Debian 12
root with debootstrap (cached as a tarball under the temp dir between runs;
each run unpacks a fresh copy), and inside it runs packaging/provision.sh
--no-systemd, the Vagrantfile's own provisioning less systemd: apt installs
the .deb and PostgreSQL, `relatectl setup --non-interactive` creates the
role and database on that PostgreSQL, and the smoke test sends by SMTP
submission and reads back by IMAP and POP3. Then `relatectl --version`,
and `systemd-analyze verify` on every installed unit.

Then the same provisioning under real systemd: a bookworm root with systemd,
systemd-sysv and dbus (also cached as a tarball, keyed by that package list)
is booted with systemd-nspawn in the host's network namespace, provision.sh
runs in it with `systemctl enable --now relate.target`, and the tests check
socket activation, readiness and the watchdog, restarts after kill -9, TLS
reload, `relatectl status`, the journal, and `relatectl setup` masking the
units of a protocol switched off there (see the section below). Last, on that
container, the upgrade to a next release (this package repacked with one
migration more and a higher version): postinst migrates, then restarts the
daemons; with PostgreSQL stopped it configures all the same and restarts
nothing.

Needs root, debootstrap, systemd-nspawn and the Debian mirror, and the booted
part needs ports 25, 110, 143, 465, 587, 993, 995, 8080, 9461-9465 and 5432
free on the host (it skips, naming them, when they are not); it is slow (a few minutes),
so it runs only with SLOW_TESTS=1 (`SLOW_TESTS=1 bash scripts/test
tests/packaging`), and fails rather than skips under CI when asked for.
"""

from __future__ import annotations

import contextlib
import hashlib
import imaplib
import json
import os
import poplib
import shlex
import shutil
import smtplib
import socket
import ssl
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import EmailMessage
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


def _bootstrap_tarball(include: tuple[str, ...]) -> Path:
    """A debootstrap --variant=minbase bookworm root with ``include`` as a tarball, made once per package list."""
    tarball = CACHE / ("bookworm-minbase" + "".join(f"+{name}" for name in include) + ".tar")
    if tarball.exists():
        return tarball
    CACHE.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(dir=CACHE))
    try:
        started = time.monotonic()
        options = ["--variant=minbase"] + ([f"--include={','.join(include)}"] if include else [])
        subprocess.run(
            ["debootstrap", *options, "bookworm", str(work / "root"), MIRROR],
            check=True,
            capture_output=True,
            timeout=900,
        )
        print(f"debootstrap {' '.join(options)} took {time.monotonic() - started:.0f} s")
        subprocess.run(["tar", "-C", str(work / "root"), "-cf", str(work / "root.tar"), "."], check=True, timeout=300)
        os.replace(work / "root.tar", tarball)
    finally:
        subprocess.run(["rm", "-rf", "--one-file-system", str(work)], check=False, timeout=300)
    return tarball


def _minbase_tarball() -> Path:
    """A debootstrap --variant=minbase bookworm root as a tarball, made once and kept under the temp dir."""
    return _bootstrap_tarball(())


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


@contextlib.contextmanager
def _apt_archives(where: Path) -> Iterator[Path]:
    """apt's download directory for one root: the cached .debs linked in, and what apt downloads linked back.

    Not the cache itself: apt locks the directory it downloads to, and another run of these tests on this
    machine (another checkout's CI) would find it locked and fail at once ("Could not get lock").
    """
    shared = CACHE / "apt-archives"
    shared.mkdir(parents=True, exist_ok=True)
    mine = where / "apt-archives"
    (mine / "partial").mkdir(parents=True)
    for deb in shared.glob("*.deb"):
        _link(deb, mine / deb.name)
    try:
        yield mine
    finally:
        for deb in mine.glob("*.deb"):
            if not (shared / deb.name).exists():
                _link(deb, shared / deb.name)


def _link(source: Path, target: Path) -> None:
    """A hard link (the cache and the temp dirs share /tmp), else a copy, put in place whole."""
    partial = target.with_name(f".{target.name}.{os.getpid()}")
    try:
        os.link(source, partial)
    except OSError:
        shutil.copyfile(source, partial)
    os.replace(partial, target)


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
    # Keep the .debs apt downloads (minbase's apt deletes them after install).
    (path / "etc/apt/apt.conf.d/99relate-test-keep").write_text('Binary::apt::APT::Keep-Downloaded-Packages "true";\n')
    (path / "etc/resolv.conf").write_text(Path("/etc/resolv.conf").read_text())
    with _apt_archives(tmp_path):  # in_root binds it
        yield path
    subprocess.run(["rm", "-rf", "--one-file-system", str(path)], check=False, timeout=300)


def in_root(root: Path, script: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    """Run a shell script chrooted in ``root``, with /proc, /dev and apt's cache mounted in a private namespace."""
    wrapper = f"""
set -e
mount -t proc proc {root}/proc
mount --rbind /dev {root}/dev
mount --bind {root.parent}/apt-archives {root}/var/cache/apt/archives
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


# --- Real systemd: Debian 12 booted in a container -------------------------------------------------------------
#
# A debootstrap root with systemd, systemd-sysv and dbus (cached as a tarball keyed by that package list) is
# booted with `systemd-nspawn -b --register=no --keep-unit --console=pipe` in the host's network namespace (no
# --private-network: apt inside needs the Debian mirror, and this is the namespace the ports are tested in), and
# commands run inside with `nsenter -t <its PID 1> -a`. packaging/provision.sh, the Vagrantfile's provisioning,
# installs the .deb and PostgreSQL there, runs `relatectl setup` and `systemctl enable --now relate.target`, and
# sends, reads and lists one message. The tests below then check what systemd does for the daemons, in file
# order, on the one booted container; clients connect from the test process over the shared loopback.

SYSTEMD_PACKAGES = ("systemd", "systemd-sysv", "dbus")
SERVICES = ("smtp", "imap", "pop3", "api", "delivery")
# (unit, port, how a client speaks to it): every port a .socket unit binds.
SOCKETS = (
    ("relate-smtp-mx.socket", 25, "smtp"),
    ("relate-smtp-submission.socket", 587, "smtp"),
    ("relate-smtp-submissions.socket", 465, "smtps"),
    ("relate-imap.socket", 143, "imap"),
    ("relate-imaps.socket", 993, "imaps"),
    ("relate-pop3.socket", 110, "pop3"),
    ("relate-pop3s.socket", 995, "pop3s"),
)
# Bound in the host's namespace too: the API, each daemon's metrics endpoint and the container's PostgreSQL.
OTHER_PORTS = (8080, 9461, 9462, 9463, 9464, 9465, 5432)
USER = "postmaster@relate.test"
# As the issue boots it: --keep-unit is what makes it work in this machine's container (no machined, no scope).
NSPAWN = ("systemd-nspawn", "-b", "--register=no", "--keep-unit", "--console=pipe")
NSENTER = ("nsenter", "-t")
CLEAN_ENV = ("/usr/bin/env", "-i", "PATH=/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/root", "LANG=C.UTF-8", "SYSTEMD_PAGER=")
WATCHDOG_WAIT = 90.0  # WatchdogSec=30s, then SIGABRT (with SIGCONT), RestartSec=2s and a start


def _taken_ports() -> list[int]:
    taken = []
    for port in [p for _, p, _ in SOCKETS] + list(OTHER_PORTS):
        with socket.socket(socket.AF_INET6) as s:
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            try:
                s.bind(("::", port))
            except OSError:
                taken.append(port)
    return taken


class Container:
    """A booted systemd-nspawn container: commands run inside with nsenter."""

    def __init__(self, init_pid: int, inbox: Path) -> None:
        self.init_pid = init_pid  # the container's PID 1, as the host numbers it
        self.inbox = inbox  # a host directory the container sees (read-only) at /root/relate-test

    def run(self, script: str, timeout: float = 300, check: bool = True) -> subprocess.CompletedProcess[str]:
        """``bash -c script`` inside the container, as root, with a clean environment."""
        done = subprocess.run(
            [*NSENTER, str(self.init_pid), "-a", *CLEAN_ENV, "/bin/bash", "-c", script],
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check:
            assert done.returncode == 0, f"{script}\nexit {done.returncode}\n{done.stdout[-3000:]}{done.stderr[-3000:]}"
        return done

    def show(self, unit: str, *props: str) -> dict[str, str]:
        out = self.run(f"systemctl show {unit} " + " ".join(f"-p {p}" for p in props)).stdout
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def main_pid(self, service: str) -> int:
        return int(self.show(f"relate-{service}.service", "MainPID")["MainPID"])

    def wait_active(self, timeout: float = 60) -> None:
        """Every Relate Mail service active (after a restart the tests caused)."""
        units = " ".join(f"relate-{s}.service" for s in SERVICES)
        deadline = time.monotonic() + timeout
        while True:
            states = self.run(f"systemctl is-active {units}", check=False).stdout.split()
            if states == ["active"] * len(SERVICES):
                return
            assert time.monotonic() < deadline, dict(zip(SERVICES, states, strict=False))
            time.sleep(0.5)


def _container_init(nspawn: subprocess.Popen[bytes], log: Path, timeout: float = 120) -> int:
    """The host pid of the container's systemd, once it runs."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert nspawn.poll() is None, f"systemd-nspawn exited {nspawn.returncode}: {log.read_text()[-3000:]}"
        try:
            children = Path(f"/proc/{nspawn.pid}/task/{nspawn.pid}/children").read_text().split()
            for child in children:
                if Path(f"/proc/{child}/comm").read_text().strip() == "systemd":
                    return int(child)
        except OSError:
            pass
        time.sleep(0.2)
    pytest.fail(f"the container's systemd did not start in {timeout:.0f} s: {log.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def booted(deb: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Container]:
    """Debian 12 booted under its own systemd, with the .deb provisioned: relate.target enabled and running."""
    _require()
    missing = [tool for tool in ("systemd-nspawn", "nsenter") if shutil.which(tool) is None]
    if missing:
        why = f"needs {', '.join(missing)} (scripts/test-deps installs systemd-container)"
        if os.environ.get("CI"):
            pytest.fail(why)
        pytest.skip(why)
    taken = _taken_ports()
    if taken:
        pytest.skip(
            f"ports {', '.join(map(str, taken))} are in use on this host; the booted container shares the host's"
            " network and binds them itself"
        )
    started = time.monotonic()
    tarball = _bootstrap_tarball(SYSTEMD_PACKAGES)
    work = tmp_path_factory.mktemp("booted")
    inbox = work / "relate-test"  # the .deb and provision.sh, seen at /root/relate-test (/tmp is a tmpfs there)
    inbox.mkdir()
    shutil.copy(deb, inbox / deb.name)
    shutil.copy(REPO / "packaging" / "provision.sh", inbox / "provision.sh")
    keep = work / "99relate-test-keep"  # keep the .debs apt downloads, in the cache bound below
    keep.write_text('Binary::apt::APT::Keep-Downloaded-Packages "true";\n')
    with _apt_archives(work) as archives:  # new downloads go back to the cache once the container has stopped
        (work / "root").mkdir()
        # The root lives on a tmpfs mounted in a mount namespace of its own: unpacking is quick, and the memory goes
        # back when the container stops, however the test ends (deleting ~700 MB of files took 35 s under load).
        nspawn_cmd = [*NSPAWN, "-D", f"{work}/root", f"--bind={archives}:/var/cache/apt/archives"]
        nspawn_cmd += [f"--bind-ro={inbox}:/root/relate-test", f"--bind-ro={keep}:/etc/apt/apt.conf.d/{keep.name}"]
        boot = f"""set -e
mount -t tmpfs -o size=3g,mode=0755 relate-test-root {work}/root
tar -C {work}/root -xf {tarball}
exec {shlex.join(nspawn_cmd)}
"""
        log = work / "nspawn.log"
        with log.open("wb") as out:
            nspawn = subprocess.Popen(
                ["unshare", "--mount", "--propagation", "private", "bash", "-c", boot],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        try:
            box = Container(_container_init(nspawn, log), inbox)
            deadline = time.monotonic() + 120
            while True:
                state = box.run("systemctl is-system-running --wait", check=False, timeout=120)
                if state.stdout.strip() in {"running", "degraded"} or time.monotonic() > deadline:
                    break
                time.sleep(0.5)  # nsenter may come before systemd's bus is up
            assert state.stdout.strip() == "running", box.run("systemctl --failed --no-pager", check=False).stdout
            print(f"unpacked and booted in {time.monotonic() - started:.0f} s")
            started = time.monotonic()
            provision = box.run(f"bash /root/relate-test/provision.sh /root/relate-test/{deb.name}", timeout=900)
            print(f"provision.sh with systemd took {time.monotonic() - started:.0f} s")
            assert "smoke: ok" in provision.stdout, provision.stdout
            yield box
        finally:
            stopping = time.monotonic()
            nspawn.terminate()  # systemd-nspawn powers the container off (SIGRTMIN+3 to its systemd)
            try:
                nspawn.wait(timeout=90)
            except subprocess.TimeoutExpired:
                nspawn.kill()
                nspawn.wait(timeout=30)
            print(f"container powered off in {time.monotonic() - stopping:.0f} s")


@pytest.fixture(scope="module")
def key(booted: Container) -> str:
    """An app password for the provisioned user, made with relatectl inside the container."""
    out = booted.run(f"relatectl key create {USER} --scope smtp,imap,pop3 --name systemd-test --json").stdout
    return str(json.loads(out)["key"])


def _tls() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE  # setup's self-signed certificate
    return ctx


def _served_certificate(port: int, how: str) -> bytes:
    """Greet the listener on ``port``, go to TLS (STARTTLS/STLS or implicit) and return the certificate served."""
    host, ctx = "127.0.0.1", _tls()
    if how == "smtp":
        with smtplib.SMTP(host, port, timeout=30) as s:
            s.starttls(context=ctx)
            return _peer(s.sock)
    if how == "smtps":
        with smtplib.SMTP_SSL(host, port, timeout=30, context=ctx) as s:
            s.noop()
            return _peer(s.sock)
    if how in {"imap", "imaps"}:
        if how == "imap":
            c = imaplib.IMAP4(host, port, timeout=30)
            c.starttls(ssl_context=ctx)
        else:
            c = imaplib.IMAP4_SSL(host, port, ssl_context=ctx, timeout=30)
        der = _peer(c.sock)
        c.logout()
        return der
    p = poplib.POP3(host, port, timeout=30) if how == "pop3" else poplib.POP3_SSL(host, port, context=ctx)
    if how == "pop3":
        p.stls(context=ctx)
    der = _peer(p.sock)
    p.quit()
    return der


def _peer(sock: socket.socket | None) -> bytes:
    assert isinstance(sock, ssl.SSLSocket)
    der = sock.getpeercert(binary_form=True)
    assert der is not None
    return der


def _listening_inodes(port: int) -> set[str]:
    """Socket inodes listening on TCP ``port`` in this network namespace (from /proc/net/tcp and tcp6)."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:  # 0A: LISTEN
                found.add(fields[9])
    return found


def _holders(inodes: set[str]) -> set[int]:
    """Host pids of the processes with one of these sockets open."""
    pids = set()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            links = {os.readlink(fd) for fd in (proc / "fd").iterdir()}
        except OSError:
            continue
        if any(f"socket:[{inode}]" in links for inode in inodes):
            pids.add(int(proc.name))
    return pids


def _wait_restarted(box: Container, service: str, old_pid: int, timeout: float) -> dict[str, str]:
    deadline = time.monotonic() + timeout
    while True:
        now = box.show(f"relate-{service}.service", "MainPID", "ActiveState", "NRestarts", "StatusText")
        if now["ActiveState"] == "active" and now["MainPID"] not in {"0", str(old_pid)}:
            return now
        assert time.monotonic() < deadline, f"relate-{service} not restarted in {timeout:.0f} s: {now}"
        time.sleep(0.5)


def _subjects_in_inbox(key: str) -> set[str]:
    c = imaplib.IMAP4_SSL("127.0.0.1", 993, ssl_context=_tls(), timeout=30)
    c.login(USER, key)
    c.select("INBOX", readonly=True)
    typ, data = c.fetch("1:*", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
    c.logout()
    assert typ == "OK"
    return {
        part[1].decode().split(":", 1)[1].strip()
        for part in data
        if isinstance(part, tuple) and part[1].lower().startswith(b"subject:")
    }


def test_booted_debian_runs_relate_target_from_the_package(booted: Container) -> None:
    """Under Debian 12's own systemd the .deb provisions, relate.target runs and the system is not degraded."""
    assert booted.run("systemctl is-system-running").stdout.strip() == "running"
    assert booted.run("systemctl is-enabled relate.target").stdout.strip() == "enabled"
    units = [unit for unit, _, _ in SOCKETS] + [f"relate-{s}.service" for s in SERVICES] + ["relate.target"]
    states = booted.run("systemctl is-active " + " ".join(units), check=False).stdout.split()
    assert dict(zip(units, states, strict=True)) == dict.fromkeys(units, "active")


def test_socket_units_listen_before_services_and_hold_the_ports(booted: Container) -> None:
    """Each .socket listened before its service started; systemd holds every mail port, the daemons run as relate."""
    relate_uid, relate_gid = booted.run("id -u relate; id -g relate").stdout.split()
    assert relate_uid != "0"
    assert relate_gid != "0"
    for unit, port, _ in SOCKETS:
        service = booted.show(unit, "Triggers")["Triggers"]
        socket_at = int(booted.show(unit, "ActiveEnterTimestampMonotonic")["ActiveEnterTimestampMonotonic"])
        started_at = int(booted.show(service, "ExecMainStartTimestampMonotonic")["ExecMainStartTimestampMonotonic"])
        assert 0 < socket_at <= started_at, f"{unit} listened at {socket_at}, {service} started at {started_at}"
        holders = _holders(_listening_inodes(port))
        assert booted.init_pid in holders, f"port {port} is not held by systemd (pid {booted.init_pid}): {holders}"
    for service in SERVICES:
        pid = booted.main_pid(service)
        status = booted.run(f"grep -E '^(Uid|Gid|CapEff):' /proc/{pid}/status").stdout.split()
        assert status == ["Uid:", *[relate_uid] * 4, "Gid:", *[relate_gid] * 4, "CapEff:", "0" * 16], status


def test_first_connection_starts_a_stopped_service(booted: Container) -> None:
    """With the service stopped, the socket still listens and a client's first connection starts the daemon."""
    booted.wait_active()
    for unit, port, how in SOCKETS:
        service = booted.show(unit, "Triggers")["Triggers"]
        booted.run(f"systemctl stop {service}")
        assert booted.run(f"systemctl is-active {service}", check=False).stdout.strip() == "inactive"
        assert booted.run(f"systemctl is-active {unit}").stdout.strip() == "active"
        assert booted.init_pid in _holders(_listening_inodes(port)), f"{unit} stopped listening with {service}"
        _served_certificate(port, how)  # the greeting, then TLS: served by a daemon systemd started for us
        # (The connection waits on the socket until the daemon has sent READY=1: only then does it accept.)
        booted.wait_active()


def test_notify_readiness_and_the_watchdog_restart_a_hung_daemon(booted: Container, key: str) -> None:
    """Type=notify: start returns when the daemon serves; a daemon whose loop hangs (SIGSTOP) is restarted."""
    booted.wait_active()
    for service in SERVICES:
        shown = booted.show(f"relate-{service}.service", "Type", "WatchdogUSec", "StatusText")
        assert shown["Type"] == "notify"
        assert shown["WatchdogUSec"] == "30s"
        assert shown["StatusText"].startswith(f"relate-{service} running"), shown  # sent with READY=1
    # `systemctl restart` returns on READY=1: the very next login is served, with no retry.
    booted.run("systemctl restart relate-pop3.service")
    p = poplib.POP3_SSL("127.0.0.1", 995, context=_tls(), timeout=30)
    p.user(USER)
    p.pass_(key)
    p.quit()

    hung = booted.main_pid("pop3")
    before = int(booted.show("relate-pop3.service", "NRestarts")["NRestarts"])
    started = time.monotonic()
    booted.run(f"kill -STOP {hung}")
    after = _wait_restarted(booted, "pop3", hung, WATCHDOG_WAIT)
    print(f"watchdog restarted a hung relate-pop3 after {time.monotonic() - started:.0f} s")
    assert int(after["NRestarts"]) == before + 1
    journal = booted.run("journalctl -b -u relate-pop3.service --no-pager -o cat").stdout
    assert "relate-pop3.service: Watchdog timeout" in journal, journal[-2000:]
    p = poplib.POP3_SSL("127.0.0.1", 995, context=_tls(), timeout=30)
    p.user(USER)
    p.pass_(key)
    p.quit()


def test_kill_9_restarts_the_daemon_and_keeps_accepted_mail(booted: Container, key: str) -> None:
    """kill -9 after 250: relate-smtp is restarted, accepted mail is in the INBOX, a waiting client is served."""
    booted.wait_active()
    subjects = [f"kill -9 test {uuid.uuid4()}" for _ in range(3)]
    victim = booted.main_pid("smtp")
    before = int(booted.show("relate-smtp.service", "NRestarts")["NRestarts"])
    s = smtplib.SMTP("127.0.0.1", 587, timeout=30)
    s.starttls(context=_tls())
    s.login(USER, key)
    for subject in subjects:
        msg = EmailMessage()
        msg["From"], msg["To"], msg["Subject"] = USER, USER, subject
        msg.set_content("Accepted means committed.\n")
        assert s.send_message(msg) == {}
    booted.run(f"kill -9 {victim}")
    with pytest.raises((smtplib.SMTPServerDisconnected, OSError)):
        s.noop()
    s.close()
    # Connected while no daemon runs: the socket unit queues the connection and the restarted daemon greets it.
    with smtplib.SMTP("127.0.0.1", 25, timeout=30) as waiting:
        assert waiting.ehlo()[0] == 250
    after = _wait_restarted(booted, "smtp", victim, 30)
    assert int(after["NRestarts"]) == before + 1
    assert set(subjects) <= _subjects_in_inbox(key)


def test_tls_reload_serves_the_new_certificate_on_every_listener(booted: Container) -> None:
    """After `relatectl tls reload` all seven listeners serve the new certificate; a live session keeps going."""
    booted.wait_active()
    rows = json.loads(booted.run("relatectl tls status --json").stdout)
    assert {(r["cert"], r["key"]) for r in rows} == {("/etc/relate/tls/cert.pem", "/etc/relate/tls/key.pem")}
    live = imaplib.IMAP4_SSL("127.0.0.1", 993, ssl_context=_tls(), timeout=30)
    old = _peer(live.sock)
    # As an admin renews: new files in place (ownership and modes kept), then the reload.
    booted.run(
        """/usr/lib/relate-mail/bin/python3 - <<'EOF'
from pathlib import Path
from relate.runtime.tls import make_self_signed
make_self_signed(Path("/etc/relate/tls/cert.pem"), Path("/etc/relate/tls/key.pem"), "renewed.relate.test")
EOF"""
    )
    assert booted.run("stat -c '%U:%G %a' /etc/relate/tls/key.pem").stdout.split() == ["root:relate", "640"]
    new = ssl.PEM_cert_to_DER_cert(booted.run("cat /etc/relate/tls/cert.pem").stdout)
    assert new != old
    out = booted.run("relatectl tls reload").stdout
    assert "reloaded relate.target" in out
    for unit, port, how in SOCKETS:
        assert _served_certificate(port, how) == new, f"{unit} (port {port}) still serves the old certificate"
    assert live.noop()[0] == "OK"
    live.logout()
    reloaded = booted.run("journalctl -b -u relate-smtp.service -u relate-imap.service -u relate-pop3.service -o cat")
    assert reloaded.stdout.count("reloading TLS certificates") >= 3


def test_relatectl_status_shows_all_five_daemons(booted: Container) -> None:
    """`relatectl status` (exit 0) lists a live smtp, imap, pop3, api and delivery daemon on the booted host."""
    booted.wait_active()
    time.sleep(1)  # a daemon restarted by an earlier test writes its first heartbeat just after READY=1
    done = booted.run("relatectl status --json")
    report = json.loads(done.stdout)
    live: dict[str, set[int]] = {}
    for daemon in report["daemons"]:
        if not daemon["stale"]:
            live.setdefault(daemon["service"], set()).add(daemon["pid"])
    # (A process killed by an earlier test keeps its row until it goes stale.)
    assert set(live) == set(SERVICES), report["daemons"]
    for service in SERVICES:
        assert booted.main_pid(service) in live[service], (service, report["daemons"])
    table = booted.run("COLUMNS=200 relatectl status").stdout
    for service in SERVICES:
        assert service in table


def test_daemon_logs_reach_the_journal_with_structured_fields(booted: Container) -> None:
    """A refused IMAP login is a warning journal entry of relate-imap.service with its logger and code location."""
    booted.wait_active()
    wrong = "nobody-" + uuid.uuid4().hex[:8] + "@relate.test"
    c = imaplib.IMAP4_SSL("127.0.0.1", 993, ssl_context=_tls(), timeout=30)
    with pytest.raises(imaplib.IMAP4.error):
        c.login(wrong, "not-a-key")
    c.logout()
    relate_uid = booted.run("id -u relate").stdout.strip()
    deadline = time.monotonic() + 10
    while True:
        lines = booted.run("journalctl -b -u relate-imap.service -o json --no-pager").stdout.splitlines()
        entries = [json.loads(line) for line in lines]
        found = [e for e in entries if wrong in str(e.get("MESSAGE", ""))]
        if found or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert len(found) == 1, entries[-5:]
    entry = found[0]
    assert "auth-failure service=imap" in entry["MESSAGE"]
    assert entry["PRIORITY"] == "4"  # warning
    assert entry["SYSLOG_IDENTIFIER"] == "relate-imap"
    assert entry["_SYSTEMD_UNIT"] == "relate-imap.service"
    assert entry["_UID"] == relate_uid
    assert entry["_PID"] == str(booted.main_pid("imap"))
    # Sent over journald's native protocol, so an admin can select on them (journalctl LOGGER=relate.auth).
    assert entry["_TRANSPORT"] == "journal"
    assert entry["LOGGER"] == "relate.auth"
    assert entry["CODE_FILE"].endswith("/site-packages/relate/auth.py")
    assert entry["CODE_FUNC"] == "_refuse"
    assert int(entry["CODE_LINE"]) > 0
    selected = booted.run(
        f"journalctl -b -u relate-imap.service LOGGER=relate.auth -p warning -o cat | grep -c {wrong}"
    )
    assert selected.stdout.strip() == "1"


def _refused(port: int) -> bool:
    """Nothing listens on ``port`` (a connection is refused at once)."""
    try:
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
    except ConnectionRefusedError:
        return True
    return False


def test_setup_masks_a_protocol_switched_off_and_unmasks_it_when_on_again(booted: Container, key: str) -> None:
    """pop3.enabled: false then `relatectl setup`: systemd stops listening on 110 and 995, even across a restart
    of relate.target, with the system not degraded; switched on again, setup brings POP3 back."""
    booted.wait_active()
    config = "/etc/relate/relate.yaml"
    booted.run(f"cp -p {config} /root/relate.yaml.before && printf 'pop3:\\n  enabled: false\\n' >>{config}")
    try:
        out = booted.run("relatectl setup --non-interactive").stdout
        assert "pop3 is off (pop3.enabled is false): masked and stopped relate-pop3.service" in out, out
        booted.run("systemctl restart relate.target")  # relate.target wants them: masked, they stay off
        units = ["relate-pop3.service", "relate-pop3.socket", "relate-pop3s.socket"]
        assert booted.run("systemctl is-enabled " + " ".join(units), check=False).stdout.split() == ["masked"] * 3
        assert _refused(110)
        assert _refused(995)
        assert booted.run("systemctl is-system-running").stdout.strip() == "running"
    finally:
        booted.run(f"cp -p /root/relate.yaml.before {config}")
    out = booted.run("relatectl setup --non-interactive").stdout
    assert "pop3 is on: unmasked relate-pop3.service relate-pop3.socket relate-pop3s.socket" in out, out
    booted.wait_active()
    p = poplib.POP3_SSL("127.0.0.1", 995, context=_tls(), timeout=30)
    p.user(USER)
    p.pass_(key)
    p.quit()


def test_setup_masks_a_single_listener_switched_off(booted: Container, key: str) -> None:
    """imap.imap.enabled: false (IMAPS stays on) then `relatectl setup`: systemd stops listening on 143, where it
    would otherwise accept connections that relate-imap never answers, while 993 serves; on again, 143 is back."""
    booted.wait_active()
    config = "/etc/relate/relate.yaml"
    off = "imap:\\n  imap:\\n    enabled: false\\n"
    booted.run(f"cp -p {config} /root/relate.yaml.before && printf '{off}' >>{config}")
    try:
        out = booted.run("relatectl setup --non-interactive").stdout
        assert "imap.imap is off (imap.imap.enabled is false): masked and stopped relate-imap.socket" in out, out
        assert "imap: restarted relate-imap.service" in out, out  # it held 143's socket from its start
        assert _refused(143)
        booted.run("systemctl restart relate.target")
        states = booted.run("systemctl is-enabled relate-imap.socket relate-imaps.socket", check=False).stdout
        plain, tls = states.split()
        assert plain == "masked"
        assert tls != "masked"
        assert _refused(143)
        imaps = imaplib.IMAP4_SSL("127.0.0.1", 993, ssl_context=_tls(), timeout=30)
        imaps.login(USER, key)
        imaps.logout()
        assert booted.run("systemctl is-system-running").stdout.strip() == "running"
    finally:
        booted.run(f"cp -p /root/relate.yaml.before {config}")
    out = booted.run("relatectl setup --non-interactive").stdout
    assert "imap is on: unmasked relate-imap.socket" in out, out
    assert "imap: restarted relate-imap.service" in out, out
    booted.wait_active()
    imap = imaplib.IMAP4("127.0.0.1", 143, timeout=30)
    assert imap.capability()[0] == "OK"
    imap.logout()


# --- A package upgrade that carries a migration --------------------------------------------------------------
#
# The next release is this tree's package repacked with one migration more and a higher version; `dpkg -i` of it
# on the booted container is an admin's `apt upgrade`. Last in the file: it leaves the container on that release.


@dataclass(frozen=True)
class Release:
    deb: Path
    version: str
    migration: str  # the one migration it has more, as "NNNN_name"


@pytest.fixture(scope="module")
def next_release(deb: Path, tmp_path_factory: pytest.TempPathFactory) -> Release:
    """The next release: the package built from this tree, repacked with one migration more and a higher version.

    Repacked rather than built again (a second build-deb took 40 to 120 s): the migration file goes where the
    wheel put the others, ``relate.__version__`` and the control file's Version get ".post1", md5sums follow.
    """
    started = time.monotonic()
    work = tmp_path_factory.mktemp("next-release")
    root = work / "root"
    subprocess.run(["dpkg-deb", "-R", str(deb), str(root)], check=True, timeout=300)
    control = root / "DEBIAN" / "control"
    text = control.read_text(encoding="utf-8")
    version = next(line.split(": ", 1)[1] for line in text.splitlines() if line.startswith("Version: "))
    newer = f"{version}.post1"
    control.write_text(text.replace(f"Version: {version}\n", f"Version: {newer}\n"), encoding="utf-8")
    (package,) = (root / "usr" / "lib" / "relate-mail" / "lib").glob("python3*/site-packages/relate")
    init = package / "__init__.py"
    text = init.read_text(encoding="utf-8")
    assert f'__version__ = "{version}"' in text
    init.write_text(text.replace(f'__version__ = "{version}"', f'__version__ = "{newer}"'), encoding="utf-8")
    migrations = package / "store" / "migrations"
    number = max(int(path.name[:4]) for path in migrations.glob("[0-9][0-9][0-9][0-9]_*.sql")) + 1
    migration = f"{number:04d}_upgrade_test"
    (migrations / f"{migration}.sql").write_text(
        f"CREATE TABLE upgrade_test (release text NOT NULL);\nINSERT INTO upgrade_test VALUES ('{newer}');\n"
    )
    files = sorted(
        path.relative_to(root).as_posix()
        for path in root.rglob("*")
        if path.is_file() and not path.is_symlink() and path.relative_to(root).parts[0] != "DEBIAN"
    )
    sums = "".join(f"{hashlib.md5((root / name).read_bytes()).hexdigest()}  {name}\n" for name in files)  # noqa: S324
    (root / "DEBIAN" / "md5sums").write_text(sums, encoding="utf-8")
    out = work / deb.name.replace(f"_{version}_", f"_{newer}_")
    subprocess.run(
        ["dpkg-deb", "--root-owner-group", "-Zgzip", "-z1", "--build", str(root), str(out)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    print(f"the next release repacked in {time.monotonic() - started:.0f} s")
    return Release(out, newer, migration)


def _restarts(box: Container) -> dict[str, tuple[int, int]]:
    """Each service's (MainPID, NRestarts)."""
    found = {}
    for service in SERVICES:
        shown = box.show(f"relate-{service}.service", "MainPID", "NRestarts")
        found[service] = (int(shown["MainPID"]), int(shown["NRestarts"]))
    return found


def _imap_login(key: str) -> None:
    c = imaplib.IMAP4_SSL("127.0.0.1", 993, ssl_context=_tls(), timeout=30)
    c.login(USER, key)
    assert c.select("INBOX", readonly=True)[0] == "OK"
    c.logout()


def _dpkg_install(box: Container, deb: Path) -> subprocess.CompletedProcess[str]:
    """``dpkg -i`` of ``deb`` in the container, as an admin's upgrade runs it (exit status not checked)."""
    shutil.copy(deb, box.inbox / deb.name)
    started = time.monotonic()
    done = box.run(f"DEBIAN_FRONTEND=noninteractive dpkg -i /root/relate-test/{deb.name}", timeout=600, check=False)
    print(f"dpkg -i {deb.name} took {time.monotonic() - started:.0f} s (exit {done.returncode})")
    print("\n".join(line for line in (done.stdout + done.stderr).splitlines() if line.startswith("relate-mail:")))
    return done


def test_package_upgrade_migrates_the_database_then_restarts_the_daemons(
    booted: Container, key: str, next_release: Release
) -> None:
    """`dpkg -i` of a release with a new migration applies it, then restarts the daemons, which serve on it."""
    booted.wait_active()
    migration = next_release.migration
    before = _restarts(booted)
    done = _dpkg_install(booted, next_release.deb)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert f"relate-mail: applied {migration}" in done.stdout, done.stdout + done.stderr
    booted.wait_active()
    after = _restarts(booted)
    for service in SERVICES:  # restarted once by postinst (a new pid), never by systemd's Restart=
        assert after[service][0] != before[service][0], (service, before, after)
        assert after[service][1] == before[service][1], (service, before, after)
    rows = json.loads(booted.run("relatectl db status --json").stdout)
    assert all(row["applied"] for row in rows), rows
    assert f"{rows[-1]['version']:04d}_{rows[-1]['name']}" == migration
    status = booted.run("dpkg-query -W -f '${Status} ${Version}' relate-mail").stdout
    assert status == f"install ok installed {next_release.version}"
    assert booted.run("relatectl --version").stdout.strip() == f"relatectl {next_release.version}"
    _imap_login(key)  # a key made under the previous release, served by the new one
    assert booted.run("systemctl is-system-running").stdout.strip() == "running"


def test_package_upgrade_with_the_database_down_configures_and_restarts_nothing(
    booted: Container, key: str, next_release: Release
) -> None:
    """PostgreSQL stopped: dpkg -i succeeds, says what failed and what to run, and no daemon restarts or loops."""
    booted.wait_active()
    before = _restarts(booted)
    booted.run("systemctl stop postgresql.service")
    try:
        done = _dpkg_install(booted, next_release.deb)  # a reinstall of the release now installed
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        assert "relate-mail: the database schema was not migrated to this release: " in done.stderr, done.stderr
        assert "relate-mail:     relatectl db migrate\n" in done.stderr
        assert "relate-mail:     systemctl restart relate.target\n" in done.stderr
        assert "Traceback" not in done.stderr
        status = booted.run("dpkg-query -W -f '${Status} ${Version}' relate-mail").stdout
        assert status == f"install ok installed {next_release.version}"
        time.sleep(5)  # long enough for systemd to have restarted a daemon (RestartSec=2s)
        assert _restarts(booted) == before
        booted.wait_active(timeout=1)
    finally:
        booted.run("systemctl start postgresql.service")
    # The two commands the message names finish the upgrade.
    assert "nothing to do" in booted.run("relatectl db migrate").stdout
    booted.run("systemctl restart relate.target")
    booted.wait_active()
    _imap_login(key)
