"""The one typed configuration schema every Relate Mail process shares.

Sources, later ones winning:

1. the defaults below;
2. one YAML file (``/etc/relate/relate.yaml``, or ``--config PATH`` /
   ``RELATE_CONFIG``);
3. environment variables: ``RELATE_`` + the upper-case key path joined by
   ``__`` (``RELATE_DATABASE__DSN``, ``RELATE_INTERNAL__API_KEY``).

Any string key ``k`` may instead be given as ``k_file`` (in YAML, or
``RELATE_..._FILE`` in the environment): the file is read and its content,
stripped of surrounding whitespace, is the value. Secrets are best passed
that way (systemd credentials, Kubernetes secrets).

Unknown keys and bad values raise :class:`ConfigError` with one line naming
the key, what is wrong with the value, and where it came from. Nothing is
ever logged from here: values may be secrets.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
import socket
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

DEFAULT_PATH = Path("/etc/relate/relate.yaml")
ENV_PREFIX = "RELATE_"
ENV_CONFIG = "RELATE_CONFIG"


class ConfigError(Exception):
    """A configuration problem, worded as one line for the admin."""


@dataclass
class DatabaseConfig:
    # None means "not configured": daemons refuse to start, `relatectl dev`
    # and the tests start an embedded PostgreSQL instead.
    dsn: str | None = None
    pool_min: int = 1
    pool_max: int = 10
    connect_timeout: float = 10.0
    command_timeout: float = 60.0
    # Longest wait for a free pooled connection; then the client gets a temporary error.
    acquire_timeout: float = 10.0


@dataclass
class InternalConfig:
    # The key daemons present to the API's internal endpoints (scope
    # `internal`); `relatectl setup` generates it.
    api_key: str | None = None
    api_socket: Path = Path("/run/relate/api.sock")
    # No longer used (accepted so that existing configuration files load):
    # daemons announced new mail to this URL, with this timeout, before the
    # change feed did (relate-api hears new mail from the database now).
    api_url: str | None = None
    notify_timeout: float = 2.0
    # Seconds between a daemon's heartbeats in the database (`relatectl status`);
    # a daemon silent for three intervals is shown as stale.
    heartbeat_seconds: float = 15.0


@dataclass
class AuthConfig:
    # Seconds a successful key verification is trusted without bcrypt again;
    # a revoked key stops working everywhere within this window.
    cache_seconds: float = 30.0
    # Failed-login throttle, counted in the database (every host shares it):
    # this many failures of one login from one client address within the
    # window lock that login out from that address ...
    max_failures: int = 5
    # ... and this many of any logins lock the whole address out.
    max_failures_per_address: int = 50
    failure_window_seconds: float = 900.0
    lockout_seconds: float = 900.0
    # bcrypt work factor. A work factor slows the guessing of human-chosen
    # passwords; keys are 192-bit random secrets that no amount of guessing
    # finds, so the factor buys nothing but CPU per cold login (6: about
    # 4 ms; 10: about 70 ms). Keys hashed with another factor are re-hashed
    # with this one at their next successful login.
    bcrypt_rounds: int = 6


@dataclass
class TLSConfig:
    # Default certificate for every listener; services may override.
    cert: Path | None = None
    key: Path | None = None


@dataclass
class ListenerConfig:
    """One role's listening sockets and, optionally, its own certificate."""

    # "host:port" items ("[::]:25" for IPv6); an empty list turns the role off.
    listen: list[str] = field(default_factory=list)
    # false: this listener is off, also under systemd (the socket its .socket unit passes is closed unserved:
    # `relatectl setup` as root masks that unit); a protocol whose every listener is off is off as a whole.
    enabled: bool = True
    # Certificate and key for this listener; default: tls.cert / tls.key.
    cert: Path | None = None
    key: Path | None = None


def _address_or_empty(text: str | None) -> bool:
    from relate.errors import Invalid
    from relate.mail.address import normalize_address

    if not text:
        return True
    try:
        normalize_address(text)
    except Invalid:
        return False
    return True


# An origin (RFC 6454 §6.2): scheme://host[:port], no path; or "*" for any.
_ORIGIN = re.compile(r"\*|https?://(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]{1,253})(?::[0-9]{1,5})?")
_DSN_HOST = re.compile(r"(?:\[[0-9A-Fa-f:.]+\]|[^:\[\]]*)(?::[0-9]{1,5})?")


def _postgres_uri(dsn: str | None) -> bool:
    """Whether ``dsn`` is unset or a PostgreSQL URI (the only DSN form the database driver reads) whose
    hosts (``host[:port]``, comma-separated) have numeric ports."""
    if dsn is None:
        return True
    scheme, _, rest = dsn.partition("://")
    if scheme not in ("postgresql", "postgres") or not _:
        return False
    hosts = rest.split("/", 1)[0].split("?", 1)[0].rpartition("@")[2]
    return all(_DSN_HOST.fullmatch(host) for host in hosts.split(","))


def _http_url_or_empty(text: str | None) -> bool:
    from urllib.parse import urlsplit

    if not text:
        return True
    try:
        parts = urlsplit(text)
        _ = parts.port  # raises on a bad port
    except ValueError:
        return False
    return parts.scheme in {"http", "https"} and bool(parts.hostname)


def _oidc_issuer(text: str | None) -> bool:
    """An https URL, or http on a loopback address (a provider on the same host, as in the tests)."""
    from urllib.parse import urlsplit

    if not text:
        return True
    if not _http_url_or_empty(text):
        return False
    parts = urlsplit(text)
    return parts.scheme == "https" or parts.hostname in {"127.0.0.1", "::1", "localhost"}


def _has_special(text: str) -> bool:
    return any(ch.isspace() or ch in ';"()\\' for ch in text)


def _listener(*addresses: str) -> Callable[[], ListenerConfig]:
    return lambda: ListenerConfig(listen=list(addresses))


