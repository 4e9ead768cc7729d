"""``timbre demo``: the main job on the bundled models (what ``make demo`` runs)."""

from __future__ import annotations

import argparse

from timbre.cli.common import bounded_positive_int, check_output_dir


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="run the main job on the bundled models: sweep, grid, morph, compose and render",
        description=run.__doc__,
    )
    parser.add_argument("--out", default="out", help="output directory (default: %(default)s)")
    parser.add_argument("--model", default="default", help="autoencoder (default: the bundled default)")
    parser.add_argument("--composer", default=None, help="composer checkpoint (default: the bundled composer)")
    parser.add_argument(
        "--bars",
        type=bounded_positive_int(256),
        default=8,
        help="bars of each composed piece, at most 256 (default: 8)",
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Encode the bundled instrument notes, decode them, sweep and grid between them, morph one into
    another, compose a chorale (and, with a many-style composer, a Palestrina movement and an Irish tune)
    and render them through learned timbres; WAVs, MIDI files and PNGs go to --out."""
    from timbre.demo import run_demo

    check_output_dir(args.out, [], [])
    run_demo(args.out, args.model, args.composer, args.bars, args.seed)
    return 0
