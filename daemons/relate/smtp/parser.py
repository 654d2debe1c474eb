"""SMTP command lines into immutable commands: RFC 5321 §4.1 with RFC 1870, 3207, 4954, 6152 and 6531.

Pure: no I/O and no session state. Every function reads its input once, left
to right, with a cursor (no regular expression that can backtrack over
client input, no recursion), so the cost is linear in the line, which the
session has already bounded by ``smtp.max_line_length``. ESMTP parameters
are capped at ``MAX_PARAMETERS`` per command.

What a malformed line gets (a :class:`ParseError` carrying the reply):

- ``500 5.5.2``: no verb this server knows (also an empty line);
- ``501 5.5.4``: arguments that do not fit the verb: missing, extra, a path
  without its closing ``>``, broken ``keyword=value`` parameters, a SIZE
  that is not a number;
- ``553 5.1.3``: a path that is delimited (``<`` … ``>``) but whose content
  is not a mailbox: two ``@``, a trailing dot, a NUL or other control
  character, bytes that are not UTF-8, an empty recipient;
- ``555 5.5.4``: a parameter this server does not implement.

The grammar is RFC 5321's, widened as RFC 6531 says (UTF-8 in atoms, quoted
strings, domain labels and parameter values), and as real clients need: a
space after ``FROM:``/``TO:``, and a path without angle brackets. Whether a
well-formed mailbox is acceptable (quoted local parts, address literals and
source routes are refused as recipients; non-ASCII needs SMTPUTF8) is the
session's policy, not the grammar's: :class:`Mailbox` says what was used.
Bytes that are not UTF-8 are decoded as lone surrogates (``surrogateescape``),
which no production accepts.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass

from relate.smtp import replies
from relate.smtp.errors import ParseError

# Every verb of the grammar (RFC 5321 §4.1.1, RFC 3207, RFC 4954); the command table covers each.
VERBS = frozenset(
    {"EHLO", "HELO", "MAIL", "RCPT", "DATA", "RSET", "NOOP", "QUIT", "VRFY", "EXPN", "HELP", "STARTTLS", "AUTH"}
)
# ESMTP parameters accepted on one MAIL or RCPT (we implement three; clients send at most a handful).
MAX_PARAMETERS = 16
# RFC 1870 §3: a SIZE value is at most 20 digits.
MAX_SIZE_DIGITS = 20
# RFC 1035 §2.3.4 / RFC 5321 §4.5.3.1.2: a label is at most 63 octets, a domain at most 255.
MAX_LABEL = 63
MAX_DOMAIN = 255
# RFC 4954 §4: a SASL mechanism name is 1 to 20 characters of this set.
_MECHANISM = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_")

_ATEXT = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789!#$%&'*+-/=?^_`{|}~")
_LET_DIG = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789")
_KEYWORD = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-")
# Unicode categories refused even where RFC 6531 allows UTF-8: controls (C0, C1), lone surrogates (bytes
# that were not UTF-8), line and paragraph separators (some software breaks lines there).
_BAD_CATEGORIES = frozenset({"Cc", "Cs", "Zl", "Zp"})


@dataclass(frozen=True, slots=True)
class Mailbox:
    """A mailbox as the grammar read it (RFC 5321 §4.1.2); ``local`` keeps a quoted string's quotes."""

    local: str
    domain: str  # an address literal keeps its brackets
    routed: bool = False  # a source route (A-d-l) came before it (RFC 5321 §4.1.2, §C)

    @property
    def address(self) -> str:
        return f"{self.local}@{self.domain}"

    @property
    def quoted(self) -> bool:
        return self.local.startswith('"')

    @property
    def literal(self) -> bool:
        return self.domain.startswith("[")

    @property
    def ascii(self) -> bool:
        return self.address.isascii()


@dataclass(frozen=True, slots=True)
class Parameter:
    keyword: str  # upper-case
    value: str | None


@dataclass(frozen=True, slots=True)
class Command:
    """A command without structured arguments; ``text`` is VRFY's, EXPN's, HELP's or NOOP's free text."""

    verb: str
    text: str = ""


@dataclass(frozen=True, slots=True)
class Hello(Command):
    domain: str = ""


@dataclass(frozen=True, slots=True)
class Mail(Command):
    path: Mailbox | None = None  # None: the null reverse-path <>
    params: tuple[Parameter, ...] = ()


@dataclass(frozen=True, slots=True)
class Rcpt(Command):
    path: Mailbox | None = None  # None: the bare <Postmaster> of RFC 5321 §4.1.1.3
    params: tuple[Parameter, ...] = ()


@dataclass(frozen=True, slots=True)
class Auth(Command):
    mechanism: str = ""  # upper-case
    initial: str | None = None  # the initial response as sent (base64, or "=" for an empty one)


