"""What each Sieve command and test accepts, and the check of a parsed script against it.

The table below is the one place that says which commands and tests exist,
the extension (``require``) each needs, their tagged arguments (with the
tags that exclude each other grouped, e.g. the match types) and their
positional arguments. :func:`compile` checks a parsed script against it, as
RFC 5228 §2.10.5 and §3.2 ask: an unknown command, test, tag or comparator,
an extension used but not required or required but not supported, a tag
given twice or together with another of its group, missing or surplus
arguments and a string list where one string is wanted are all errors, each
with its line and column. The result is a tree of :class:`Node` with the
tags and positional arguments sorted out, which the interpreter runs.

``:regex`` (draft-ietf-sieve-regex) is not offered: Python's regular
expressions backtrack, so a script's pattern could cost time exponential
in a header's length.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from relate.sieve import parser
from relate.sieve.errors import SieveError
from relate.sieve.parser import Number, Strings, Tag

# RFC 5228 §6 and the extension RFCs: what `require` may name.
EXTENSIONS = frozenset(
    {
        "fileinto",
        "reject",
        "ereject",
        "envelope",
        "comparator-i;octet",
        "comparator-i;ascii-casemap",
        "comparator-i;ascii-numeric",
        "copy",
        "mailbox",
        "imap4flags",
        "body",
        "variables",
        "relational",
        "subaddress",
        "date",
        "index",
        "vacation",
        "vacation-seconds",
        "editheader",
        "duplicate",
    }
)
COMPARATORS = {"i;octet": None, "i;ascii-casemap": None, "i;ascii-numeric": "comparator-i;ascii-numeric"}
RELATIONS = frozenset({"gt", "ge", "lt", "le", "eq", "ne"})
DATE_PARTS = frozenset(
    {
        "year",
        "month",
        "day",
        "date",
        "julian",
        "hour",
        "minute",
        "second",
        "time",
        "iso8601",
        "std11",
        "zone",
        "weekday",
    }
)
_VARIABLE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")

STRING, STRINGS, NUMBER = "string", "string-list", "number"


@dataclass(frozen=True)
class TagSpec:
    group: str | None = None  # tags of one group exclude each other
    arg: str | None = None  # the argument the tag takes, if any
    extension: str | None = None  # needed besides the command's own


@dataclass(frozen=True)
class Spec:
    test: bool  # a test (else a command)
    positional: tuple[tuple[str, ...], ...]  # the accepted shapes
    tags: Mapping[str, TagSpec] = field(default_factory=dict)
    extension: str | None = None
    tests: str = "none"  # none, one, list
    block: bool = False
    required_group: str | None = None  # a tag of this group must be given


def _match(*, index: bool = False, address: bool = False) -> dict[str, TagSpec]:
    tags = {
        "comparator": TagSpec("comparator", STRING),
        "is": TagSpec("match"),
        "contains": TagSpec("match"),
        "matches": TagSpec("match"),
        "count": TagSpec("match", STRING, "relational"),
        "value": TagSpec("match", STRING, "relational"),
    }
    if address:
        tags |= {
            "all": TagSpec("part"),
            "localpart": TagSpec("part"),
            "domain": TagSpec("part"),
            "user": TagSpec("part", None, "subaddress"),
            "detail": TagSpec("part", None, "subaddress"),
        }
    if index:
        tags |= {"index": TagSpec("index", NUMBER, "index"), "last": TagSpec("last", None, "index")}
    return tags


_FLAGS = {"flags": TagSpec("flags", STRINGS, "imap4flags")}

SPECS: dict[str, Spec] = {
    # RFC 5228 §3 control commands
    "require": Spec(False, ((STRINGS,),)),
    "if": Spec(False, ((),), tests="one", block=True),
    "elsif": Spec(False, ((),), tests="one", block=True),
    "else": Spec(False, ((),), block=True),
    "stop": Spec(False, ((),)),
    # RFC 5228 §4 actions, RFC 3894 :copy, RFC 5490 :create, RFC 5232 :flags
    "keep": Spec(False, ((),), _FLAGS),
    "discard": Spec(False, ((),)),
    "fileinto": Spec(
        False,
        ((STRING,),),
        {"copy": TagSpec("copy", None, "copy"), "create": TagSpec("create", None, "mailbox")} | _FLAGS,
        "fileinto",
    ),
    "redirect": Spec(False, ((STRING,),), {"copy": TagSpec("copy", None, "copy")}),
    "reject": Spec(False, ((STRING,),), extension="reject"),
    "ereject": Spec(False, ((STRING,),), extension="ereject"),
    # RFC 5232
    "setflag": Spec(False, ((STRINGS,), (STRING, STRINGS)), extension="imap4flags"),
    "addflag": Spec(False, ((STRINGS,), (STRING, STRINGS)), extension="imap4flags"),
    "removeflag": Spec(False, ((STRINGS,), (STRING, STRINGS)), extension="imap4flags"),
    # RFC 5229
    "set": Spec(
        False,
        ((STRING, STRING),),
        {
            m: TagSpec(g)
            for m, g in (
                ("lower", "case"),
                ("upper", "case"),
                ("lowerfirst", "first"),
                ("upperfirst", "first"),
                ("quotewildcard", "quote"),
                ("length", "length"),
            )
        },
        "variables",
    ),
    # RFC 5230, RFC 6131
    "vacation": Spec(
        False,
        ((STRING,),),
        {
            "days": TagSpec("period", NUMBER),
            "seconds": TagSpec("period", NUMBER, "vacation-seconds"),
            "subject": TagSpec("subject", STRING),
            "from": TagSpec("from", STRING),
            "addresses": TagSpec("addresses", STRINGS),
            "mime": TagSpec("mime"),
            "handle": TagSpec("handle", STRING),
        },
        "vacation",
    ),
    # RFC 5293
    "addheader": Spec(False, ((STRING, STRING),), {"last": TagSpec("last")}, "editheader"),
    "deleteheader": Spec(
        False,
        ((STRING,), (STRING, STRINGS)),
        _match(index=True),
        "editheader",
    ),
    # RFC 5228 §5 tests
    "address": Spec(True, ((STRINGS, STRINGS),), _match(index=True, address=True)),
    "header": Spec(True, ((STRINGS, STRINGS),), _match(index=True)),
    "envelope": Spec(True, ((STRINGS, STRINGS),), _match(address=True), "envelope"),
    "exists": Spec(True, ((STRINGS,),)),
    "size": Spec(True, ((NUMBER,),), {"over": TagSpec("size"), "under": TagSpec("size")}, required_group="size"),
    "allof": Spec(True, ((),), tests="list"),
    "anyof": Spec(True, ((),), tests="list"),
    "not": Spec(True, ((),), tests="one"),
    "true": Spec(True, ((),)),
    "false": Spec(True, ((),)),
    # RFC 5232
    "hasflag": Spec(True, ((STRINGS,), (STRINGS, STRINGS)), _match(), "imap4flags"),
    # RFC 5173
    "body": Spec(
        True,
        ((STRINGS,),),
        _match()
        | {"raw": TagSpec("transform"), "content": TagSpec("transform", STRINGS), "text": TagSpec("transform")},
        "body",
    ),
    # RFC 5229
    "string": Spec(True, ((STRINGS, STRINGS),), _match(), "variables"),
    # RFC 5260
    "date": Spec(
        True,
        ((STRING, STRING, STRINGS),),
        _match(index=True) | {"zone": TagSpec("zone", STRING), "originalzone": TagSpec("zone")},
        "date",
    ),
    "currentdate": Spec(True, ((STRING, STRINGS),), _match() | {"zone": TagSpec("zone", STRING)}, "date"),
    # RFC 5490
    "mailboxexists": Spec(True, ((STRINGS,),), extension="mailbox"),
    # RFC 7352
    "duplicate": Spec(
        True,
        ((),),
        {
            "handle": TagSpec("handle", STRING),
            "header": TagSpec("id", STRING),
            "uniqueid": TagSpec("id", STRING),
            "seconds": TagSpec("seconds", NUMBER),
            "last": TagSpec("last"),
        },
        "duplicate",
    ),
}

Value = str | tuple[str, ...] | int | bool


@dataclass(frozen=True, slots=True)
class Node:
    """A validated command or test: its tags (name -> argument, or True) and positional arguments."""

    name: str
    tags: Mapping[str, Value]
    args: tuple[Value, ...]
    tests: tuple[Node, ...]
    block: tuple[Node, ...] | None
    line: int
    column: int
    match: str = "is"  # the match type (RFC 5228 §2.7.1, RFC 5231)
    relation: str = ""  # :count / :value's operator
    comparator: str = "i;ascii-casemap"  # RFC 5228 §2.7.3's default
    part: str = "all"  # the address part (RFC 5228 §2.7.4, RFC 5233)

    def tag(self, name: str) -> Value | None:
        return self.tags.get(name)


@dataclass(frozen=True)
class Script:
    commands: tuple[Node, ...]
    extensions: frozenset[str]
    size: int = 0


def compile(
    text: str | bytes,
    *,
    max_size: int = parser.DEFAULT_MAX_SIZE,
    max_nesting: int = parser.DEFAULT_MAX_NESTING,
) -> Script:
    """Parse and validate a script; raises SieveError naming the line and column of the first fault."""
    commands = parser.parse(text, max_size=max_size, max_nesting=max_nesting)
    required: set[str] = set()
    nodes: list[Node] = []
    leading = True
    for command in commands:
        if command.name == "require":
            if not leading:
                raise SieveError('"require" must come before any other command', command.line, command.column)
            (names,) = _check(command, SPECS["require"], required).args
            assert isinstance(names, tuple)
            for name in names:
                if name.lower() not in EXTENSIONS:
                    raise SieveError(f'extension "{name}" is not supported', command.line, command.column)
                required.add(name.lower())
            continue
        leading = False
        nodes.append(_node(command, required))
    _sequence(nodes)
    size = len(text) if isinstance(text, bytes) else len(text.encode("utf-8"))
    return Script(tuple(nodes), frozenset(required), size)


def _sequence(block: list[Node] | tuple[Node, ...]) -> None:
    """elsif and else only right after if or elsif (RFC 5228 §3.1)."""
    previous = ""
    for node in block:
        if node.name in ("elsif", "else") and previous not in ("if", "elsif"):
            raise SieveError(f'"{node.name}" without "if" before it', node.line, node.column)
        previous = node.name
        if node.block is not None:
            _sequence(node.block)


def _node(item: parser.Command | parser.Test, required: set[str]) -> Node:
    spec = SPECS.get(item.name)
    is_test = isinstance(item, parser.Test)
    if spec is None or spec.test != is_test:
        what = "test" if is_test else "command"
        if item.name == "require":
            raise SieveError('"require" must come before any other command', item.line, item.column)
        raise SieveError(f'unknown {what} "{item.name}"', item.line, item.column)
    return _check(item, spec, required)


def _check(item: parser.Command | parser.Test, spec: Spec, required: set[str]) -> Node:
    def fail(message: str) -> SieveError:
        return SieveError(f'"{item.name}": {message}', item.line, item.column)

    if spec.extension is not None and spec.extension not in required:
        raise fail(f'needs require "{spec.extension}"')
    tags: dict[str, Value] = {}
    groups: dict[str, str] = {}
    args: list[Value] = []
    kinds: list[str] = []
    raw = item.args
    i = 0
    while i < len(raw):
        arg = raw[i]
        i += 1
        if isinstance(arg, Tag):
            if args:
                raise fail(f'tag ":{arg.name}" after a positional argument')
            tag = spec.tags.get(arg.name)
            if tag is None:
                raise fail(f'unknown tag ":{arg.name}"')
            if tag.extension is not None and tag.extension not in required:
                raise fail(f'tag ":{arg.name}" needs require "{tag.extension}"')
            group = tag.group or arg.name
            if group in groups:
                other = groups[group]
                raise fail(f'":{arg.name}" given twice' if other == arg.name else f'":{arg.name}" with ":{other}"')
            groups[group] = arg.name
            if tag.arg is None:
                tags[arg.name] = True
                continue
            if i >= len(raw) or isinstance(raw[i], Tag):
                raise fail(f'tag ":{arg.name}" needs a {tag.arg}')
            tags[arg.name] = _value(raw[i], tag.arg, fail, f'":{arg.name}"')
            i += 1
        elif isinstance(arg, Number):
            args.append(arg.value)
            kinds.append(NUMBER)
        else:
            args.append(arg.values if arg.is_list or len(arg.values) != 1 else arg.values[0])
            kinds.append(STRINGS if arg.is_list else STRING)
    shape = next((s for s in spec.positional if _fits(kinds, s)), None)
    if shape is None:
        wanted = " or ".join(", ".join(s) or "no arguments" for s in spec.positional)
        raise fail(f"expects {wanted} (after its tags), got {', '.join(kinds) or 'none'}")
    args = [(a,) if k == STRINGS and isinstance(a, str) else a for a, k in zip(args, shape, strict=True)]
    if spec.required_group is not None and spec.required_group not in groups:
        options = [f":{name}" for name, t in spec.tags.items() if t.group == spec.required_group]
        raise fail(f"needs one of {', '.join(options)}")
    if "last" in tags and "index" not in tags and item.name != "addheader" and item.name != "duplicate":
        raise fail('":last" needs ":index"')
    # The test or tests, and the block.
    count = len(item.tests)
    if spec.tests == "none" and count:
        raise fail("takes no test")
    if spec.tests == "one" and count != 1:
        raise fail("needs one test" if not count else "takes one test, not a list")
    if spec.tests == "list" and not count:
        raise fail("needs a list of tests")
    block = item.block if isinstance(item, parser.Command) else None
    if spec.block and block is None:
        raise fail('needs a block "{ ... }"')
    if not spec.block and block is not None:
        raise fail('takes no block (end it with ";")')
    tests = tuple(_node(t, required) for t in item.tests)
    children = tuple(_node(c, required) for c in block) if block is not None else None
    extra: dict[str, str] = {}
    comparator = tags.get("comparator")
    if isinstance(comparator, str):  # (a name, so a str; the isinstance is for the type checker)
        needed = COMPARATORS.get(comparator.lower(), "")
        if needed == "":
            raise fail(f'comparator "{comparator}" is not supported')
        if needed is not None and needed not in required:
            raise fail(f'comparator "{comparator}" needs require "{needed}"')
        extra["comparator"] = comparator.lower()
    if extra.get("comparator") == "i;ascii-numeric" and ("contains" in tags or "matches" in tags):
        raise fail('"i;ascii-numeric" compares whole values: it cannot be used with :contains or :matches')
    for kind in ("is", "contains", "matches", "count", "value"):
        if kind in tags:
            extra["match"] = kind
            relation = tags[kind]
            if isinstance(relation, str):
                if relation.lower() not in RELATIONS:
                    raise fail(f'":{kind}" needs one of "gt", "ge", "lt", "le", "eq", "ne", not "{relation}"')
                extra["relation"] = relation.lower()
    for part in ("all", "localpart", "domain", "user", "detail"):
        if part in tags:
            extra["part"] = part
    if item.name == "set" and isinstance(args[0], str) and not _VARIABLE_NAME.match(args[0]):
        raise fail(f'"{args[0]}" is not a variable name')
    if item.name in ("date", "currentdate"):
        date_part = args[-2]
        if isinstance(date_part, str) and date_part.lower() not in DATE_PARTS:
            raise fail(f'unknown date part "{date_part}"')
    return Node(item.name, tags, tuple(args), tests, children, item.line, item.column, **extra)


def _fits(kinds: list[str], shape: tuple[str, ...]) -> bool:
    return len(kinds) == len(shape) and all(
        k == s or (k == STRING and s == STRINGS) for k, s in zip(kinds, shape, strict=True)
    )


def _value(arg: parser.Argument, kind: str, fail: Callable[[str], SieveError], what: str) -> Value:
    if kind == NUMBER:
        if not isinstance(arg, Number):
            raise fail(f"{what} needs a number")
        return arg.value
    if not isinstance(arg, Strings):
        raise fail(f"{what} needs a {kind}")
    if kind == STRING:
        if arg.is_list and len(arg.values) != 1:
            raise fail(f"{what} needs one string, not a list")
        return arg.values[0]
    return arg.values
