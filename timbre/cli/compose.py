"""``timbre compose``: write a new MIDI piece with the composer, from scratch or after a primer."""

from __future__ import annotations

import argparse
import contextlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from timbre.cli.common import (
    add_sampling_arguments,
    bounded_positive_int,
    check_inputs_exist,
    check_output_file,
    non_negative_float,
)
from timbre.constants import COMPOSER_SAMPLING_WEIGHTS

# Upper bounds of --bars and --tokens (the library's own limits): longer pieces take many minutes.
MAX_BARS = 1024
MAX_TOKENS = 200_000


def _compose(args: argparse.Namespace) -> int:
    from timbre.errors import ConfigError

    if args.list_styles:
        return _list_styles(args)
    if args.out is None:
        raise ConfigError("--out is required (the MIDI file to write), unless --list-styles is given")
    if args.prime:
        check_inputs_exist([args.prime])
    if (args.keep or args.variations > 1) and not args.regenerate:
        raise ConfigError("--keep and --variations go with --regenerate")
    if args.regenerate and not args.prime:
        raise ConfigError("--regenerate needs --prime, the MIDI file whose bars it rewrites")
    out = check_output_file(args.out, [args.prime], (".mid", ".midi"))
    render_out = check_output_file(args.render, [args.prime, out], (".wav",), "--render") if args.render else None
    # Imported here so that `timbre --help` does not load torch and miditok.
    from timbre.symbolic.compose import compose, load_composer, save_midi

    composer = load_composer(args.model, args.weights)
    started = time.perf_counter()
    with _in_option_terms():
        if args.regenerate:
            return _regenerate(args, composer, out, render_out)
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
            style=args.style,
            voices=args.voices,
            style_guidance=args.style_guidance,
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
    if render_out is not None:
        _render(path, render_out, args.timbre_model)
    return 0


@contextlib.contextmanager
def _in_option_terms() -> Iterator[None]:
    """Restate the library's value errors about styles, voices and bars in terms of the flags."""
    from timbre.errors import ConfigError

    try:
        yield
    except ConfigError as error:
        message = str(error)
        flags = (("style guidance", "--style-guidance"), ("style ", "--style "), ("voices ", "--voices "))
        for word, flag in (*flags, ("regenerate", "--regenerate")):
            if message.startswith(word):
                message = flag + message[len(word) :]
        raise ConfigError(message) from None


def _list_styles(args: argparse.Namespace) -> int:
    from timbre.data.styles import STYLES
    from timbre.symbolic.compose import load_composer

    composer = load_composer(args.model)
    if composer.conditions is None:
        print(f"{composer.path}: a single-style composer (no --style); it writes what it was trained on")
        return 0
    described = {style.name: style.description for style in STYLES}
    print("any: unconditional, any style of the corpus")
    for name in composer.conditions.styles:
        programs = ",".join(str(p) for p in composer.style_programs.get(name, []))
        print(f"{name}: {described.get(name, '')} (voice programs {programs})")
    return 0


def _regenerate(args: argparse.Namespace, composer: Any, out: Path, render_out: Path | None) -> int:
    from timbre.symbolic.compose import save_midi
    from timbre.symbolic.infill import parse_bars, regenerate_bars

    regenerate = parse_bars(args.regenerate, "--regenerate")
    keep = parse_bars(args.keep, "--keep") if args.keep else None
    started = time.perf_counter()
    scores = regenerate_bars(
        composer, args.prime, regenerate, keep, variations=args.variations, style=args.style, voices=args.voices,
        temperature=args.temperature, top_k=args.top_k, top_p=args.top_p, seed=args.seed,
        style_guidance=args.style_guidance,
    )  # fmt: skip
    seconds = time.perf_counter() - started
    paths = (
        [out] if len(scores) == 1 else [out.with_name(f"{out.stem}_{i + 1}{out.suffix}") for i in range(len(scores))]
    )
    for score, path in zip(scores, paths):
        save_midi(score, path)
    print(
        f"wrote {', '.join(str(p) for p in paths)}: bars {args.regenerate} of {args.prime} regenerated "
        f"({len(scores)} variation{'s' if len(scores) > 1 else ''}), the other kept bars unchanged; {seconds:.1f} s"
    )
    if render_out is not None:
        _render(paths[0], render_out, args.timbre_model)
    return 0


def _render(midi: Path, out: Path, model_name: str) -> None:
    """Render the written MIDI through learned timbres: each voice plays the bundled timbre of its
    program, and the style chose the programs (strings for quartets, choir and organ for sacred
    polyphony, fiddle and flute for folk)."""
    import timbre
    from timbre.render import render_midi

    result = render_midi(midi, timbre.load(model_name), progress=True)
    timbre.save_wav(out, result.audio, result.sample_rate)
    print(f"rendered {out}: {result.seconds:.1f} s of music in {result.wall_seconds:.1f} s")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``timbre compose``."""
    parser = subparsers.add_parser(
        "compose",
        help="compose a MIDI piece in a style, or rewrite chosen bars of one",
        description=(
            "Sample a new piece with a trained composer, from scratch or continuing the notes of a primer "
            "MIDI file. The same --seed and options give the same MIDI file. The output always decodes to "
            "notes with programs (one track per program)."
        ),
    )
    parser.add_argument("--out", help="MIDI file to write, e.g. song.mid (with --variations K: song_1.mid ...)")
    parser.add_argument(
        "--model", default="default",
        help="composer checkpoint file or run directory, or a bundled composer: default (composer-styles, "
        "nine styles) or chorales (composer-chorales) (default: %(default)s)",
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
    add_sampling_arguments(parser)
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    parser.add_argument(
        "--weights", choices=COMPOSER_SAMPLING_WEIGHTS, default="float32",
        help="weights the composer samples with: float32 (the native step where timbre was built with it) or "
        "int8 (a quarter of the bytes per token, faster where the native step is missing; x86-64) "
        "(default: %(default)s)",
    )  # fmt: skip
    styles = parser.add_argument_group("styles (a many-style composer such as composer-styles)")
    styles.add_argument("--style", help="style to write in, e.g. bach, palestrina, folk, irish, quartet (default: any)")
    styles.add_argument("--voices", type=bounded_positive_int(16), help="number of voices to write (default: any)")
    styles.add_argument(
        "--style-guidance", type=non_negative_float, default=1.0, metavar="SCALE",
        help="classifier-free guidance towards --style: 1 samples the model as it is; other values also step "
        "the any-style sequence (about 1.5x the time), above 1 keeping closer to the style (default: %(default)s)",
    )  # fmt: skip
    styles.add_argument("--list-styles", action="store_true", help="list the styles of --model and exit")
    refine = parser.add_argument_group("regenerating bars of --prime (a many-style composer)")
    refine.add_argument("--regenerate", help="bars of --prime to rewrite, e.g. 5-8 or 5-8,13")
    refine.add_argument(
        "--keep", help="bars kept as they are, e.g. 1-4,9-12 (default: every bar not regenerated; others are emptied)"
    )
    refine.add_argument(
        "--variations", type=bounded_positive_int(64), default=1,
        help="write K alternatives of the regenerated bars, OUT_1.mid ... OUT_K.mid (default: 1)",
    )  # fmt: skip
    parser.add_argument("--render", help="also render the result through learned timbres into this WAV file")
    parser.add_argument(
        "--timbre-model", default="default", help="autoencoder that renders --render (default: %(default)s)"
    )
    parser.set_defaults(handler=_compose)