@dataclass
class MailAuthConfig:
    """SPF, DKIM and DMARC on mail arriving over port 25 (relate/mailauth)."""

    # Check inbound mail and write Authentication-Results (RFC 8601); off: mail
    # is taken as it comes, with no header and no policy.
    enabled: bool = True
    # The authserv-id of our Authentication-Results fields; unset: the host name.
    authserv_id: str | None = None
    # A DMARC failure whose domain asks p=reject: "refuse" (550 5.7.1 at the
    # end of DATA) or "junk" (delivered to the Junk folder). p=quarantine
    # always files in Junk; a forged From of a hosted domain is always refused.
    dmarc_reject: str = "refuse"
    # ARC sealers (the d= of their ARC-Seal, e.g. "lists.example.org") whose word is
    # trusted: a DMARC failure is overridden (delivered) when the ARC chain passes
    # and, going down from the newest set through trusted sealers only, one of them
    # saw dmarc=pass (RFC 8617; forwarders and lists that change the message).
    # Empty: ARC is checked and reported, never overrides anything.
    arc_trusted_sealers: list[str] = field(default_factory=list)


@dataclass
class RspamdConfig:
    """The spam filter: a running rspamd spoken to over HTTP (relate/spam)."""

    # The normal worker's address, e.g. "http://127.0.0.1:11333"; unset or empty: no spam filtering.
    url: str | None = None
    # The controller worker's address, for learning from moves into and out of Junk
    # (e.g. "http://127.0.0.1:11334"); unset or empty: nothing is learnt.
    controller_url: str | None = None
    # The controller's password, when it asks for one (give it as password_file).
    password: str | None = None
    # Seconds a check (or a learn call) may take before rspamd counts as unreachable.
    timeout: float = 10.0
    # rspamd unreachable (or answering nonsense): "accept" (delivered unchecked, and
    # said so in X-Spam-Status) or "tempfail" (451 4.7.1: the sender tries later).
    on_unreachable: str = "accept"
    # Larger mail is not sent to rspamd: delivered unchecked, and said so in X-Spam-Status.
    max_size: int = 20 * 1024 * 1024
    # Check mail an authenticated user submits (587/465) too; off: skipped, and said so.
    check_submission: bool = False
    # A sender on a recipient's block list: "junk" (filed in Junk) or "refuse"
    # (550 5.7.1, when every recipient blocks the sender).
    block_action: str = "junk"
    # rspamd's "rewrite subject" action: the Subject becomes the one rspamd gives
    # (its actions.subject, e.g. "***SPAM*** %s") and the message is filed in
    # "inbox" (marked, where the user sees it) or "junk".
    rewrite_subject_folder: str = "inbox"
    # Learning: how often the queue of moves into and out of Junk is looked at,
    # and how many times one learn call is tried before it is given up.
    learn_interval: float = 5.0
    learn_attempts: int = 5


@dataclass
class SmtpConfig:
    # false: no SMTP at all (relate-smtp exits at once, the dev run does not start it); the delivery daemon
    # still sends the queue, and local mail still arrives through the REST API.
    enabled: bool = True
    mx: ListenerConfig = field(default_factory=_listener("0.0.0.0:25", "[::]:25"))
    submission: ListenerConfig = field(default_factory=_listener("0.0.0.0:587", "[::]:587"))
    submissions: ListenerConfig = field(default_factory=_listener("0.0.0.0:465", "[::]:465"))
    max_message_size: int = 50 * 1024 * 1024
    max_recipients: int = 100
    max_connections_per_client: int = 20
    max_connections: int = 1000
    # Longest line accepted in commands and message data; RFC 5321 says 1000,
    # real mail (unwrapped HTML) is often longer, so the default is lenient.
    max_line_length: int = 10240
    # Idle time allowed between commands, and for the whole DATA transfer
    # (RFC 5321 §4.5.3.2 asks for at least 5 and 10 minutes).
    command_timeout: float = 300.0
    data_timeout: float = 600.0
    # Bytes of mail held in memory at once while messages are stored (each needs
    # about twice its size; see runtime/budget.py). A message that does not fit
    # waits up to memory_wait seconds, then gets 452 4.3.1.
    memory_budget: int = 128 * 1024 * 1024
    memory_wait: float = 60.0
    # Where mail to postmaster goes (RFC 5321 §4.5.1) when the domain has no
    # postmaster address of its own, and mail to the bare <postmaster>; unset:
    # the domain's first user (for <postmaster>: of the first hosted domain).
    postmaster: str | None = None
    # Errors in a row (bad syntax, bad sequence, lines too long) a session may make; then 421 and close.
    max_bad_commands: int = 20
    # Unknown verbs a session may send (a web browser, a port scanner); then 502 and close.
    max_unknown_commands: int = 5
    mailauth: MailAuthConfig = field(default_factory=MailAuthConfig)
    rspamd: RspamdConfig = field(default_factory=RspamdConfig)

    def listeners(self) -> dict[str, ListenerConfig]:
        """The three roles by name: mx, submission (STARTTLS), submissions (implicit TLS)."""
        return {"mx": self.mx, "submission": self.submission, "submissions": self.submissions}


@dataclass
class ImapConfig:
    # false: no IMAP at all (relate-imap exits at once, the dev run does not start it).
    enabled: bool = True
    imap: ListenerConfig = field(default_factory=_listener("0.0.0.0:143", "[::]:143"))  # STARTTLS
    imaps: ListenerConfig = field(default_factory=_listener("0.0.0.0:993", "[::]:993"))  # implicit TLS
    # LOGIN/AUTHENTICATE before TLS: refused (LOGINDISABLED) unless this is set.
    allow_plaintext_auth: bool = False
    # Longest command line, and the most octets a command may hold outside an APPEND message (its
    # lines and other literals together); a longer line is answered BAD as soon as it passes this.
    max_line_length: int = 65536
    # The largest literal (APPEND message) accepted; advertised as APPENDLIMIT.
    max_literal_size: int = 50 * 1024 * 1024
    # Octets of all the messages of one APPEND together (MULTIAPPEND; CATENATE text and URL parts): at
    # least max_literal_size, whatever is set here. Spooled to disk while they arrive.
    max_append_size: int = 100 * 1024 * 1024
    max_connections_per_user: int = 50
    max_connections_per_client: int = 50
    max_connections: int = 5000
    # Seconds without a command before the server says BYE (RFC 9051 §5.4: at least 30 minutes).
    idle_timeout: float = 1800.0
    max_bad_commands: int = 20
    # As smtp.memory_budget, for APPEND (each reserves twice its message while storing it); past it,
    # an APPEND waits up to memory_wait seconds, then gets NO [LIMIT].
    memory_budget: int = 128 * 1024 * 1024
    memory_wait: float = 60.0
    # Searches one session keeps up to date (RFC 5267 SEARCH/SORT RETURN (UPDATE)); past it, NO [NOUPDATE].
    max_update_contexts: int = 8
    # THREAD=REFERENCES/REFS: message-ids no message in the mailbox has that one THREAD keeps (about 150
    # bytes each; references to further ones are skipped), and steps of its loop checks (past them, links
    # that need one are not made).
    thread_max_dummies: int = 500_000
    thread_max_walk: int = 5_000_000
    # STORE, the \Seen a FETCH sets, EXPUNGE and CLOSE wait for PostgreSQL's disk flush before their OK.
    # Off (the default, as Dovecot leaves its index unsynced): a database crash may forget the last
    # fraction of a second of such changes; stored mail (APPEND, COPY, MOVE's target) always waits.
    durable_changes: bool = False