@dataclass(frozen=True, slots=True)
class MailOptions:
    """MAIL's parameters, checked (RFC 1870 SIZE, RFC 6152 BODY, RFC 6531 SMTPUTF8, RFC 4954 §5 AUTH)."""

    size: int | None = None
    body: str | None = None  # "7BIT" or "8BITMIME"
    smtputf8: bool = False


# -- lines and verbs ----------------------------------------------------------------


def decode(line: bytes) -> str:
    """A command line without its line ending, as text; bytes that are not UTF-8 become lone surrogates."""
    if line.endswith(b"\n"):
        line = line[:-1]
    if line.endswith(b"\r"):
        line = line[:-1]
    return line.decode("utf-8", "surrogateescape")


def split_verb(text: str) -> tuple[str, str]:
    """(VERB, the rest); 500 5.5.2 for a verb this server does not know."""
    verb, _, rest = text.partition(" ")
    verb = verb.upper()
    if verb not in VERBS:
        raise ParseError(replies.SYNTAX_ERROR, "unknown verb")
    return verb, rest.lstrip(" ")


def parse_command(line: bytes) -> Command:
    """A whole command line (its CRLF optional) into a command; raises ParseError."""
    verb, rest = split_verb(decode(line))
    return parse_arguments(verb, rest)


def parse_arguments(verb: str, rest: str) -> Command:
    """The arguments of a known ``verb``; raises ParseError."""
    if verb in ("EHLO", "HELO"):
        # RFC 5321 §4.1.1.1: a domain or an address literal. Clients send all sorts of names; any one
        # printable token is taken (it only ever lands, sanitised, in the trace header).
        token = rest.split(" ", 1)[0]
        if not token or not _printable(token):
            raise ParseError(replies.BAD_HELO, "no usable name")
        return Hello(verb, domain=token)
    if verb == "MAIL":
        path, params = _path_argument(rest, "FROM:", recipient=False)
        return Mail(verb, path=path, params=params)
    if verb == "RCPT":
        path, params = _path_argument(rest, "TO:", recipient=True)
        return Rcpt(verb, path=path, params=params)
    if verb == "AUTH":
        return _auth(rest)
    if verb in ("DATA", "RSET", "QUIT", "STARTTLS"):
        if rest.strip(" "):
            raise ParseError(replies.BAD_ARGUMENTS, f"{verb} takes no argument")
        return Command(verb)
    if verb in ("VRFY", "EXPN") and not rest.strip(" "):
        raise ParseError(replies.BAD_ARGUMENTS, f"{verb} needs an argument")
    return Command(verb, text=rest)  # NOOP, HELP, VRFY, EXPN: free text, never interpreted


def _printable(text: str) -> bool:
    for ch in text:
        if ch <= " " or ch == "\x7f" or (ch > "\x7f" and unicodedata.category(ch) in _BAD_CATEGORIES):
            return False
    return True


def _auth(rest: str) -> Auth:
    # RFC 4954 §4: "AUTH" SP sasl-mech [SP initial-response]
    words = rest.split(" ")
    if not rest or len(words) > 2:
        raise ParseError(replies.BAD_ARGUMENTS, "AUTH takes a mechanism and an optional response")
    mechanism = words[0].upper()
    if not 1 <= len(mechanism) <= 20 or not set(mechanism) <= _MECHANISM:
        raise ParseError(replies.BAD_ARGUMENTS, "not a mechanism name")
    initial = words[1] if len(words) == 2 else None
    if initial is not None and (not initial or not _printable(initial)):
        raise ParseError(replies.BAD_ARGUMENTS, "bad initial response")
    return Auth("AUTH", mechanism=mechanism, initial=initial)


# -- paths --------------------------------------------------------------------------


def _path_argument(rest: str, keyword: str, *, recipient: bool) -> tuple[Mailbox | None, tuple[Parameter, ...]]:
    """``FROM:<path> params`` / ``TO:<path> params`` (RFC 5321 §4.1.1.2, §4.1.1.3)."""
    if rest[: len(keyword)].upper() != keyword:
        raise ParseError(replies.BAD_ARGUMENTS, f"expected {keyword}")
    text = rest[len(keyword) :].lstrip(" ")
    if text.startswith("<"):
        close = closing_bracket(text)
        if close < 0:
            raise ParseError(replies.BAD_ARGUMENTS, "path without its closing '>'")
        inner, after = text[1:close], text[close + 1 :]
        if not inner:
            if recipient:
                raise ParseError(replies.BAD_ADDRESS, "empty recipient")
            path = None  # the null reverse-path
        elif recipient and inner.upper() == "POSTMASTER":
            path = None
        else:
            path = mailbox_path(inner)
    else:
        # Without angle brackets (RFC 821 clients): the path runs to the first space. Nothing delimits
        # it, so anything wrong in it is a syntax error of the command (501), not a bad address.
        token, _, after = text.partition(" ")
        after = " " + after if after else ""
        if recipient and token.upper() == "POSTMASTER":
            path = None
        else:
            try:
                path = mailbox_path(token) if token else None
            except ParseError:
                raise ParseError(replies.BAD_ARGUMENTS, "not a path") from None
            if path is None or path.routed:
                raise ParseError(replies.BAD_ARGUMENTS, "not a path")
    return path, parameters(after)


