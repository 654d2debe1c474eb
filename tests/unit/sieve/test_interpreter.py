"""Running Sieve scripts: the actions a user's filter takes on a message (RFC 5228 and extensions)."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest

from relate.sieve import grammar, interpreter
from relate.sieve.interpreter import Discard, Keep, Limits, Redirect, Reject, Result, Vacation
from relate.sieve.message import Envelope

MESSAGE = (
    b"Received: from mx.example.net by mail.example.com; Tue, 1 Apr 1997 09:06:31 -0800\r\n"
    b"Date: Tue, 1 Apr 1997 09:06:31 -0800\r\n"
    b"From: Coyote <coyote@ACME.Example.COM>\r\n"
    b"To: roadrunner+birds@example.com, Boss <boss@example.com>\r\n"
    b"Cc: all@example.org\r\n"
    b"Subject: [acme-users] [fwd] version 1.0 is out\r\n"
    b"X-Caffeine: =?utf-8?q?caf=C3=A9?= break\r\n"
    b"List-ID: Acme users <acme-users.lists.example.org>\r\n"
    b"Message-ID: <1@acme.example>\r\n"
    b"MIME-Version: 1.0\r\n"
    b"Content-Type: multipart/mixed; boundary=b\r\n"
    b"\r\n"
    b"--b\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n"
    b"Meet me at the caf=C3=A9 for the frobnitz.\r\n"
    b"--b\r\nContent-Type: application/octet-stream\r\n\r\nsecret-binary\r\n--b--\r\n"
)
ENVELOPE = Envelope("coyote@acme.example.com", "roadrunner+birds@example.com")
NOW = datetime(2024, 3, 9, 12, 30, tzinfo=UTC)


async def run(
    script: str,
    message: bytes = MESSAGE,
    envelope: Envelope = ENVELOPE,
    limits: Limits | None = None,
    **kwargs: object,
) -> Result:
    return await interpreter.run(grammar.compile(script), message, envelope, limits=limits, now=NOW, **kwargs)  # type: ignore[arg-type]


def boxes(result: Result) -> list[str]:
    return [box for box, _, _ in result.mailboxes]


# -- RFC 5228: keep, discard, stop, fileinto, redirect, if/elsif/else and the implicit keep


async def test_an_empty_script_keeps_the_message() -> None:
    """No action at all: the implicit keep files into INBOX (RFC 5228 §2.10.2)."""
    result = await run("")
    assert result.actions == [Keep(implicit=True)]
    assert result.error is None


async def test_fileinto_cancels_the_implicit_keep_and_copy_does_not() -> None:
    """fileinto files elsewhere instead of INBOX; with :copy (RFC 3894) INBOX gets it too."""
    assert boxes(await run('require "fileinto"; fileinto "Lists";')) == ["Lists"]
    assert boxes(await run('require ["fileinto", "copy"]; fileinto :copy "Lists";')) == ["Lists", "INBOX"]


async def test_discard_and_stop() -> None:
    """discard drops the message; stop ends the run before the actions after it."""
    assert (await run("discard;")).actions == [Discard()]
    assert boxes(await run('require "fileinto"; stop; fileinto "Never";')) == ["INBOX"]


async def test_if_elsif_else_take_one_branch() -> None:
    """Only the first branch whose test holds runs (RFC 5228 §3.1)."""
    script = (
        'require "fileinto";\n'
        'if header :contains "subject" "nothing" { fileinto "A"; }\n'
        'elsif header :contains "subject" "version" { fileinto "B"; }\n'
        'elsif true { fileinto "C"; }\n'
        'else { fileinto "D"; }\n'
    )
    assert boxes(await run(script)) == ["B"]


async def test_rfc5228_section_3_1_example() -> None:
    """RFC 5228 §3.1's example files by header into the right folder."""
    script = """require "fileinto";
    if header :contains "from" "coyote" {
        discard;
    } elsif header :contains ["subject"] ["$$$"] {
        discard;
    } else {
        fileinto "INBOX";
    }"""
    assert (await run(script)).actions == [Discard()]
    other = MESSAGE.replace(b"Coyote <coyote@", b"Wile <wile@")
    assert boxes(await run(script, other)) == ["INBOX"]