@dataclass
class Pop3Config:
    # false: no POP3 at all (relate-pop3 exits at once, the dev run does not start it).
    enabled: bool = True
    pop3: ListenerConfig = field(default_factory=_listener("0.0.0.0:110", "[::]:110"))  # STLS
    pop3s: ListenerConfig = field(default_factory=_listener("0.0.0.0:995", "[::]:995"))  # implicit TLS
    # USER/PASS and AUTH before TLS: refused unless this is set.
    allow_plaintext_auth: bool = False
    # RFC 1939 §3: an inactivity autologout timer of at least 10 minutes.
    idle_timeout: float = 600.0
    max_line_length: int = 1024
    max_connections_per_client: int = 20
    max_connections: int = 1000
    max_bad_commands: int = 20


@dataclass
class SmarthostConfig:
    """A relay that takes all outbound mail (or mail for ``domains``) instead of MX delivery."""

    host: str | None = None
    port: int = 587
    # "starttls" (required), "tls" (implicit, port 465) or "none" (loopback relays only).
    tls: str = "starttls"
    username: str | None = None
    password: str | None = None
    # Empty: every remote domain goes through the smarthost.
    domains: list[str] = field(default_factory=list)


@dataclass
class DeliveryConfig:
    # DNS servers ("ip" or "ip:port"); empty means the system resolver (/etc/resolv.conf).
    dns_servers: list[str] = field(default_factory=list)
    dns_timeout: float = 10.0
    # The port remote MTAs listen on; only tests and unusual setups change it.
    port: int = 25
    connect_timeout: float = 30.0
    command_timeout: float = 300.0
    # Opportunistic STARTTLS by default; true refuses to send without TLS.
    require_tls: bool = False
    max_connections: int = 20
    max_connections_per_domain: int = 4
    messages_per_connection: int = 100
    batch_size: int = 500
    # Claimed work stays with this daemon this long, renewed every third of it while it works; after
    # a crash another daemon (or this one restarted) takes it over when the lease ends.
    lease_seconds: float = 60.0
    # Bytes of queued messages one connection reads from the database ahead of sending them (at
    # least one message): bounds the memory a batch of large messages takes.
    read_ahead_bytes: int = 1024 * 1024
    poll_seconds: float = 30.0
    # Retry schedule: first retry after retry_first seconds, doubling (±10%
    # jitter) up to retry_max, until the message is max_age seconds old.
    retry_first: float = 60.0
    retry_max: float = 3600.0
    max_age: float = 5 * 24 * 3600.0
    # Tell the sender once when a message is still undelivered after this long; 0 = never.
    delay_warning: float = 4 * 3600.0
    # The public addresses this host's mail leaves from, as remote servers see them (behind NAT: the
    # outside address); `relatectl domain check` checks SPF and reverse DNS for them. Empty: the
    # addresses `hostname` resolves to.
    outbound_addresses: list[str] = field(default_factory=list)
    # MTA-STS (RFC 8461): fetch, cache and apply recipient domains' policies; an `enforce` policy sends
    # only to MX hosts it lists, with a verified certificate, or the mail waits (and in the end bounces).
    mta_sts: bool = True
    # Trust anchors (a PEM file) for verified TLS (MTA-STS policy fetches, MX hosts under an enforce
    # policy) in place of the system's; unset: the system store.
    tls_ca_file: Path | None = None
    # The HTTPS port MTA-STS policies are fetched from; only tests change it.
    mta_sts_port: int = 443
    smarthost: SmarthostConfig = field(default_factory=SmarthostConfig)


@dataclass
class QuotaConfig:
    # Limits of every user who has none of their own (`relatectl user quota`): bytes of messages
    # (RFC 9208 STORAGE, the sizes of the user's messages in every folder) and messages (MESSAGE);
    # 0 = no limit.
    storage: int = 0
    messages: int = 0
    # Mail to a user whose mailbox has been full this long is refused for good (552 5.2.2, and the
    # delivery daemon bounces it) instead of for now (452 4.2.2, the sender retries); 0 = at once.
    bounce_after_days: float = 3.0
    # Mailboxes (folders) one user may have, and names one user may subscribe to; 0 = no limit.
    mailboxes: int = 10_000


@dataclass
class SieveConfig:
    """Users' Sieve filters (RFC 5228), run at every local delivery (relate/sieve/, docs/sieve.md)."""

    # Run the active script of each local recipient before its copy is filed; false: no filtering.
    enabled: bool = True
    # Bytes of one script; a larger one is refused when stored.
    max_script_size: int = 64 * 1024
    # How deep blocks and tests may nest in a script.
    max_nesting: int = 32
    # Work units of one run (a command or test 1, a comparison 1 + 1 per KiB compared); past it the
    # run fails and the message is kept in INBOX. 4000 units are a few ms of CPU; a 50-rule filter
    # spends about 160 on a message.
    max_steps: int = 4_000
    # Actions (keep, fileinto, redirect, ...) and redirects one run may take.
    max_actions: int = 32
    max_redirects: int = 4
    # Redirects one user's scripts may send in 24 hours; past it the message is kept in INBOX instead.
    max_redirects_per_day: int = 100
    # Bytes of a message's body the body test reads.
    max_body_bytes: int = 1024 * 1024


