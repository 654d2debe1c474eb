"""Structured header fields: RFC 5322 §3.4 address lists and RFC 2045/2183/2231 MIME parameters.

Both parsers are iterative and linear in their input: a lexer (one regular
expression per token, a loop with a depth counter for nested comments) and a
single pass over its tokens. Nothing recurses, whatever the nesting, and
nothing here calls the ``email`` package's header parsers, whose recursion and
quadratic cases a hostile field can reach.

Address lists (RFC 5322 §3.4, with the obsolete forms of §4.4 that real mail
uses):

- Items are separated by "," (and by ";" outside a group, as some clients
  write them). ``name: members;`` is a group; an unterminated group ends with
  the field.
- ``phrase <addr-spec>``: the display name is the phrase (quoted strings
  unquoted, words joined by one space, comments kept in parentheses, as the
  ``email`` package gives them); a source route (``<@a,@b:x@y>``) is left out
  of the addr-spec and kept apart, in ``routes`` (IMAP's ENVELOPE shows it).
- A bare addr-spec takes its comments as display name (``a@b (Name)``);
  words before it that do not join it with a dot are a display name too
  (``Alice alice@example.org``). White space and comments inside an
  addr-spec are dropped (``a . b @ c`` is ``a.b@c``).
- Encoded words are kept as written (``relate.mail.encoded_words`` decodes
  display names); an encoded word is one token even when its text holds
  specials such as "," (invalid, but common in display names).
- What a reader could take two ways is reported in ``problems`` (unbalanced
  quotes, comments or angle brackets, comments nested deeper than
  MAX_NESTING, a source route, text after an address, more than
  MAX_ADDRESSES addresses); the parse still gives its best reading.

MIME parameters (RFC 2045 §5.1, RFC 2183 §2, RFC 2231 §3-§4): ``type/subtype``
or a disposition type, then ``; name=value`` pairs with CFWS anywhere. Names
are lower-cased; values are tokens (leniently: anything up to white space or
";") or quoted strings. The first value of a name wins. RFC 2231 sections
``name*0``, ``name*1*``... are joined from 0 while contiguous, ``*``-sections
percent-decoded in the charset that section 0 names. Encoded words in a
``name`` or ``filename`` value are decoded (mailers put them there, RFC 2047
§5 notwithstanding).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import NamedTuple
from urllib.parse import unquote_to_bytes

from relate.mail import charset, encoded_words
from relate.mail.limits import MAX_ADDRESSES, MAX_NESTING

__all__ = ["AddressList", "Parameters", "parse_address_list", "parse_parameters"]

ATOM, QUOTED, COMMENT, LITERAL, SPECIAL = range(5)
_WORDS = (ATOM, QUOTED)


class Token(NamedTuple):  # a tuple: tokens are many, and made fastest so
    kind: int
    raw: str  # as written (quoted strings with their quotes)
    value: str  # quoted strings and comments without delimiters and quoted-pairs
    space: bool  # white space or a comment came before it


_LEX = re.compile(
    r"""
      (?P<ws>[ \t\r\n]++)
    | (?P<ew>=\?[^?\s]*\?[bBqQ]\?[^?]*\?=)
    | (?P<atom>[^ \t\r\n()<>\[\]:;@\\,."]++)
    | (?P<quoted>"(?P<qtext>[^"\\]*+(?:\\.[^"\\]*+)*+)(?P<qend>")?)
    | (?P<literal>\[[^\[\]\\]*+(?:\\.[^\[\]\\]*+)*+(?P<lend>])?)
    | (?P<open>\()
    | (?P<special>.)
    """,
    re.VERBOSE | re.DOTALL,
)
_CTEXT = re.compile(r"[^()\\]*+(?:\\.[^()\\]*+)*+", re.DOTALL)
_QUOTED_PAIR = re.compile(r"\\(.)", re.DOTALL)


def _unescape(text: str) -> str:
    return _QUOTED_PAIR.sub(r"\1", text) if "\\" in text else text


def _lex(value: str, problems: set[str]) -> list[Token]:
    """The tokens of a structured field value; comments become COMMENT tokens (nesting counted, not recursed)."""
    tokens: list[Token] = []
    append, lex = tokens.append, _LEX.match
    pos, end, space = 0, len(value), False
    while pos < end:
        match = lex(value, pos)
        assert match is not None  # the last alternative matches any character
        kind = match.lastgroup
        if kind == "ws":
            space, pos = True, match.end()
            continue
        if kind == "open":
            pos = _comment_end(value, pos, problems)
            inner = value[match.end() : pos - 1 if value[pos - 1] == ")" else pos]
            append(Token(COMMENT, value[match.start() : pos], _unescape(inner), space))
            space = True
            continue
        raw = match.group()
        if kind in ("ew", "atom"):
            append(Token(ATOM, raw, raw, space))
        elif kind == "quoted":
            if match.group("qend") is None:
                problems.add("unbalanced")
            append(Token(QUOTED, raw, _unescape(match.group("qtext")), space))
        elif kind == "literal":
            if match.group("lend") is None:
                problems.add("unbalanced")
            append(Token(LITERAL, raw, raw, space))
        else:
            if raw in ")\\]":
                problems.add("unbalanced")
            append(Token(SPECIAL, raw, raw, space))
        space, pos = False, match.end()
    return tokens


def _comment_end(value: str, start: int, problems: set[str]) -> int:
    """The end of the comment opening at ``start`` (RFC 5322 §3.2.2), counting nesting instead of recursing."""
    depth, pos, end = 1, start + 1, len(value)
    while True:
        pos = _CTEXT.match(value, pos).end()  # type: ignore[union-attr]  # matches the empty string at least
        if pos >= end or value[pos] == "\\":  # unterminated, or a lone backslash at the very end
            problems.add("unbalanced")
            return end
        if value[pos] == "(":
            depth += 1
            if depth > MAX_NESTING:
                problems.add("nesting")
        else:
            depth -= 1
            if depth == 0:
                return pos + 1
        pos += 1


def _phrase(tokens: list[Token]) -> str:
    """A display name (RFC 5322 §3.2.5 phrase): quoted strings unquoted, words joined by one space."""
    out: list[str] = []
    previous: Token | None = None
    for token in tokens:
        if previous is not None and (
            token.space or (token.kind in _WORDS and previous.kind in _WORDS and QUOTED in (token.kind, previous.kind))
        ):
            out.append(" ")
        out.append(f"({token.value})" if token.kind == COMMENT else token.value if token.kind == QUOTED else token.raw)
        previous = token
    return "".join(out)


def _is(token: Token, char: str) -> bool:
    return token.kind == SPECIAL and token.raw == char


def _local_start(tokens: list[Token], at: int) -> int:
    """Where the local part ending before tokens[at] ("@") starts: words joined by dots."""
    j = at - 1
    while j >= 0:
        token = tokens[j]
        if not (_is(token, ".") or (token.kind in _WORDS and (j + 1 == at or _is(tokens[j + 1], ".")))):
            break
        j -= 1
    return j + 1


def _run_end(tokens: list[Token], start: int) -> int:
    """Where the run of words (or domain literals) joined by dots that starts at tokens[start] ends."""
    j = start
    while j < len(tokens):
        token = tokens[j]
        if not (_is(token, ".") or (token.kind in (ATOM, QUOTED, LITERAL) and (j == start or _is(tokens[j - 1], ".")))):
            break
        j += 1
    return j


def _spec(tokens: list[Token]) -> str:
    return "".join(token.raw for token in tokens)


def _mailbox(tokens: list[Token], problems: set[str]) -> tuple[str, str, str] | None:
    """(display name, addr-spec, source route or "") of one list item, or None for an item without one."""
    angle = next((i for i, token in enumerate(tokens) if _is(token, "<")), None)
    if angle is not None:
        close = next((i for i in range(angle + 1, len(tokens)) if _is(tokens[i], ">")), None)
        if close is None:
            problems.add("unbalanced")
            close = len(tokens)
        if any(token.kind != COMMENT for token in tokens[close + 1 :]):
            problems.add("junk")
        inside = [token for token in tokens[angle + 1 : close] if token.kind != COMMENT]
        route = ""
        if inside and _is(inside[0], "@"):  # RFC 5322 §4.4 obs-route: "@a,@b:" before the addr-spec
            problems.add("route")
            colon = next((i for i, token in enumerate(inside) if _is(token, ":")), len(inside) - 1)
            route, inside = _spec(inside[:colon]), inside[colon + 1 :]
        return _phrase(tokens[:angle]), _spec(inside), route
    plain = [token for token in tokens if token.kind != COMMENT]
    if not plain:
        return None
    comments = " ".join(token.value for token in tokens if token.kind == COMMENT)
    at = next((i for i, token in enumerate(plain) if _is(token, "@")), None)
    if at is None:  # no "@": a local name such as "root", or a bare display name
        start, end = 0, _run_end(plain, 0)
    else:
        start, end = _local_start(plain, at), _run_end(plain, at + 1)
        end = end if end > at + 1 else at + 1
    if end < len(plain):
        problems.add("junk")
    name = _phrase(plain[:start]) if start else comments
    return name, _spec(plain[start:end]), ""


@dataclass(slots=True)
class AddressList:
    """An address list: groups in order (None for addresses outside a group) with their (name, addr-spec) members."""

    groups: list[tuple[str | None, list[tuple[str, str]]]] = field(default_factory=list)
    comments: list[str] = field(default_factory=list)  # every comment's text, for readers that show comments
    problems: set[str] = field(default_factory=set)  # see the module docstring; empty for a clean list
    routes: dict[str, str] = field(default_factory=dict)  # addr-spec -> its source route ("@a,@b"), where written


def parse_address_list(value: str) -> AddressList:
    """Parse an address-list (RFC 5322 §3.4); never raises."""
    result = AddressList()
    problems = result.problems
    tokens = _lex(value, problems)
    result.comments = [token.value for token in tokens if token.kind == COMMENT]
    group: str | None = None
    members: list[tuple[str, str]] = []
    item: list[Token] = []
    phrase = True  # whether the item so far could be a group's display name (kept as items grow: no rescans)
    angle = False
    count = 0

    def finish() -> bool:
        nonlocal count, phrase
        phrase = True
        if item:
            mailbox = _mailbox(item, problems)
            if mailbox is not None and (mailbox[0] or mailbox[1]):
                count += 1
                if count > MAX_ADDRESSES:
                    problems.add("too-many")
                    return False
                name, spec, route = mailbox
                members.append((name, spec))
                if route:
                    result.routes.setdefault(spec, route)
            item.clear()
        return True

    for token in tokens:
        if token.kind == SPECIAL and not angle and token.raw in ",;:":
            if token.raw == ":" and group is None and phrase:
                if members:
                    result.groups.append((None, members))
                group, members = _phrase(item), []
                item.clear()
                continue
            if token.raw == ":":
                problems.add("junk")
                item.append(token)
                phrase = False
                continue
            if not finish():
                break
            if token.raw == ";" and group is not None:
                result.groups.append((group, members))
                group, members = None, []
            continue
        if _is(token, "<"):
            if angle:
                problems.add("unbalanced")
            angle = True
        elif _is(token, ">"):
            if not angle:
                problems.add("unbalanced")
            angle = False
        if token.kind == SPECIAL and token.raw != ".":
            phrase = False
        item.append(token)
    else:
        finish()
    if group is not None or members:
        result.groups.append((group, members))
    return result


# --- MIME parameters -------------------------------------------------------------

_MIME_LEX = re.compile(
    r"""
      (?P<ws>[ \t\r\n]++)
    | (?P<quoted>"(?P<qtext>[^"\\]*+(?:\\.[^"\\]*+)*+)(?P<qend>")?)
    | (?P<open>\()
    | (?P<special>[;=/])
    | (?P<token>[^ \t\r\n()";=/]++)
    | (?P<other>.)
    """,
    re.VERBOSE | re.DOTALL,
)
_SECTION = re.compile(r"(.*?)\*([0-9]{1,3})(\*?)", re.DOTALL)  # RFC 2231 §3 name*N, §4 name*N*
_DECODED_PARAMS = frozenset({"name", "filename"})


@dataclass(slots=True)
class Parameters:
    """A Content-Type (``value`` is "type/subtype") or Content-Disposition field, parsed."""

    value: str  # lower-case; "" when missing or malformed
    params: dict[str, str]  # lower-case names in order of appearance, decoded values
    problems: set[str]


def _mime_tokens(value: str, problems: set[str]) -> list[tuple[str, str, bool]]:
    """(kind, text, white space before) of a MIME field value; comments are skipped."""
    tokens: list[tuple[str, str, bool]] = []
    pos, end, space = 0, len(value), False
    while pos < end:
        match = _MIME_LEX.match(value, pos)
        assert match is not None  # the last alternative matches any character
        kind = match.lastgroup or "other"
        if kind == "ws":
            space = True
        elif kind == "open":
            space = True
            pos = _comment_end(value, pos, problems)
            continue
        elif kind == "quoted":
            if match.group("qend") is None:
                problems.add("unbalanced")
            tokens.append(("quoted", _unescape(match.group("qtext")), space))
            space = False
        else:
            tokens.append((kind, match.group(), space))
            space = False
        pos = match.end()
    return tokens


def parse_parameters(value: str, *, content_type: bool) -> Parameters:
    """Parse a Content-Type (``content_type=True``) or Content-Disposition value; never raises."""
    problems: set[str] = set()
    tokens = _mime_tokens(value, problems)
    n = len(tokens)
    i = 0
    head = ""
    if i < n and tokens[i][0] == "token":
        head, i = tokens[i][1].lower(), i + 1
        if content_type:
            if i + 1 < n and tokens[i][1] == "/" and tokens[i + 1][0] == "token":
                head, i = f"{head}/{tokens[i + 1][1].lower()}", i + 2
            else:
                head = ""
    if i < n and tokens[i][1] != ";":
        problems.add("junk")
    # name=value pairs, each after a ";"; anything else up to the next ";" is skipped.
    raw: list[tuple[str, str]] = []  # (lower-case name, value)
    while i < n:
        if tokens[i][1] != ";":
            i += 1
            continue
        i += 1
        if i + 1 < n and tokens[i][0] == "token" and tokens[i + 1][1] == "=":
            name, i = tokens[i][1].lower(), i + 2
            text, quoted = "", False
            if i < n and tokens[i][0] == "quoted":
                text, quoted, i = tokens[i][1], True, i + 1
            else:  # leniently, a value runs to white space or ";" ("==_Part=1" and "a/b" included)
                parts: list[str] = []
                while i < n and tokens[i][1] != ";" and tokens[i][0] != "quoted" and not (parts and tokens[i][2]):
                    parts.append(tokens[i][1])
                    i += 1
                text = "".join(parts)
            if text or quoted:
                raw.append((name, text))
    return Parameters(head, _combine(raw), problems)


def _combine(raw: list[tuple[str, str]]) -> dict[str, str]:
    """Join RFC 2231 sections and decode values; the first value given for a name wins."""
    plain: dict[str, str] = {}
    sections: dict[str, dict[int, tuple[str, bool]]] = {}
    order: dict[str, None] = {}
    for name, text in raw:
        section = _SECTION.fullmatch(name)
        if section is not None:
            base, number, extended = section.group(1), int(section.group(2)), bool(section.group(3))
        elif name.endswith("*"):
            base, number, extended = name[:-1], 0, True
        else:
            base, number, extended = name, -1, False
        if not base:
            continue
        order.setdefault(base)
        if number < 0:
            if base not in sections:
                plain.setdefault(base, text)
        elif base not in plain:
            sections.setdefault(base, {}).setdefault(number, (text, extended))
    params: dict[str, str] = {}
    for base in order:
        if base in plain:
            text = plain[base]
            params[base] = encoded_words.decode(text) if base in _DECODED_PARAMS and "=?" in text else text
        else:
            params[base] = _join_sections(sections[base])
    return params


def _join_sections(parts: dict[int, tuple[str, bool]]) -> str:
    """An RFC 2231 value from its sections 0, 1, 2... (stopping at the first gap)."""
    label = ""
    data = bytearray()
    number = 0
    while number in parts:
        text, extended = parts[number]
        if extended:
            if number == 0 and text.count("'") >= 2:  # charset'language'value (RFC 2231 §4)
                label, _, rest = text.partition("'")
                text = rest.partition("'")[2]
            data += unquote_to_bytes(text)
        else:
            data += text.encode("utf-8", "surrogateescape")
        number += 1
    return charset.decode(bytes(data), label)