async def test_rfc5228_section_9_example() -> None:
    """RFC 5228 §9's full example script runs: the first rule that matches files the message."""
    script = """require ["fileinto", "reject"];
    if size :over 100K { reject text:
please send large files as links
.
;
    }
    elsif address :DOMAIN :is ["From", "To"] "example.com" { keep; }
    elsif anyof (not address :all :contains ["To", "Cc", "Bcc"] "me@example.com",
                 header :matches "subject" ["*make*money*fast*", "*university*dipl*mas*"]) {
        fileinto "spam";
    } else { fileinto "personal"; }"""
    assert (await run(script)).actions == [Keep()]
    big = MESSAGE + b"x" * 200_000
    assert (await run(script, big)).actions == [Reject("please send large files as links\r\n", False)]
    elsewhere = MESSAGE.replace(b"example.com", b"elsewhere.test")
    assert boxes(await run(script, elsewhere)) == ["spam"]


async def test_redirect_once_per_address_and_the_limit() -> None:
    """redirect cancels the keep; the same address twice is sent once; past sieve.max_redirects the run fails."""
    result = await run('redirect "a@example.net"; redirect "A@example.net";')
    assert result.actions == [Redirect("a@example.net")]
    copy = await run('require "copy"; redirect :copy "a@example.net";')
    assert copy.actions == [Redirect("a@example.net", copy=True), Keep(implicit=True)]
    many = await run("".join(f'redirect "u{i}@example.net";' for i in range(5)), limits=Limits(max_redirects=4))
    assert many.actions == [Keep(implicit=True)]
    assert many.error is not None
    assert "max_redirects" in many.error


async def test_keep_and_fileinto_inbox_file_once() -> None:
    """keep together with fileinto "INBOX" stores one copy (RFC 5228 §2.10.3)."""
    result = await run('require "fileinto"; keep; fileinto "INBOX"; keep;')
    assert boxes(result) == ["INBOX"]


async def test_reject_conflicts_with_keep_and_ends_in_implicit_keep() -> None:
    """reject after keep is a run-time error: the message is kept and the user told why (RFC 5429 §2.1)."""
    result = await run('require "reject"; keep; reject "no";')
    assert result.actions == [Keep(implicit=True)]
    assert result.error is not None
    assert 'cannot be used with an earlier "keep"' in result.error
    ok = await run('require "ereject"; ereject "go away";')
    assert ok.actions == [Reject("go away", True)]


async def test_action_limit() -> None:
    """More actions than sieve.max_actions fail the run into the implicit keep."""
    script = 'require ["fileinto", "copy"];' + "".join(f'fileinto :copy "b{i}";' for i in range(10))
    result = await run(script, limits=Limits(max_actions=5))
    assert result.actions == [Keep(implicit=True)]
    assert "max_actions" in (result.error or "")


# -- tests: address, header, envelope, exists, size, allof/anyof/not, true/false


@pytest.mark.parametrize(
    ("test", "expected"),
    [
        ('address :is "from" "coyote@acme.example.com"', True),  # i;ascii-casemap by default
        ('address :comparator "i;octet" :is "from" "coyote@acme.example.com"', False),
        ('address :localpart :is "from" "coyote"', True),
        ('address :domain :is "to" "example.com"', True),
        ('address :all :is "to" "boss@example.com"', True),
        ('address :contains "from" "Coyote <"', False),  # the display name is not the address
        ('header :contains "to" "Boss"', True),
        ('header :is "x-caffeine" "café break"', True),  # RFC 2047 decoded
        ('header :matches "subject" "*1.?*"', True),
        ('header :is "subject" ""', False),
        ('header :is "x-none" ""', False),
        ('exists ["from", "to", "date"]', True),
        ('exists ["from", "x-none"]', False),
        ("size :over 100", True),
        ("size :under 100", False),
        ("size :over 10K", False),
        ('allof (true, exists "from")', True),
        ("allof (true, false)", False),
        ("anyof (false, false)", False),
        ("anyof (false, true)", True),
        ("not false", True),
        ('envelope :is "from" "coyote@acme.example.com"', True),
        ('envelope :domain :is "to" "example.com"', True),
        ('envelope :user :is "to" "roadrunner"', True),
        ('envelope :detail :is "to" "birds"', True),
        ('address :detail :is "from" ""', False),  # no "+": no detail part (RFC 5233 §4)
        ('header :contains :comparator "i;ascii-numeric" "x" "1"', None),  # compile error, see below
    ],
)
async def test_tests(test: str, expected: bool | None) -> None:
    """Each test, with its comparators and address parts, answers as RFC 5228, 5233 and 2047 say."""
    script = f'require ["envelope", "subaddress", "comparator-i;ascii-numeric"]; if {test} {{ discard; }}'
    if expected is None:
        with pytest.raises(grammar.SieveError):
            grammar.compile(script)
        return
    result = await run(script)
    assert (result.actions == [Discard()]) is expected


