#!/usr/bin/env bash
# Provision a Debian 12 machine with Relate Mail from its .deb, then prove it
# works: the Vagrantfile's whole provisioning, and what the package-install
# test (tests/packaging/test_deb.py) runs in a debootstrapped root.
#
#   packaging/provision.sh [--no-systemd] PATH/TO/relate-mail_*.deb
#
# 1. apt installs the .deb and PostgreSQL;
# 2. `relatectl setup --non-interactive` (as root, no DSN: it creates the
#    relate role and database on the local PostgreSQL);
# 3. a user and a key;
# 4. systemd: `systemctl enable --now relate.target`. With --no-systemd (a
#    chroot), PostgreSQL is started with pg_ctlcluster and the daemons as the
#    relate user on loopback ports ($SMTP_PORT, $IMAPS_PORT, $POP3S_PORT,
#    $API_PORT), as they would bind them without socket activation;
# 5. the smoke test: a message sent by SMTP submission is read back by IMAP
#    and by POP3, and listed by the API (GET /api/emails) when relate-api is
#    installed.
# Exits non-zero at the first step that fails. Re-runnable: every step is
# idempotent (setup, user and key creation say so when there is nothing to do).
set -euo pipefail

systemd=1
if [ "${1:-}" = --no-systemd ]; then
    systemd=0
    shift
fi
deb="${1:?usage: provision.sh [--no-systemd] relate-mail_VERSION_ARCH.deb}"
domain="${RELATE_TEST_DOMAIN:-relate.test}"
hostname="mail.$domain"
user="postmaster@$domain"

echo "provision: installing $deb and PostgreSQL"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "$(realpath "$deb")" postgresql >/dev/null

pids=()
if [ "$systemd" = 0 ]; then
    smtp_port="${SMTP_PORT:-2587}" imaps_port="${IMAPS_PORT:-2993}" pop3s_port="${POP3S_PORT:-2995}"
    api_port="${API_PORT:-8080}"
    # Only the Unix socket: nothing else on this machine is disturbed.
    echo "listen_addresses = ''" >/etc/postgresql/15/main/conf.d/relate-provision.conf
    pg_ctlcluster 15 main start || pg_ctlcluster 15 main status >/dev/null
else
    smtp_port=587 imaps_port=993 pop3s_port=995 api_port=8080
fi

echo "provision: relatectl setup"
relatectl setup --non-interactive --hostname "$hostname" --domain "$domain"
# As root, relatectl reaches the peer-authenticated database as the relate role.
relatectl user list --json | grep -q "\"$user\"" || relatectl user add "$user"
key="$(relatectl key create "$user" --scope smtp,imap,pop3,api:read --name provision --json |
    /usr/lib/relate-mail/bin/python3 -c 'import json, sys; print(json.load(sys.stdin)["key"])')"

if [ "$systemd" = 1 ]; then
    systemctl enable --now relate.target
else
    run_daemon() {
        local name="$1"
        shift
        [ -x "/usr/bin/$name" ] || return 0
        env "$@" runuser -u relate -- "/usr/bin/$name" >"/var/log/$name.log" 2>&1 &
        pids+=($!)
    }
    trap 'kill "${pids[@]}" 2>/dev/null || true; pg_ctlcluster 15 main stop || true' EXIT
    install -d -o relate -g relate -m 0750 /run/relate
    off='RELATE_SMTP__MX__LISTEN= RELATE_SMTP__SUBMISSIONS__LISTEN= RELATE_IMAP__IMAP__LISTEN= RELATE_POP3__POP3__LISTEN='
    # shellcheck disable=SC2086 # $off is a list of NAME=VALUE words
    run_daemon relate-smtp $off "RELATE_SMTP__SUBMISSION__LISTEN=127.0.0.1:$smtp_port"
    # shellcheck disable=SC2086
    run_daemon relate-imap $off "RELATE_IMAP__IMAPS__LISTEN=127.0.0.1:$imaps_port"
    # shellcheck disable=SC2086
    run_daemon relate-pop3 $off "RELATE_POP3__POP3S__LISTEN=127.0.0.1:$pop3s_port"
    run_daemon relate-api "RELATE_API__LISTEN=127.0.0.1:$api_port"
    run_daemon relate-delivery
fi

echo "provision: smoke test"
SMOKE_USER="$user" SMOKE_KEY="$key" SMTP_PORT="$smtp_port" IMAPS_PORT="$imaps_port" POP3S_PORT="$pop3s_port" \
    API_PORT="$api_port" SMOKE_API="$([ -x /usr/bin/relate-api ] && echo 1 || echo 0)" \
    /usr/lib/relate-mail/bin/python3 - <<'EOF'
"""Send by submission, read by IMAP and POP3, list by the API; retry while the daemons start."""
import imaplib, json, os, poplib, smtplib, ssl, time, urllib.request, uuid
from email.message import EmailMessage

user, key = os.environ["SMOKE_USER"], os.environ["SMOKE_KEY"]
tls = ssl.create_default_context()
tls.check_hostname, tls.verify_mode = False, ssl.CERT_NONE  # setup's self-signed certificate
subject = f"provision smoke test {uuid.uuid4()}"


def retry(what, fn, seconds=60.0):
    deadline = time.monotonic() + seconds
    while True:
        try:
            return fn()
        except (OSError, AssertionError, imaplib.IMAP4.error, poplib.error_proto, smtplib.SMTPException) as exc:
            if time.monotonic() > deadline:
                raise SystemExit(f"smoke test: {what} failed: {exc!r}")
            time.sleep(0.5)


def send():
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = user, user, subject
    msg.set_content("It works.\n")
    with smtplib.SMTP("127.0.0.1", int(os.environ["SMTP_PORT"]), timeout=30) as s:
        s.starttls(context=tls)
        s.login(user, key)
        s.send_message(msg)


def imap():
    c = imaplib.IMAP4_SSL("127.0.0.1", int(os.environ["IMAPS_PORT"]), ssl_context=tls, timeout=30)
    c.login(user, key)
    c.select("INBOX", readonly=True)
    typ, data = c.search(None, "SUBJECT", f'"{subject}"')
    assert typ == "OK" and data[0].split(), "not in INBOX yet"
    c.logout()


def pop3():
    p = poplib.POP3_SSL("127.0.0.1", int(os.environ["POP3S_PORT"]), context=tls, timeout=30)
    p.user(user)
    p.pass_(key)
    count, _ = p.stat()
    found = any(subject.encode() in b"\n".join(p.top(i, 0)[1]) for i in range(1, count + 1))
    p.quit()
    assert found, "not in the POP3 maildrop"


def api():
    req = urllib.request.Request(
        f"http://127.0.0.1:{os.environ['API_PORT']}/api/emails", headers={"Authorization": f"Bearer {key}"}
    )
    with urllib.request.urlopen(req, timeout=30) as resp:
        assert subject in resp.read().decode(), "not listed by GET /api/emails"


retry("SMTP submission", send)
print("smoke: sent by SMTP submission")
retry("IMAP", imap)
print("smoke: read by IMAP")
retry("POP3", pop3)
print("smoke: read by POP3")
if os.environ["SMOKE_API"] == "1":
    retry("API", api)
    print("smoke: listed by GET /api/emails")
else:
    print("smoke: relate-api not installed, API not checked")
print("smoke: ok")
EOF
echo "provision: done; Relate Mail serves $domain on $hostname"