def closing_bracket(text: str) -> int:
    """Index of the ``>`` that closes the path opened by ``text[0] == "<"``, or -1.

    It is the first ``>`` outside a quoted string that ends the argument or is
    followed by a space (parameters); a ``>`` inside the path (``<<>>``) is
    taken as part of it, so such a path is delimited and then refused as an
    address rather than as a command.
    """
    quoted = False
    i = 1
    n = len(text)
    while i < n:
        ch = text[i]
        if quoted:
            if ch == "\\":
                i += 1  # quoted-pair: the next character is taken as it is
            elif ch == '"':
                quoted = False
        elif ch == '"':
            quoted = True
        elif ch == ">" and (i + 1 == n or text[i + 1] == " "):
            return i
        i += 1
    return -1


def mailbox_path(text: str) -> Mailbox:
    """``[A-d-l ":"] Mailbox`` (the inside of ``<...>``); 553 5.1.3 when it is not one."""
    pos = 0
    routed = False
    if text.startswith("@"):
        # A-d-l = At-domain *( "," At-domain ), At-domain = "@" Domain; then ":".
        routed = True
        while True:
            if pos >= len(text) or text[pos] != "@":
                raise ParseError(replies.BAD_ADDRESS, "bad source route")
            _, pos = _domain(text, pos + 1)
            if pos < len(text) and text[pos] == ",":
                pos += 1
                continue
            if pos < len(text) and text[pos] == ":":
                pos += 1
                break
            raise ParseError(replies.BAD_ADDRESS, "bad source route")
    local, pos = _local_part(text, pos)
    if pos >= len(text) or text[pos] != "@":
        raise ParseError(replies.BAD_ADDRESS, "no '@'")
    if text.startswith("[", pos + 1):
        domain, pos = _address_literal(text, pos + 1)
    else:
        domain, pos = _domain(text, pos + 1)
    if pos != len(text):
        raise ParseError(replies.BAD_ADDRESS, "junk after the domain")
    return Mailbox(local, domain, routed)


def _utf8_ok(ch: str) -> bool:
    """A non-ASCII character RFC 6531 allows (UTF8-non-ascii), less controls, separators and broken bytes."""
    return ch > "\x7f" and unicodedata.category(ch) not in _BAD_CATEGORIES


def _local_part(text: str, pos: int) -> tuple[str, int]:
    """Dot-string / Quoted-string (RFC 5321 §4.1.2, RFC 6531 §3.3)."""
    start = pos
    n = len(text)
    if pos < n and text[pos] == '"':
        pos += 1
        while pos < n:
            ch = text[pos]
            if ch == '"':
                return text[start : pos + 1], pos + 1
            if ch == "\\":
                # quoted-pairSMTP = %d92 %d32-126
                if pos + 1 >= n or not " " <= text[pos + 1] <= "~":
                    raise ParseError(replies.BAD_ADDRESS, "bad quoted pair")
                pos += 2
                continue
            # qtextSMTP = %d32-33 / %d35-91 / %d93-126, or UTF-8
            if not (" " <= ch <= "~" or _utf8_ok(ch)):
                raise ParseError(replies.BAD_ADDRESS, "bad character in quoted string")
            pos += 1
        raise ParseError(replies.BAD_ADDRESS, "unterminated quoted string")
    # Dot-string = Atom *("." Atom)
    atom = 0  # length of the current atom
    while pos < n:
        ch = text[pos]
        if ch in _ATEXT or (ch > "\x7f" and _utf8_ok(ch)):
            atom += 1
        elif ch == ".":
            if atom == 0:
                raise ParseError(replies.BAD_ADDRESS, "empty atom")
            atom = 0
        else:
            break
        pos += 1
    if atom == 0:
        raise ParseError(replies.BAD_ADDRESS, "empty local part or trailing dot")
    return text[start:pos], pos


