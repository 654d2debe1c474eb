"""The command tree of relatectl: loaded one noun at a time, with help that shows what to type.

Two things typer does not do the way an admin needs, done here for every command:

- **Start fast.** A command module imports what its commands use (asyncpg,
  DNS, DKIM, aiohttp for MTA-STS): about half a second for all of them, which
  every TAB completion used to pay. ``Group`` knows the nouns by name and short
  help (``COMMANDS``) and imports a module only when its command is run,
  completed or shown; the list of commands in ``relatectl --help`` and the
  completion of a noun import nothing. A module imports its heavy
  dependencies with ``lazy_module`` so that completing ``user show <TAB>``
  does not import the user commands' database code either.
- **Help shows what the user types.** typer 0.29 renders every parameter's
  Python type (``<str>``, ``<bool>``, ``<list[str]>``) and a required
  argument as ``{address}``. ``Command`` gives each parameter a metavar (its
  name in capitals unless one was given: ``ADDRESS``, ``--storage SIZE``),
  shows none for flags, and writes the usage line as click did
  (``ADDRESS``, ``[USER]``, ``ID...``). typer builds its parameter objects
  itself (there is no hook for their class), so ``get_params`` gives each
  one, as the command hands it out, a subclass that overrides only
  ``display_type_rich``; the command overrides ``collect_usage_pieces``.
  typer is pinned to 0.29.x for this, and tests/cli/test_help.py walks every
  command's --help and fails if a typer release renders otherwise.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType, UnionType
from typing import Any, Union, get_args, get_origin

import typer
from typer.core import TyperArgument, TyperCommand, TyperGroup, TyperOption


@dataclass
class State:
    """What the top-level options set for the command that runs."""

    config_path: Path | None = None


state = State()

JsonOption: Any = typer.Option(False, "--json", help="Print JSON instead of a table.")

# noun -> (module, attribute: a Typer of subcommands or a command function, short help). The order is
# the order of `relatectl --help`.
COMMANDS: dict[str, tuple[str, str, str]] = {
    "db": ("relatectl.db", "app", "Database schema: apply migrations, show the version."),
    "domain": ("relatectl.domain", "app", "Hosted domains."),
    "user": ("relatectl.user", "app", "Users (mailbox owners)."),
    "alias": ("relatectl.alias", "app", "Aliases: more addresses for a user."),
    "sieve": ("relatectl.sieve", "app", "Sieve filters: each user's scripts, one of them run at every delivery."),
    "key": ("relatectl.key", "app", "API keys: the passwords of IMAP, POP3, SMTP and the REST API."),
    "queue": ("relatectl.queue", "app", "The outbound queue: list, show, retry, hold, release, fail, delete, flush."),
    "dkim": ("relatectl.dkim", "app", "DKIM keys that sign outbound mail: make, list, activate, retire."),
    "tls": ("relatectl.tls", "app", "TLS certificates: what each listener uses, and reloading them."),
    "import": (
        "relatectl.imports",
        "app",
        "Move mail in from an old server: a Maildir tree, mbox files, or a live IMAP account.",
    ),
    "setup": (
        "relatectl.setup",
        "setup",
        "Set Relate Mail up: config file, internal key, VAPID keys, certificate, schema.",
    ),
    "dev": ("relatectl.dev", "dev", "Run Relate Mail for development: embedded PostgreSQL, demo domain, user and key."),
    "status": (
        "relatectl.status",
        "status",
        "Show the database, every daemon on every host (stale and degraded ones marked), and the outbound queue.",
    ),
    "backup": (
        "relatectl.backup",
        "backup",
        "Back up the database, the config file and the keys it names into one tar archive (0600).",
    ),
    "restore": (
        "relatectl.backup",
        "restore",
        "Restore a backup into the empty database of database.dsn, then migrate it to this release.",
    ),
}


def lazy_module(name: str) -> ModuleType:
    """``name``, imported when one of its attributes is first used (importlib's LazyLoader).

    Use under ``if TYPE_CHECKING: import x / else: x = lazy_module("x")`` so the type checker sees the module.
    """
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.find_spec(name)
    if spec is None or spec.loader is None:
        raise ImportError(f"no module named {name!r}")
    loader = importlib.util.LazyLoader(spec.loader)
    spec.loader = loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    loader.exec_module(module)
    return module


def _plain_value(annotation: Any, value: Any) -> tuple[bool, Any]:
    """(True, the value) when a parameter of this type needs no conversion beyond the obvious; else (False, _).

    typer 0.29 converts every value through a pydantic TypeAdapter, and
    importing pydantic for it is a third of a completion's time. Text, paths,
    flags and lists of text are converted here; anything else (numbers with
    their ranges, choices) is left to typer.
    """
    if value is None:
        return True, None  # not given and no default: nothing to convert
    if get_origin(annotation) in (Union, UnionType) and type(None) in get_args(annotation):
        rest = [a for a in get_args(annotation) if a is not type(None)]
        if len(rest) != 1:
            return False, value
        annotation = rest[0]
    if annotation is str and isinstance(value, str):
        return True, value
    if annotation is bool and isinstance(value, bool):
        return True, value
    if annotation is Path and isinstance(value, str):
        return True, Path(value)
    texts = get_origin(annotation) is list and get_args(annotation) == (str,)
    if texts and isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        return True, list(value)
    return False, value


def _process(param: Any, ctx: Any, value: Any, typer_way: Callable[[Any, Any], Any]) -> Any:
    """A parameter's value as relatectl takes it: plain types here, the rest as typer does (``typer_way``)."""
    handled, plain = _plain_value(param.type_descriptor.annotation, value)
    if not handled or (param.required and param.value_is_missing(plain)):
        if plain is None and ctx.resilient_parsing:
            return None  # completing: a missing value is not an error, and not worth importing pydantic
        return typer_way(ctx, value)
    if param.callback is not None:
        plain = param.callback(ctx, param, plain)
    return plain


class _Argument(TyperArgument):
    def display_type_rich(self, ctx: Any) -> str | None:
        return None  # the metavar in the name column (ADDRESS) says it

    def process_value(self, ctx: Any, value: Any) -> Any:
        return _process(self, ctx, value, super().process_value)


class _Option(TyperOption):
    def display_type_rich(self, ctx: Any) -> str | None:
        if self.is_flag or self.count:
            return None
        return self.metavar or (self.name or "value").upper()

    def process_value(self, ctx: Any, value: Any) -> Any:
        return _process(self, ctx, value, super().process_value)


def _plain_all(params: list[Any]) -> list[Any]:
    for param in params:
        _plain(param)
    return params


def _plain(param: Any) -> None:
    """Give a parameter a metavar that says what to type, and the renderers above."""
    if isinstance(param, TyperArgument):
        param.__class__ = _Argument
        if param.metavar is None:
            param.metavar = (param.name or "value").upper() + ("..." if param.nargs != 1 else "")
    elif isinstance(param, TyperOption):
        param.__class__ = _Option
        if param.metavar is None and not param.is_flag:
            param.metavar = (param.name or "value").upper()


class Command(TyperCommand):
    """A command whose help shows metavars, not Python types."""

    def get_params(self, ctx: Any) -> list[Any]:
        return _plain_all(super().get_params(ctx))

    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        pieces = [self.options_metavar] if self.options_metavar else []
        for param in self.get_params(ctx):
            if isinstance(param, TyperArgument):
                name = param.metavar or (param.name or "value").upper()
                pieces.append(name if param.required or name.startswith("[") else f"[{name}]")
        return pieces


class SubGroup(TyperGroup):
    """A noun's group (``relatectl user``): its options without types."""

    def get_params(self, ctx: Any) -> list[Any]:
        return _plain_all(super().get_params(ctx))


class App(typer.Typer):
    """A noun's Typer: its commands are ``Command``s."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("cls", SubGroup)
        kwargs.setdefault("no_args_is_help", True)
        kwargs.setdefault("add_completion", False)  # the top level has --install-completion
        super().__init__(**kwargs)

    def command(self, *args: Any, **kwargs: Any) -> Callable[[Any], Any]:
        kwargs.setdefault("cls", Command)
        return super().command(*args, **kwargs)


class Group(SubGroup):
    """The top level: nouns from ``COMMANDS``, each module imported when its command is needed."""

    _listing = False  # while --help lists the nouns: answer with stubs, import nothing

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._loaded: dict[str, Any] = {}

    def list_commands(self, ctx: Any) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        if cmd_name not in COMMANDS:
            return None
        if self._listing and cmd_name not in self._loaded:
            return TyperCommand(name=cmd_name, help=COMMANDS[cmd_name][2])
        return self.load(cmd_name)

    def load(self, name: str) -> Any:
        """The click command of one noun, its module imported now."""
        if name not in self._loaded:
            module, attr, _ = COMMANDS[name]
            target = getattr(importlib.import_module(module), attr)
            if not isinstance(target, typer.Typer):
                single = App()
                single.command(name)(target)
                target = single
            command = typer.main.get_command(target)
            command.name = name
            self._loaded[name] = command
        return self._loaded[name]

    def format_help(self, ctx: Any, formatter: Any) -> None:
        self._listing = True
        try:
            super().format_help(ctx, formatter)
        finally:
            self._listing = False

    def shell_complete(self, ctx: Any, incomplete: str) -> list[Any]:
        self._listing = True  # the nouns and their help, without importing them
        try:
            return list(super().shell_complete(ctx, incomplete))
        finally:
            self._listing = False
