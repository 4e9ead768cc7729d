"""The ``timbre`` command.

Each sub-command lives in its own module of this package and exposes ``register(subparsers)``,
which adds its parser and sets ``handler`` (a function taking the parsed ``argparse.Namespace``
and returning an exit status). Errors raised on purpose (:class:`timbre.errors.TimbreError`) are
printed as one clear line and give exit status 1; a traceback is shown only with ``--debug``.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Sequence

from timbre.errors import TimbreError

# Modules registering sub-commands, in the order ``timbre --help`` lists them.
COMMAND_MODULES = (
    "timbre.cli.demo",
    "timbre.cli.dataset",
    "timbre.cli.codec",
    "timbre.cli.design",
    "timbre.cli.compose",
    "timbre.cli.evaluate",
    "timbre.cli.render",
    "timbre.cli.export",
    "timbre.cli.serve",
)


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser, with every sub-command registered."""
    parser = argparse.ArgumentParser(
        prog="timbre",
        description="Neural audio synthesis: encode sounds, blend timbres, decode, compose and render MIDI.",
    )
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module_name in COMMAND_MODULES:
        importlib.import_module(module_name).register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``timbre`` console script; returns the process exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return 2
    try:
        return int(args.handler(args) or 0)
    except TimbreError as error:
        if args.debug:
            raise
        print(f"timbre {args.command}: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"timbre {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