@dataclass
class SendingLimitsConfig:
    """Per-user sending limits (store/sending.py), for users with none of their own (`relatectl user limits`)."""

    # Messages one user may send in 24 hours (SMTP submission and the REST send path), and first-time
    # recipients (addresses the user never sent to before) in 24 hours; 0 = no limit. Over either,
    # submission answers 451 4.7.0 (the REST API 429) and the log names the user once.
    messages_per_day: int = 1000
    recipients_per_day: int = 200


@dataclass
class SubmissionConfig:
    """What applies to mail users send, whichever way they send it."""

    limits: SendingLimitsConfig = field(default_factory=SendingLimitsConfig)


@dataclass
class MtaStsConfig:
    """Our own domains' MTA-STS policy (RFC 8461), which relate-api serves for each hosted DOMAIN at
    https://mta-sts.DOMAIN/.well-known/mta-sts.txt (behind the HTTPS proxy that answers for that name)."""

    # none: no policy is served (404); testing or enforce: the policy's mode.
    mode: str = "none"
    # The MX host names (or *.domain patterns) senders may deliver to; empty: `hostname` alone.
    mx: list[str] = field(default_factory=list)
    # Seconds senders keep the policy (at most 31557600).
    max_age: int = 604800


@dataclass
class PushConfig:
    # VAPID key pair for web push (base64url, raw EC P-256); `relatectl setup`
    # generates them.
    vapid_public_key: str | None = None
    vapid_private_key: str | None = None
    vapid_subject: str | None = None
    # Accept plain-http subscription endpoints (a self-hosted push relay on a
    # LAN). Off by default: browsers' push services are all https, and an
    # http endpoint lets a user make the API post to any host on any port.
    allow_http_endpoints: bool = False


# The Relate scopes an OIDC token may be granted (REST and the hub only: never protocol logins or internal).
OIDC_TARGET_SCOPES = ("app", "api:read", "api:write")
OIDC_ALGORITHMS = ("RS256", "ES256", "EdDSA")


@dataclass
class OidcConfig:
    """Sign-in through an OpenID Connect provider: JWT bearer tokens (relate/api/oidc.py)."""

    # The provider's issuer URL, exactly as its tokens' "iss" says; empty: API keys only.
    issuer: str | None = None
    # What the tokens' "aud" must hold (the API's resource identifier at the provider).
    audience: str | None = None
    # Signature algorithms accepted; none and HS* never are.
    algorithms: list[str] = field(default_factory=lambda: list(OIDC_ALGORITHMS))
    # Seconds of clock difference allowed when checking exp and nbf.
    clock_skew: int = 60
    # The claim holding the user's address, matched against users and aliases.
    email_claim: str = "email"
    # Refuse a token whose email_verified claim is not true.
    require_email_verified: bool = True
    # Create the user on first sign-in when the address is at a hosted domain.
    provision: bool = False
    # "TOKEN_SCOPE=RELATE_SCOPE" items: what each scope of the token's "scope" (or "scp") grants.
    scopes: list[str] = field(default_factory=lambda: ["relate.app=app", "relate.read=api:read"])

    def scope_map(self) -> dict[str, set[str]]:
        """Token scope -> the Relate scopes it grants."""
        out: dict[str, set[str]] = {}
        for item in self.scopes:
            theirs, _, ours = item.partition("=")
            out.setdefault(theirs.strip(), set()).add(ours.strip())
        return out

    def checks(self) -> list[tuple[str, bool, str]]:
        """(key, holds, problem) rows for Config.validate."""
        pairs = [item.partition("=") for item in self.scopes]
        return [
            ("api.oidc.issuer", _oidc_issuer(self.issuer), "must be an https:// URL (http:// on loopback) or empty"),
            ("api.oidc.audience", bool(self.audience) or not self.issuer, "is required when api.oidc.issuer is set"),
            ("api.oidc.algorithms", set(self.algorithms) <= set(OIDC_ALGORITHMS), "must be among RS256, ES256, EdDSA"),
            ("api.oidc.algorithms", bool(self.algorithms), "must name at least one algorithm"),
            ("api.oidc.clock_skew", 0 <= self.clock_skew <= 600, "must be between 0 and 600 seconds"),
            ("api.oidc.email_claim", bool(self.email_claim), "must not be empty"),
            (
                "api.oidc.scopes",
                all(sep and a.strip() and b.strip() in OIDC_TARGET_SCOPES for a, sep, b in pairs),
                "items must be TOKEN_SCOPE=app, =api:read or =api:write",
            ),
        ]


@dataclass
class ApiConfig:
    # HTTP listeners (put a TLS-terminating proxy in front for the Internet).
    listen: list[str] = field(default_factory=lambda: ["0.0.0.0:8080"])
    # Reverse proxies (addresses or networks) whose proxy_header is believed for
    # the client's address (failed-login counts, logs); empty: the peer is the client.
    trusted_proxies: list[str] = field(default_factory=list)
    # The header those proxies set: X-Forwarded-For or Forwarded (RFC 7239). Only
    # this one is read: a client could write the other through a proxy unchanged.
    proxy_header: str = "X-Forwarded-For"
    # Origins (scheme://host[:port]) whose web pages may call the API (CORS), or "*"
    # for any (then never with credentials); empty: none (api/cors.py).
    cors_origins: list[str] = field(default_factory=list)
    # Accept the internal key (scope `internal`) over HTTP too, not only on
    # the Unix socket (internal.api_socket). No route needs it any more:
    # new mail reaches relate-api through the change feed.
    internal_over_http: bool = False
    # Per-key limits, per minute: every request; writes; key management.
    requests_per_minute: int = 100
    writes_per_minute: int = 30
    key_calls_per_minute: int = 10
    max_page_size: int = 100
    # Attachments of one draft together, decoded.
    max_attachment_size: int = 25 * 1024 * 1024
    max_body_size: int = 40 * 1024 * 1024  # one request body (attachments travel base64)
    # JSON bodies: nesting depth, and values (arrays, objects and the commas between
    # members); bounded before parsing (413 past max_json_items, 400 past the depth).
    max_json_depth: int = 32
    max_json_items: int = 10000
    # The hostname mail clients are told to use (autoconfig, credentials); default: hostname.
    public_hostname: str | None = None
    websocket_heartbeat: float = 30.0
    push_timeout: float = 10.0
    # MBOX exports (GET /api/export/mbox) each user may start per hour; one runs at a time per user.
    exports_per_hour: int = 6
    oidc: OidcConfig = field(default_factory=OidcConfig)