async def test_null_sender_envelope() -> None:
    """envelope "from" of a bounce (null reverse-path) is the empty string."""
    result = await run(
        'require "envelope"; if envelope :is "from" "" { discard; }', envelope=Envelope("", "x@y.example")
    )
    assert result.actions == [Discard()]


# -- match types, comparators, relational (RFC 5231)


@pytest.mark.parametrize(
    ("test", "expected"),
    [
        ('header :count "eq" :comparator "i;ascii-numeric" "to" "1"', True),
        ('address :count "eq" :comparator "i;ascii-numeric" "to" "2"', True),
        ('address :count "gt" :comparator "i;ascii-numeric" ["to", "cc"] "2"', True),
        ('header :value "gt" :comparator "i;ascii-numeric" "x-spam-score" "5"', True),
        ('header :value "lt" :comparator "i;ascii-numeric" "x-spam-score" "5"', False),
        ('header :value "gt" "subject" "[a"', True),
        ('header :value "ne" "subject" "x"', True),
        ('header :is :comparator "i;ascii-numeric" "x-spam-score" "12"', True),
        ('header :is :comparator "i;ascii-numeric" "subject" "nonsense"', True),  # both +infinity
    ],
)
async def test_relational_and_numeric(test: str, expected: bool) -> None:
    """:count and :value compare with the comparator's order (RFC 5231 §4); i;ascii-numeric reads leading digits."""
    message = b"X-Spam-Score: 12 points\r\n" + MESSAGE
    script = f'require ["relational", "comparator-i;ascii-numeric"]; if {test} {{ discard; }}'
    assert ((await run(script, message)).actions == [Discard()]) is expected


@pytest.mark.parametrize(
    ("value", "pattern", "captures"),
    [
        ("[acme-users] [fwd] version", "[*] *", ["acme-users", "[fwd] version"]),
        ("coyote@ACME.Example.COM", "coyote@**.com", ["", "ACME.Example"]),
        ("abc", "a?c", ["b"]),
        ("abc", "a\\?c", None),
        ("a?c", "a\\?c", []),
        ("a*c", "a\\*c", []),
        ("abc", "*", ["abc"]),
        ("", "*", [""]),
        ("", "?", None),
        ("abcabc", "*bc*c", ["a", "ab"]),
        ("xyz", "x*y*z*", ["", "", ""]),
        ("aXbXc", "*x?x*", ["a", "b", "c"]),
    ],
)
def test_wildcards_and_their_captures(value: str, pattern: str, captures: list[str] | None) -> None:
    """:matches with * and ?, escapes, and the shortest-leftmost captures RFC 5229 §3.2 shows."""
    from relate.sieve import match

    assert match.matches("i;ascii-casemap", value, pattern) == captures


def test_matches_has_no_backtracking_blowup() -> None:
    """A pattern that makes a backtracking matcher exponential answers at once on a long value."""
    from relate.sieve import match

    value = "a" * 60_000
    start = time.process_time()
    assert match.matches("i;octet", value, "*a*a*a*a*a*a*a*a*a*a*b") is None
    assert match.matches("i;octet", value, "*?a?a?a?*b") is None
    assert time.process_time() - start < 0.5


# -- variables (RFC 5229)


async def test_variables_set_modifiers_and_match_variables() -> None:
    """set with modifiers, ${name} and ${N} expand in later strings (RFC 5229 §§3-4)."""
    script = r"""require ["fileinto", "variables"];
    set :upperfirst "name" "lists";
    set :length "len" "four";
    set :lower :upperfirst "mixed" "hELLO";
    set :quotewildcard "q" "a*b?";
    if header :matches "List-ID" "*<*.lists.*>" { fileinto "${name}/${2}/${len}/${mixed}/${q}/${unset}/${ 1}"; }
    """
    assert boxes(await run(script)) == ["Lists/acme-users/4/Hello/a\\*b\\?//${ 1}"]


async def test_string_test_and_variable_size_limit() -> None:
    """The string test compares expanded strings; a variable keeps at most 4000 characters."""
    script = """require ["variables", "relational", "comparator-i;ascii-numeric"];
    set "a" "xxxxxxxxxx";
    set "b" "${a}${a}${a}${a}${a}${a}${a}${a}${a}${a}";
    set "c" "${b}${b}${b}${b}${b}${b}${b}${b}${b}${b}";
    set "d" "${c}${c}${c}${c}${c}${c}${c}${c}${c}${c}";
    set :length "n" "${d}";
    if string :is "${n}" "4000" { discard; }"""
    assert (await run(script)).actions == [Discard()]


# -- imap4flags (RFC 5232)


