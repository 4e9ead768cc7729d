"""The ``timbre`` command.

Each sub-command lives in its own module of this package and exposes ``register(subparsers)``,
which adds its parser and sets ``handler`` (a function taking the parsed ``argparse.Namespace``
and returning an exit status). Errors raised on purpose (:class:`timbre.errors.TimbreError`) are
printed as one clear line and give exit status 1; a traceback is shown only with ``--debug``.
Usage mistakes are one line too (exit status 2), and so are warnings.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

from timbre.cli.common import OneLineParser, show_warnings_as_lines
from timbre.errors import TimbreError
from timbre.runtime import configure_openmp

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
    parser = OneLineParser(
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
    configure_openmp()  # before any command imports torch
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        if not getattr(args, "handler", None):
            parser.print_help()
            return 2
        if not args.debug:
            show_warnings_as_lines(args.command)
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
    except BrokenPipeError:
        return exit_on_broken_pipe()


def exit_on_broken_pipe() -> int:
    """The reader of our output went away (``timbre --help | head``): exit quietly, as ``cat`` does."""
    # Python flushes stdout again at exit; point it at /dev/null so that flush cannot fail.
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    return 141  # 128 + SIGPIPE, what a shell reports for a process killed by the broken pipe


if __name__ == "__main__":
    sys.exit(main())