METRICS_SERVICES = ("smtp", "imap", "pop3", "api", "delivery")


@dataclass
class MetricsConfig:
    """Each daemon's Prometheus endpoint, GET /metrics (relate/runtime/metrics.py; docs/metrics.md)."""

    enabled: bool = True
    # "host:port" items per daemon, loopback by default (the numbers say how busy the box is: keep them
    # off the Internet); an empty list turns that daemon's endpoint off. Two copies of one daemon on one
    # host need an address each (the second cannot bind the first's; it logs metrics-unavailable).
    smtp: list[str] = field(default_factory=lambda: ["127.0.0.1:9461"])
    imap: list[str] = field(default_factory=lambda: ["127.0.0.1:9462"])
    pop3: list[str] = field(default_factory=lambda: ["127.0.0.1:9463"])
    api: list[str] = field(default_factory=lambda: ["127.0.0.1:9464"])
    delivery: list[str] = field(default_factory=lambda: ["127.0.0.1:9465"])

    def listen(self, service: str) -> list[str]:
        """The addresses of ``service``'s endpoint (none when metrics are off)."""
        return list(getattr(self, service, [])) if self.enabled else []


@dataclass
class LoggingConfig:
    level: str = "INFO"
    # Log `loop-blocked` when a daemon's event loop is stuck longer than this
    # (every client waits meanwhile); 0 turns the watchdog off.
    slow_callback_ms: int = 100