async def test_flags_on_keep_fileinto_and_the_internal_variable() -> None:
    """setflag/addflag/removeflag change the flags later keeps and fileintos store; :flags overrides."""
    script = r"""require ["imap4flags", "fileinto", "copy"];
    setflag "\\Seen";
    addflag ["\\Flagged", "$Work", "\\seen"];
    removeflag "$Work";
    if hasflag :is "\\flagged" { fileinto :copy "Flagged"; }
    fileinto :copy :flags "$Other" "Other";
    """
    result = await run(script)
    assert result.mailboxes == [
        ("Flagged", ("\\Seen", "\\Flagged"), False),
        ("Other", ("$Other",), False),
        ("INBOX", ("\\Seen", "\\Flagged"), False),
    ]


async def test_flags_in_a_named_variable() -> None:
    """Flag commands on a variable leave the internal flags alone; hasflag reads the variable."""
    script = r"""require ["imap4flags", "variables"];
    addflag "mine" ["a", "b"]; addflag "mine" "a c";
    if hasflag :is "mine" "c" { if string :is "${mine}" "a b c" { discard; } }"""
    assert (await run(script)).actions == [Discard()]


# -- body (RFC 5173)


async def test_body_text_raw_and_content() -> None:
    """body :text reads decoded text parts; :raw the undecoded body; :content picks parts by type."""
    assert (await run('require "body"; if body :contains "café" { discard; }')).actions == [Discard()]
    assert (await run('require "body"; if body :raw :contains "caf=C3=A9" { discard; }')).actions == [Discard()]
    assert (await run('require "body"; if body :text :contains "secret-binary" { discard; }')).actions != [Discard()]
    script = 'require "body"; if body :content "application" :contains "secret" { discard; }'
    assert (await run(script)).actions == [Discard()]


async def test_body_reads_only_the_configured_bytes() -> None:
    """Text past sieve.max_body_bytes is not seen by the body test."""
    message = b"Subject: x\r\n\r\n" + b"a" * 5000 + b"needle"
    script = 'require "body"; if body :raw :contains "needle" { discard; }'
    assert (await run(script, message, limits=Limits(max_body_bytes=1000))).actions != [Discard()]
    assert (await run(script, message)).actions == [Discard()]


# -- date, currentdate, index (RFC 5260)


async def test_date_parts_zones_and_index() -> None:
    """date reads a header's date in a zone; currentdate the time of delivery; :index picks an occurrence."""
    script = """require ["date", "relational", "index", "variables", "fileinto"];
    if date :originalzone "date" "zone" "-0800" { set "a" "orig"; }
    if date :zone "+0000" "date" "hour" "17" { set "b" "utc"; }
    if date :zone "+0000" "date" "iso8601" "1997-04-01T17:06:31+00:00" { set "c" "iso"; }
    if date :originalzone "date" "weekday" "2" { set "d" "tue"; }
    if currentdate :zone "+0000" "date" "2024-03-09" { set "e" "today"; }
    if currentdate :value "ge" "year" "2024" { set "f" "year"; }
    if date :index 1 :zone "+0000" "received" "julian" "50539" { set "g" "mjd"; }
    if header :index 2 :is "x-n" "second" { set "h" "index"; }
    if header :index 1 :last :is "x-n" "third" { set "i" "last"; }
    fileinto "${a}.${b}.${c}.${d}.${e}.${f}.${g}.${h}.${i}";"""
    message = b"X-N: first\r\nX-N: second\r\nX-N: third\r\n" + MESSAGE
    assert boxes(await run(script, message)) == ["orig.utc.iso.tue.today.year.mjd.index.last"]


# -- editheader (RFC 5293)


async def test_editheader_adds_and_deletes_and_later_tests_see_it() -> None:
    """addheader (top, or :last) and deleteheader change the stored message; Received stays protected."""
    script = """require ["editheader", "index", "fileinto"];
    addheader "X-Filtered" "by sieve";
    addheader :last "X-Last" "end";
    deleteheader "cc";
    deleteheader :contains "to" "nobody";
    deleteheader "received";
    addheader "Received" "forged";
    if exists "x-filtered" { if not exists "cc" { fileinto "Edited"; } }"""
    result = await run(script)
    assert boxes(result) == ["Edited"]
    assert result.message is not None
    head = result.message.split(b"\r\n\r\n", 1)[0]
    assert head.startswith(b"X-Filtered: by sieve\r\nReceived: from mx.example.net")
    assert head.endswith(b"X-Last: end")
    assert b"\r\nCc:" not in head
    assert head.count(b"Received:") == 1
    assert result.message.endswith(MESSAGE.split(b"\r\n\r\n", 1)[1])


