"""``timbre compose``: write a new MIDI piece with the composer, from scratch or after a primer."""

from __future__ import annotations

import argparse
import time

from timbre.cli.common import bounded_positive_int, check_inputs_exist, check_output_file, positive_int

# Names --model accepts for the bundled composer, like the autoencoder commands accept "default".
BUNDLED_COMPOSER_NAMES = ("default", "chorales", "composer-chorales")
# Upper bounds of --bars and --tokens (the library's own limits): longer pieces take many minutes.
MAX_BARS = 1024
MAX_TOKENS = 200_000


def _compose(args: argparse.Namespace) -> int:
    if args.prime:
        check_inputs_exist([args.prime])
    out = check_output_file(args.out, [args.prime], (".mid", ".midi"))
    # Imported here so that `timbre --help` does not load torch and miditok.
    from timbre.symbolic.compose import compose, load_composer, save_midi

    composer = load_composer(None if args.model in BUNDLED_COMPOSER_NAMES else args.model)
    started = time.perf_counter()
    score = compose(
        composer,
        prime=args.prime,
        bars=args.bars,
        tokens=args.tokens,
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        seed=args.seed,
        progress=True,
    )
    compute_seconds = time.perf_counter() - started
    path = save_midi(score, out)
    tracks = [track for track in score.tracks if len(track.notes)]
    programs = ",".join(str(track.program) for track in tracks)
    music_seconds = score.to("second").end() if score.note_num() else 0.0
    print(
        f"wrote {path}: {score.note_num()} notes in {len(tracks)} tracks (programs {programs}), "
        f"{music_seconds:.1f} s of music; composed in {compute_seconds:.1f} s"
    )
    return 0


def non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"{text} is not a number >= 0")
    return value


def probability(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"{text} is not in (0, 1]")
    return value


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``timbre compose``."""
    parser = subparsers.add_parser(
        "compose",
        help="compose a MIDI piece (Bach-chorale model by default)",
        description=(
            "Sample a new piece with a trained composer, from scratch or continuing the notes of a primer "
            "MIDI file. The same --seed and options give the same MIDI file. The output always decodes to "
            "notes with programs (one track per program)."
        ),
    )
    parser.add_argument("--out", required=True, help="MIDI file to write, e.g. song.mid")
    parser.add_argument(
        "--model", default="default",
        help="composer checkpoint file or run directory, "
        "or default for the bundled chorale model (default: %(default)s)",
    )  # fmt: skip
    parser.add_argument("--prime", help="MIDI file whose notes open the piece; its tracks take the model's voices")
    length = parser.add_mutually_exclusive_group()
    length.add_argument(
        "--bars", type=bounded_positive_int(MAX_BARS), default=16,
        help=f"bars to add after the primer, at most {MAX_BARS} (default: 16)",
    )  # fmt: skip
    length.add_argument(
        "--tokens", type=bounded_positive_int(MAX_TOKENS),
        help=f"new tokens to sample instead of --bars, at most {MAX_TOKENS} (the last note is completed)",
    )  # fmt: skip
    parser.add_argument(
        "--temperature", type=non_negative_float, default=1.0, help="sampling temperature; 0 is greedy (default: 1.0)"
    )
    parser.add_argument("--top-k", type=positive_int, help="sample among the K most likely tokens only")
    parser.add_argument(
        "--top-p", type=probability, help="sample among the most likely tokens holding probability P only"
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    parser.set_defaults(handler=_compose)