@dataclass
class Config:
    hostname: str = field(default_factory=socket.getfqdn)
    database: DatabaseConfig = field(default_factory=DatabaseConfig)
    internal: InternalConfig = field(default_factory=InternalConfig)
    auth: AuthConfig = field(default_factory=AuthConfig)
    tls: TLSConfig = field(default_factory=TLSConfig)
    smtp: SmtpConfig = field(default_factory=SmtpConfig)
    delivery: DeliveryConfig = field(default_factory=DeliveryConfig)
    imap: ImapConfig = field(default_factory=ImapConfig)
    pop3: Pop3Config = field(default_factory=Pop3Config)
    quota: QuotaConfig = field(default_factory=QuotaConfig)
    sieve: SieveConfig = field(default_factory=SieveConfig)
    submission: SubmissionConfig = field(default_factory=SubmissionConfig)
    mta_sts: MtaStsConfig = field(default_factory=MtaStsConfig)
    push: PushConfig = field(default_factory=PushConfig)
    api: ApiConfig = field(default_factory=ApiConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    # Where the file came from, for messages; not a key.
    source: Path | None = field(default=None, compare=False, metadata={"internal": True})

    def protocol_listeners(self) -> dict[str, dict[str, ListenerConfig]]:
        """The listeners of each protocol daemon by role: smtp (mx, submission, submissions), imap (imap,
        imaps), pop3 (pop3, pop3s). Role names are unique: they are the sockets' FileDescriptorName."""
        return {
            "smtp": self.smtp.listeners(),
            "imap": {"imap": self.imap.imap, "imaps": self.imap.imaps},
            "pop3": {"pop3": self.pop3.pop3, "pop3s": self.pop3.pop3s},
        }

    def listener_key(self, role: str) -> str:
        """The config key of a listener role (``imaps`` -> ``imap.imaps``)."""
        for protocol, listeners in self.protocol_listeners().items():
            if role in listeners:
                return f"{protocol}.{role}"
        return role

    def disabled_services(self) -> dict[str, str]:
        """The protocol daemons switched off in config, each with the reason in the config's words."""
        out = {}
        for protocol, listeners in self.protocol_listeners().items():
            if not getattr(self, protocol).enabled:
                out[protocol] = f"{protocol}.enabled is false"
            elif not any(lst.enabled for lst in listeners.values()):
                out[protocol] = (
                    "every listener is off (" + ", ".join(f"{protocol}.{r}.enabled" for r in listeners) + ")"
                )
        return out

    def disabled_listeners(self) -> list[str]:
        """The config keys of the listeners that are off, by their own switch or their protocol's."""
        off = self.disabled_services()
        return [
            f"{protocol}.{role}"
            for protocol, listeners in self.protocol_listeners().items()
            for role, lst in listeners.items()
            if protocol in off or not lst.enabled
        ]

    def validate(self) -> None:
        """Cross-field checks that a single value's type cannot express."""
        checks: list[tuple[str, bool, str]] = [
            (
                "database.dsn",
                _postgres_uri(self.database.dsn),
                "must be a URI like postgresql://USER:PASSWORD@HOST:5432/DATABASE, ports numeric "
                "(or postgresql://USER@/DATABASE?host=/run/postgresql for a local socket)",
            ),
            ("database.pool_min", self.database.pool_min >= 0, "must be 0 or more"),
            (
                "database.pool_max",
                self.database.pool_max >= max(1, self.database.pool_min),
                "must be at least 1 and at least database.pool_min",
            ),
            ("database.acquire_timeout", self.database.acquire_timeout > 0, "must be positive"),
            ("auth.max_failures", 1 <= self.auth.max_failures <= 1000, "must be between 1 and 1000"),
            (
                "auth.max_failures_per_address",
                self.auth.max_failures <= self.auth.max_failures_per_address <= 10000,
                "must be at least auth.max_failures and at most 10000",
            ),
            ("auth.failure_window_seconds", self.auth.failure_window_seconds > 0, "must be positive"),
            ("auth.lockout_seconds", self.auth.lockout_seconds >= 0, "must be 0 or more"),
            ("internal.heartbeat_seconds", self.internal.heartbeat_seconds >= 1, "must be at least 1 second"),
            ("smtp.max_message_size", self.smtp.max_message_size >= 1024, "must be at least 1024 bytes"),
            ("smtp.max_recipients", self.smtp.max_recipients >= 1, "must be 1 or more"),
            ("smtp.max_connections_per_client", self.smtp.max_connections_per_client >= 1, "must be 1 or more"),
            ("smtp.max_connections", self.smtp.max_connections >= 1, "must be 1 or more"),
            ("smtp.max_line_length", self.smtp.max_line_length >= 1000, "must be at least 1000 (RFC 5321)"),
            ("smtp.command_timeout", self.smtp.command_timeout > 0, "must be positive"),
            ("smtp.data_timeout", self.smtp.data_timeout > 0, "must be positive"),
            ("smtp.memory_budget", self.smtp.memory_budget >= 1024 * 1024, "must be at least 1 MiB"),
            ("smtp.memory_wait", self.smtp.memory_wait >= 0, "must be 0 or more"),
            ("smtp.postmaster", _address_or_empty(self.smtp.postmaster), "must be an address (local@domain) or unset"),
            ("smtp.max_bad_commands", self.smtp.max_bad_commands >= 1, "must be 1 or more"),
            ("smtp.max_unknown_commands", self.smtp.max_unknown_commands >= 1, "must be 1 or more"),
            (
                "smtp.mailauth.dmarc_reject",
                self.smtp.mailauth.dmarc_reject in {"refuse", "junk"},
                "must be refuse or junk",
            ),
            (
                "smtp.mailauth.authserv_id",
                not self.smtp.mailauth.authserv_id or not _has_special(self.smtp.mailauth.authserv_id),
                "must be a host name (no spaces, ';', quotes or parentheses)",
            ),
            ("smtp.rspamd.url", _http_url_or_empty(self.smtp.rspamd.url), "must be an http:// URL or empty"),
            (
                "smtp.rspamd.controller_url",
                _http_url_or_empty(self.smtp.rspamd.controller_url),
                "must be an http:// URL or empty",
            ),
            ("smtp.rspamd.timeout", self.smtp.rspamd.timeout > 0, "must be positive"),
            (
                "smtp.rspamd.on_unreachable",
                self.smtp.rspamd.on_unreachable in {"accept", "tempfail"},
                "must be accept or tempfail",
            ),
            ("smtp.rspamd.max_size", self.smtp.rspamd.max_size >= 1024, "must be at least 1024 bytes"),
            ("smtp.rspamd.block_action", self.smtp.rspamd.block_action in {"junk", "refuse"}, "must be junk or refuse"),
            (
                "smtp.rspamd.rewrite_subject_folder",
                self.smtp.rspamd.rewrite_subject_folder in {"inbox", "junk"},
                "must be inbox or junk",
            ),
            ("smtp.rspamd.learn_interval", self.smtp.rspamd.learn_interval > 0, "must be positive"),
            ("smtp.rspamd.learn_attempts", self.smtp.rspamd.learn_attempts >= 1, "must be 1 or more"),
            ("imap.memory_budget", self.imap.memory_budget >= 1024 * 1024, "must be at least 1 MiB"),
            ("imap.memory_wait", self.imap.memory_wait >= 0, "must be 0 or more"),
            ("quota.storage", self.quota.storage >= 0, "must be 0 (no limit) or more"),
            ("quota.messages", self.quota.messages >= 0, "must be 0 (no limit) or more"),
            ("quota.bounce_after_days", self.quota.bounce_after_days >= 0, "must be 0 (at once) or more"),
            ("quota.mailboxes", self.quota.mailboxes >= 0, "must be 0 (no limit) or more"),
            (
                "sieve.max_script_size",
                64 <= self.sieve.max_script_size <= 16 * 1024 * 1024,
                "must be 64 to 16777216 bytes",
            ),
            ("sieve.max_nesting", 1 <= self.sieve.max_nesting <= 100, "must be 1 to 100"),
            ("sieve.max_steps", self.sieve.max_steps >= 100, "must be 100 or more"),
            ("sieve.max_actions", self.sieve.max_actions >= 1, "must be 1 or more"),
            ("sieve.max_redirects", self.sieve.max_redirects >= 0, "must be 0 or more"),
            ("sieve.max_redirects_per_day", self.sieve.max_redirects_per_day >= 0, "must be 0 or more"),
            ("sieve.max_body_bytes", self.sieve.max_body_bytes >= 0, "must be 0 or more"),
            ("mta_sts.mode", self.mta_sts.mode in {"none", "testing", "enforce"}, "must be none, testing or enforce"),
            ("mta_sts.max_age", 0 <= self.mta_sts.max_age <= 31_557_600, "must be between 0 and 31557600 seconds"),
            (
                "submission.limits.messages_per_day",
                0 <= self.submission.limits.messages_per_day <= 2**31 - 1,
                "must be 0 (no limit) or a number of messages",
            ),
            (
                "submission.limits.recipients_per_day",
                0 <= self.submission.limits.recipients_per_day <= 2**31 - 1,
                "must be 0 (no limit) or a number of recipients",
            ),
            ("logging.slow_callback_ms", self.logging.slow_callback_ms >= 0, "must be 0 (off) or more"),
            ("delivery.port", 1 <= self.delivery.port <= 65535, "must be a port number"),
            ("delivery.mta_sts_port", 1 <= self.delivery.mta_sts_port <= 65535, "must be a port number"),
            ("imap.max_line_length", self.imap.max_line_length >= 1000, "must be at least 1000"),
            ("imap.max_literal_size", self.imap.max_literal_size >= 1024, "must be at least 1024 bytes"),
            ("imap.idle_timeout", self.imap.idle_timeout >= 60, "must be at least 60 seconds"),
            ("imap.max_bad_commands", self.imap.max_bad_commands >= 1, "must be 1 or more"),
            ("imap.max_update_contexts", self.imap.max_update_contexts >= 1, "must be 1 or more (RFC 5267 §4.3.1)"),
            ("imap.thread_max_dummies", self.imap.thread_max_dummies >= 0, "must be 0 or more"),
            ("imap.thread_max_walk", self.imap.thread_max_walk >= 0, "must be 0 or more"),
            ("pop3.idle_timeout", self.pop3.idle_timeout >= 60, "must be at least 60 seconds"),
            ("pop3.max_line_length", self.pop3.max_line_length >= 255, "must be at least 255 (RFC 2449)"),
            ("pop3.max_bad_commands", self.pop3.max_bad_commands >= 1, "must be 1 or more"),
            ("delivery.max_connections", self.delivery.max_connections >= 1, "must be 1 or more"),
            ("delivery.max_connections_per_domain", self.delivery.max_connections_per_domain >= 1, "must be 1 or more"),
            ("delivery.messages_per_connection", self.delivery.messages_per_connection >= 1, "must be 1 or more"),
            ("delivery.batch_size", self.delivery.batch_size >= 1, "must be 1 or more"),
            ("delivery.lease_seconds", self.delivery.lease_seconds >= 3, "must be at least 3 seconds"),
            ("delivery.read_ahead_bytes", self.delivery.read_ahead_bytes >= 0, "must be 0 or more"),
            ("delivery.retry_first", self.delivery.retry_first > 0, "must be positive"),
            ("delivery.retry_max", self.delivery.retry_max >= self.delivery.retry_first, "must be >= retry_first"),
            ("delivery.max_age", self.delivery.max_age > 0, "must be positive"),
            ("delivery.delay_warning", self.delivery.delay_warning >= 0, "must be 0 (off) or positive"),
            (
                "delivery.smarthost.tls",
                self.delivery.smarthost.tls in {"starttls", "tls", "none"},
                "must be starttls, tls or none",
            ),
            ("api.requests_per_minute", self.api.requests_per_minute >= 1, "must be 1 or more"),
            ("api.writes_per_minute", self.api.writes_per_minute >= 1, "must be 1 or more"),
            ("api.key_calls_per_minute", self.api.key_calls_per_minute >= 1, "must be 1 or more"),
            ("api.max_page_size", 1 <= self.api.max_page_size <= 1000, "must be between 1 and 1000"),
            ("api.max_attachment_size", self.api.max_attachment_size >= 0, "must be 0 or more"),
            ("api.max_body_size", self.api.max_body_size >= 1024, "must be at least 1024 bytes"),
            # The API's own bodies nest 3 deep (a draft's list of recipient objects); json.loads recurses per level.
            ("api.max_json_depth", 3 <= self.api.max_json_depth <= 500, "must be between 3 and 500"),
            ("api.max_json_items", self.api.max_json_items >= 1000, "must be at least 1000"),
            (
                "api.proxy_header",
                self.api.proxy_header.lower() in {"x-forwarded-for", "forwarded"},
                "must be X-Forwarded-For or Forwarded",
            ),
            ("api.exports_per_hour", self.api.exports_per_hour >= 1, "must be 1 or more"),
            *self.api.oidc.checks(),
            ("auth.bcrypt_rounds", 4 <= self.auth.bcrypt_rounds <= 31, "must be between 4 and 31"),
            (
                "logging.level",
                self.logging.level.upper() in {"DEBUG", "INFO", "WARNING", "ERROR"},
                "must be one of DEBUG, INFO, WARNING, ERROR",
            ),
        ]
        for key, ok, problem in checks:
            if not ok:
                raise ConfigError(f"{key}: {problem}")
        pairs = [("tls", self.tls.cert, self.tls.key)]
        pairs += [(f"smtp.{role}", lst.cert, lst.key) for role, lst in self.smtp.listeners().items()]
        pairs += [("imap.imap", self.imap.imap.cert, self.imap.imap.key)]
        pairs += [("imap.imaps", self.imap.imaps.cert, self.imap.imaps.key)]
        pairs += [("pop3.pop3", self.pop3.pop3.cert, self.pop3.pop3.key)]
        pairs += [("pop3.pop3s", self.pop3.pop3s.cert, self.pop3.pop3s.key)]
        for where, cert, key_file in pairs:
            if (cert is None) != (key_file is None):
                raise ConfigError(f"{where}.cert and {where}.key: give both or neither")
        from relate.mail.mtasts import valid_mx_pattern

        for i, item in enumerate(self.mta_sts.mx):
            if not valid_mx_pattern(item):
                raise ConfigError(f"mta_sts.mx[{i}]: not a host name or *.domain pattern, got {item!r}")
        for i, item in enumerate(self.delivery.outbound_addresses):
            try:
                ipaddress.ip_address(item.strip())
            except ValueError:
                raise ConfigError(f"delivery.outbound_addresses[{i}]: not an IP address, got {item!r}") from None
        for i, item in enumerate(self.api.trusted_proxies):
            try:
                ipaddress.ip_network(item.strip(), strict=False)
            except ValueError:
                raise ConfigError(f"api.trusted_proxies[{i}]: not an IP address or network, got {item!r}") from None
        for i, item in enumerate(self.api.cors_origins):
            if not _ORIGIN.fullmatch(item.strip().rstrip("/")):
                raise ConfigError(
                    f'api.cors_origins[{i}]: not an origin such as https://mail.example.com (or "*"), got {item!r}'
                )
        listeners = [(f"smtp.{role}", lst) for role, lst in self.smtp.listeners().items()]
        listeners += [("imap.imap", self.imap.imap), ("imap.imaps", self.imap.imaps)]
        listeners += [("pop3.pop3", self.pop3.pop3), ("pop3.pop3s", self.pop3.pop3s)]
        listeners += [("api", ListenerConfig(listen=self.api.listen))]
        for where, lst in listeners:
            for i, item in enumerate(lst.listen):
                try:
                    parse_listen(item)
                except ValueError as exc:
                    raise ConfigError(f"{where}.listen[{i}]: {exc}, got {item!r}") from None
        for service in METRICS_SERVICES:
            for i, item in enumerate(getattr(self.metrics, service)):
                try:
                    parse_listen(item)
                except ValueError as exc:
                    raise ConfigError(f"metrics.{service}[{i}]: {exc}, got {item!r}") from None


def parse_listen(item: str) -> tuple[str, int]:
    """``"127.0.0.1:25"`` / ``"[::1]:25"`` / ``":25"`` -> (host, port); raises ValueError."""
    host, sep, port_text = item.rpartition(":")
    if not sep or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ValueError("expected host:port with a port from 0 to 65535")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ValueError("write IPv6 addresses in brackets, like [::1]:25")
    return host or "0.0.0.0", int(port_text)  # noqa: S104 - ":25" means every interface, as for Postfix


def _is_section(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def _fields(cls: type) -> dict[str, dataclasses.Field[Any]]:
    hints = typing.get_type_hints(cls)
    out = {}
    for f in dataclasses.fields(cls):
        if f.metadata.get("internal"):
            continue
        f.type = hints[f.name]
        out[f.name] = f
    return out


def _coerce(key: str, tp: Any, value: Any, origin: str) -> Any:
    """Turn a YAML or environment value into ``tp`` or raise a one-line error."""

    def bad(problem: str) -> ConfigError:
        shown = value if not isinstance(value, str) or len(value) < 60 else value[:57] + "..."
        return ConfigError(f"{key}: {problem}, got {shown!r} (from {origin})")

    args = typing.get_args(tp)
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        empty = value is None or (value == "" and origin.startswith("$"))
        if empty and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(key, inner[0], value, origin)
    from_env = origin.startswith("$")
    if tp is bool:
        if isinstance(value, bool):
            return value
        if from_env and isinstance(value, str):
            low = value.strip().lower()
            if low in {"1", "true", "yes", "on"}:
                return True
            if low in {"0", "false", "no", "off"}:
                return False
        raise bad("expected true or false")
    if tp is int:
        if isinstance(value, bool):
            raise bad("expected an integer")
        if isinstance(value, int):
            return value
        if from_env and isinstance(value, str):
            try:
                return int(value.strip())
            except ValueError:
                pass
        raise bad("expected an integer")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if from_env and isinstance(value, str):
            try:
                return float(value.strip())
            except ValueError:
                pass
        raise bad("expected a number")
    if tp is str:
        if isinstance(value, str):
            return value
        raise bad("expected a string")
    if tp is Path:
        if isinstance(value, str) and value:
            return Path(value)
        raise bad("expected a path")
    if typing.get_origin(tp) is list:
        (item,) = args
        if from_env and isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list):
            raise bad("expected a list")
        return [_coerce(f"{key}[{i}]", item, v, origin) for i, v in enumerate(value)]
    raise ConfigError(f"{key}: unsupported type {tp!r}")  # a bug in the schema itself


def _read_secret_file(key: str, path_value: Any, origin: str) -> str:
    if not isinstance(path_value, str) or not path_value:
        raise ConfigError(f"{key}_file: expected a path, got {path_value!r} (from {origin})")
    try:
        return Path(path_value).read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(f"{key}_file: cannot read {path_value}: {exc.strerror or exc} (from {origin})") from None


def _apply_mapping(obj: Any, data: Mapping[str, Any], prefix: str, origin: str) -> None:
    fields = _fields(type(obj))
    for raw_name, value in data.items():
        name = str(raw_name)
        key = prefix + name
        if name.endswith("_file") and name[: -len("_file")] in fields:
            base = name[: -len("_file")]
            f = fields[base]
            if str not in (f.type, *typing.get_args(f.type)):
                raise ConfigError(f"{key}: only string keys have a _file form (from {origin})")
            setattr(obj, base, _read_secret_file(prefix + base, value, origin))
            continue
        if name not in fields:
            raise ConfigError(f"{key}: unknown key (from {origin})")
        f = fields[name]
        if _is_section(f.type):
            if not isinstance(value, Mapping):
                raise ConfigError(f"{key}: expected a section (a mapping), got {value!r} (from {origin})")
            _apply_mapping(getattr(obj, name), value, key + ".", origin)
        else:
            setattr(obj, name, _coerce(key, f.type, value, origin))


def _apply_env(cfg: Config, environ: Mapping[str, str]) -> None:
    for var in sorted(environ):
        if not var.startswith(ENV_PREFIX) or var == ENV_CONFIG:
            continue
        path = var[len(ENV_PREFIX) :].lower().split("__")
        if not all(path):
            raise ConfigError(f"${var}: malformed variable name (use __ between levels)")
        target: Any = cfg
        for part in path[:-1]:
            f = _fields(type(target)).get(part)
            if f is None or not _is_section(f.type):
                raise ConfigError(f"${var}: unknown key {'.'.join(path)} (from the environment)")
            target = getattr(target, part)
        leaf = path[-1]
        base = leaf[: -len("_file")] if leaf.endswith("_file") else None
        if base is not None and base in _fields(type(target)):
            _apply_mapping(target, {leaf: environ[var]}, "".join(f"{p}." for p in path[:-1]), f"${var}")
            continue
        f = _fields(type(target)).get(leaf)
        if f is None or _is_section(f.type):
            raise ConfigError(f"${var}: unknown key {'.'.join(path)} (from the environment)")
        setattr(target, leaf, _coerce(".".join(path), f.type, environ[var], f"${var}"))


def to_mapping(obj: Any) -> dict[str, Any]:
    """Every key of a config (or one of its sections) as plain YAML-ready data, which :func:`from_mapping`
    reads back to an equal config (the dev run hands its daemons their config this way)."""
    out: dict[str, Any] = {}
    for name in _fields(type(obj)):
        value = getattr(obj, name)
        if dataclasses.is_dataclass(value):
            out[name] = to_mapping(value)
        elif isinstance(value, Path):
            out[name] = str(value)
        elif isinstance(value, list):
            out[name] = [str(v) if isinstance(v, Path) else v for v in value]
        else:
            out[name] = value
    return out


def config_path(explicit: str | os.PathLike[str] | None = None, environ: Mapping[str, str] | None = None) -> Path:
    """The config file in force: ``--config``, then ``$RELATE_CONFIG``, then the default."""
    env = os.environ if environ is None else environ
    if explicit:
        return Path(explicit)
    if env.get(ENV_CONFIG):
        return Path(env[ENV_CONFIG])
    return DEFAULT_PATH


def from_mapping(data: Any, origin: str, *, environ: Mapping[str, str] | None = None) -> Config:
    """A validated config from already-parsed YAML data plus the environment."""
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"{origin}: the top level must be a mapping of keys")
    cfg = Config()
    _apply_mapping(cfg, data, "", origin)
    _apply_env(cfg, os.environ if environ is None else environ)
    cfg.validate()
    return cfg


def read_yaml(file: Path) -> Any:
    """The parsed content of a YAML file, or ConfigError naming the line at fault."""
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{file}: cannot read: {exc.strerror or exc}") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}:" if mark is not None else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise ConfigError(f"{file}:{where} {problem}") from None


def load(
    path: str | os.PathLike[str] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
) -> Config:
    """Load and validate the configuration.

    The file must exist when it was named (argument or ``RELATE_CONFIG``);
    the default path may be absent, leaving defaults and the environment.
    """
    env = os.environ if environ is None else environ
    file = config_path(path, env)
    if file.exists():
        cfg = from_mapping(read_yaml(file), str(file), environ=env)
        cfg.source = file
        return cfg
    if path or env.get(ENV_CONFIG):
        raise ConfigError(f"{file}: no such configuration file")
    return from_mapping({}, "defaults", environ=env)