async def test_deleteheader_by_value_and_index() -> None:
    """deleteheader with value patterns removes only the matching occurrences; :index :last one from the end."""
    message = b"X-A: one\r\nX-A: two\r\nX-A: three\r\n" + MESSAGE
    result = await run('require ["editheader", "index"]; deleteheader :matches "x-a" "t*"; ', message)
    assert result.message is not None
    assert b"X-A: one\r\n" in result.message
    assert b"X-A: t" not in result.message
    last = await run('require ["editheader", "index"]; deleteheader :index 1 :last "x-a";', message)
    assert last.message is not None
    assert b"X-A: one\r\nX-A: two\r\nReceived" in last.message


async def test_addheader_refuses_a_bad_field_name() -> None:
    """A computed field name that is not one is a run-time error: kept in INBOX, with the reason."""
    result = await run('require ["editheader", "variables"]; set "n" "Bad Name"; addheader "${n}" "x";')
    assert result.actions == [Keep(implicit=True)]
    assert "not a field name" in (result.error or "")


# -- vacation (RFC 5230, RFC 6131)


async def test_vacation_is_recorded_and_keeps() -> None:
    """vacation is an action beside the implicit keep, with its days (or seconds) and arguments."""
    result = await run('require "vacation"; vacation :days 3 :subject "Away" :addresses "me@x.example" "Gone.";')
    assert result.actions[0] == Vacation(
        "Gone.", 3 * 86400, "Away", None, ("me@x.example",), False, "Gone.\x00Away\x00"
    )
    assert result.actions[1] == Keep(implicit=True)
    seconds = await run('require ["vacation", "vacation-seconds"]; vacation :seconds 0 :handle "h" "x";')
    assert seconds.actions[0] == Vacation("x", 0, handle="h")
    clamped = await run('require "vacation"; vacation :days 365 "x";')
    assert isinstance(clamped.actions[0], Vacation)
    assert clamped.actions[0].seconds == 30 * 86400


# -- duplicate (RFC 7352)


async def test_duplicate_asks_the_caller_and_tracks_new_ids() -> None:
    """duplicate is true for an id the store has seen; a new id is given back to be remembered."""
    seen: set[tuple[str, str]] = {("", "<1@acme.example>")}

    async def check(handle: str, value: str) -> bool:
        return (handle, value) in seen

    script = 'require "duplicate"; if duplicate { discard; }'
    assert (await run(script, duplicate=check)).actions == [Discard()]
    fresh = await run(script, MESSAGE.replace(b"<1@", b"<2@"), duplicate=check)
    assert fresh.actions == [Keep(implicit=True)]
    assert fresh.track == [("", "<2@acme.example>", 7 * 86400)]
    by_id = await run('require "duplicate"; if duplicate :handle "h" :uniqueid "u" :seconds 60 { discard; }')
    assert by_id.track == [("h", "u", 60)]


async def test_a_failing_duplicate_store_keeps_the_message() -> None:
    """When the duplicate store fails, the run fails: implicit keep, and the reason says so."""

    async def broken(handle: str, value: str) -> bool:
        raise OSError("down")

    result = await run('require "duplicate"; if duplicate { discard; }', duplicate=broken)
    assert result.actions == [Keep(implicit=True)]
    assert "duplicate" in (result.error or "")


# -- limits


async def test_step_limit_stops_a_costly_script() -> None:
    """A script that compares too much fails after sieve.max_steps work units, and the message is kept."""
    keys = ", ".join(f'"k{i}"' for i in range(500))
    script = 'require "fileinto";' + f'if header :contains ["subject", "from", "to"] [{keys}] {{ fileinto "x"; }}' * 20
    start = time.process_time()
    result = await run(script, limits=Limits(max_steps=10_000))
    assert time.process_time() - start < 1.0
    assert result.actions == [Keep(implicit=True)]
    assert "max_steps" in (result.error or "")


async def test_mailboxexists_asks_the_caller() -> None:
    """mailboxexists (RFC 5490) is true only when every named mailbox exists."""

    async def exists(name: str) -> bool:
        return name in {"INBOX", "Lists"}

    script = 'require ["mailbox", "fileinto"]; if mailboxexists ["Lists", "INBOX"] { fileinto "Lists"; }'
    assert boxes(await run(script, mailbox_exists=exists)) == ["Lists"]
    script = 'require ["mailbox", "fileinto"]; if mailboxexists "Nope" { fileinto "Nope"; }'
    assert boxes(await run(script, mailbox_exists=exists)) == ["INBOX"]