def _domain(text: str, pos: int) -> tuple[str, int]:
    """Domain = sub-domain *("." sub-domain); sub-domain = Let-dig [Ldh-str], or a U-label (RFC 6531 §3.3)."""
    start = pos
    n = len(text)
    label = 0
    last = ""
    while pos < n:
        ch = text[pos]
        if ch in _LET_DIG or (ch > "\x7f" and _utf8_ok(ch)):
            label += 1
        elif ch == "-":
            if label == 0:
                raise ParseError(replies.BAD_ADDRESS, "label starts with '-'")
            label += 1
        elif ch == ".":
            if label == 0 or last == "-":
                raise ParseError(replies.BAD_ADDRESS, "empty label or label ending in '-'")
            label = 0
        else:
            break
        if label > MAX_LABEL:
            raise ParseError(replies.BAD_ADDRESS, "label too long")
        last = ch
        pos += 1
    if label == 0 or last == "-":
        raise ParseError(replies.BAD_ADDRESS, "empty domain, trailing dot or '-'")
    if pos - start > MAX_DOMAIN:
        raise ParseError(replies.BAD_ADDRESS, "domain too long")
    return text[start:pos], pos


def _address_literal(text: str, pos: int) -> tuple[str, int]:
    """ "[" 1*dcontent "]" (RFC 5321 §4.1.3, taken generally: dcontent = %d33-90 / %d94-126)."""
    start = pos
    pos += 1
    n = len(text)
    while pos < n and text[pos] != "]":
        ch = text[pos]
        if not ("!" <= ch <= "Z" or "^" <= ch <= "~"):
            raise ParseError(replies.BAD_ADDRESS, "bad address literal")
        pos += 1
    if pos >= n or pos == start + 1:
        raise ParseError(replies.BAD_ADDRESS, "bad address literal")
    return text[start : pos + 1], pos + 1


# -- parameters ---------------------------------------------------------------------


def parameters(text: str) -> tuple[Parameter, ...]:
    """``*( SP esmtp-param )`` after a path (RFC 5321 §4.1.2; values may be UTF-8, RFC 6531 §3.3)."""
    if not text:
        return ()
    if not text.startswith(" "):
        raise ParseError(replies.BAD_ARGUMENTS, "junk after the path")
    found: list[Parameter] = []
    seen: set[str] = set()
    for word in text.split(" "):
        if not word:
            continue  # several spaces: tolerated
        if len(found) == MAX_PARAMETERS:
            raise ParseError(replies.BAD_ARGUMENTS, "too many parameters")
        keyword, eq, value = word.partition("=")
        # esmtp-keyword = (ALPHA / DIGIT) *(ALPHA / DIGIT / "-")
        if not keyword or keyword[0] == "-" or not set(keyword) <= _KEYWORD:
            raise ParseError(replies.BAD_ARGUMENTS, "bad parameter keyword")
        # esmtp-value = 1*(%d33-60 / %d62-126), or UTF-8
        if eq and (not value or not all(("!" <= ch <= "~" and ch != "=") or _utf8_ok(ch) for ch in value)):
            raise ParseError(replies.BAD_ARGUMENTS, "bad parameter value")
        keyword = keyword.upper()
        if keyword in seen:
            raise ParseError(replies.BAD_ARGUMENTS, "parameter given twice")
        seen.add(keyword)
        found.append(Parameter(keyword, value if eq else None))
    return tuple(found)


def mail_options(params: tuple[Parameter, ...], *, extended: bool, auth_offered: bool) -> MailOptions:
    """Check MAIL's parameters; ``extended``: the client said EHLO (parameters need it, RFC 5321 §4.1.1.1)."""
    if params and not extended:
        raise ParseError(replies.BAD_PARAMETER, "parameters after HELO")
    size: int | None = None
    body: str | None = None
    smtputf8 = False
    for param in params:
        if param.keyword == "SIZE":  # RFC 1870 §3: size-value = 1*20DIGIT
            value = param.value or ""
            if not value or len(value) > MAX_SIZE_DIGITS or not value.isascii() or not value.isdigit():
                raise ParseError(replies.BAD_ARGUMENTS, "bad SIZE")
            size = int(value)
        elif param.keyword == "BODY":  # RFC 6152 §2
            value = (param.value or "").upper()
            if value not in ("7BIT", "8BITMIME"):
                raise ParseError(replies.BAD_ARGUMENTS, "bad BODY")
            body = value
        elif param.keyword == "SMTPUTF8":  # RFC 6531 §3.4: no value
            if param.value is not None:
                raise ParseError(replies.BAD_ARGUMENTS, "SMTPUTF8 takes no value")
            smtputf8 = True
        elif param.keyword == "AUTH" and auth_offered:  # RFC 4954 §5: accepted, and not used for anything
            if param.value is None:
                raise ParseError(replies.BAD_ARGUMENTS, "AUTH needs a value")
        else:
            raise ParseError(replies.BAD_PARAMETER, "unknown MAIL parameter")
    return MailOptions(size, body, smtputf8)


def rcpt_options(params: tuple[Parameter, ...]) -> None:
    """RCPT takes no parameter here (no DSN, RFC 3461): any one is 555."""
    if params:
        raise ParseError(replies.BAD_PARAMETER, "unknown RCPT parameter")
