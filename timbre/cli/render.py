"""``timbre render``: play a MIDI file through learned timbres (and, for A/B, through FluidSynth)."""

from __future__ import annotations

import argparse
import contextlib
import logging
import math
import os
import re
import sys
from collections.abc import Iterator
from pathlib import Path

from timbre.cli.common import (
    add_device_argument,
    check_inputs_exist,
    check_output_file,
    non_negative_float,
    positive_int,
)
from timbre.constants import DEFAULT_SOUNDFONT
from timbre.errors import ConfigError

# Bundled model for each decoder when --model is not given.
DEFAULT_MODELS = {"fast": "default", "wavenet": "wavenet"}
# The option of each render_midi argument that the library names in its errors.
OPTION_OF_ARGUMENT = {"timbres": "--timbre", "morphs": "--morph", "gains": "--gain"}


def _render(args: argparse.Namespace) -> int:
    check_inputs_exist([args.midi])
    _check_window(args)
    # Imported after the cheap checks, so that a mistake is reported before torch loads.
    import timbre
    from timbre.render import DEFAULT_TIMBRE_SET, onset_f_measure, render_fluidsynth, render_midi

    if args.list:
        return _list_tracks(args)
    if args.out is None:
        raise ConfigError("--out is required (the WAV file to write), unless --list is given")
    timbres = _assignments("--timbre", args.timbre)
    morphs = {key: value.split(",") for key, value in _assignments("--morph", args.morph).items()}
    gains = {key: _decibels("--gain", key, value) for key, value in _assignments("--gain", args.gain).items()}
    # Every input is checked before any work, and outputs are written only once all work is
    # done, so a mistake never costs a render nor replaces an existing file.
    inputs = [args.midi, *_files_named(args.timbre + args.morph)]
    if args.reference == "fluidsynth":
        check_inputs_exist([args.soundfont])
        inputs.append(args.soundfont)
    out = check_output_file(args.out, inputs, (".wav",))
    reference_out = out.with_suffix(".fluidsynth.wav")
    if args.reference == "fluidsynth":
        check_output_file(reference_out, inputs, (".wav",))
        from timbre.io.fluidsynth import new_synth

        with _c_library_stderr_silenced():  # libinstpatch logs its own line about a broken file
            synth, _ = new_synth(args.soundfont, timbre.SAMPLE_RATE)  # refuses a bad soundfont now
        synth.delete()
    model_name = args.model or DEFAULT_MODELS[args.decoder or "fast"]
    model = timbre.load(model_name, device=args.device)
    if args.decoder and model.decoder_kind != args.decoder:
        raise ConfigError(
            f"--model {model_name} has a {model.decoder_kind} decoder, but --decoder {args.decoder} was asked for"
        )

    with _messages(args.verbose), _in_option_terms():
        result = render_midi(
            args.midi, model, timbres, morphs, gains, timbre_set_dir=args.timbre_set or DEFAULT_TIMBRE_SET,
            start=args.start, end=args.end, release=args.release, interpolation=args.interpolation,
            batch_size=args.batch_size, temperature=args.temperature, seed=args.seed, peak_db=args.peak_db,
            progress=not args.no_progress,
        )  # fmt: skip
    plan = result.plan
    rendered = sum(1 for track in plan.tracks if not track.skipped)
    summary = (
        f"{result.seconds:.1f} s of music, {plan.notes} notes in {rendered} tracks "
        f"({plan.unique_notes} synthesized, {plan.cache_hits} from the cache), {model.decoder_kind} decoder; "
        f"rendered in {result.wall_seconds:.1f} s ({result.realtime_factor:.1f}x real time)"
    )
    reference = None
    if args.reference == "fluidsynth":
        reference = render_fluidsynth(
            args.midi, args.soundfont, start=args.start, end=args.end, samples=result.audio.shape[0],
            sample_rate=result.sample_rate, peak_db=args.peak_db,
        )  # fmt: skip
    timbre.save_wav(out, result.audio, result.sample_rate)
    print(f"wrote {out}: {summary}")
    if reference is not None:
        timbre.save_wav(reference_out, reference, result.sample_rate)
        print(f"wrote {reference_out}: the same notes through FluidSynth ({Path(args.soundfont).name})")
        for label, audio in (("timbre", result.audio), ("fluidsynth", reference)):
            score = onset_f_measure(audio, args.midi, sample_rate=result.sample_rate, start=args.start, end=args.end)
            print(
                f"onset F-measure ({label}): {score.f_measure:.3f} (precision {score.precision:.3f}, "
                f"recall {score.recall:.3f}; {score.reference} score onsets, {score.estimated} detected)"
            )
    return 0


def _check_window(args: argparse.Namespace) -> None:
    """``--end`` after ``--start``, in the flags' terms (the library names its own arguments)."""
    if args.end is not None and args.end <= args.start:
        raise ConfigError(f"--end {args.end:g} must be after --start {args.start:g} (seconds)")


def _files_named(assignments: list[str]) -> list[str]:
    """Existing files among the sources of ``TRACK=SOURCE`` options (an output must spare them)."""
    words = [word for text in assignments for word in re.split(r"[=,:]", text)]
    return [word for word in words if Path(word).is_file()]


def _assignments(option: str, texts: list[str]) -> dict[str, str]:
    """``{TRACK: VALUE}`` of the repeated ``option TRACK=VALUE``; errors name the option."""
    from timbre.render import parse_assignment

    try:
        return dict(parse_assignment(text) for text in texts)
    except ConfigError as error:
        raise ConfigError(f"{option} {error}") from None


def _decibels(option: str, key: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not math.isfinite(value):
        raise ConfigError(f"{option} {key}: the gain must be a number of dB, got {text!r}")
    return value


@contextlib.contextmanager
def _c_library_stderr_silenced() -> Iterator[None]:
    """Send what C libraries write to file descriptor 2 to /dev/null for the block (our errors say it better)."""
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


@contextlib.contextmanager
def _in_option_terms() -> Iterator[None]:
    """Restate render_midi's ``timbres key 'Piano': ...`` errors as ``--timbre Piano: ...``."""
    try:
        yield
    except ConfigError as error:
        match = re.match(r"(\w+) key '(.*?)': (.*)", str(error), flags=re.DOTALL)
        if match is None or match.group(1) not in OPTION_OF_ARGUMENT:
            raise
        argument, key, problem = match.groups()
        raise ConfigError(f"{OPTION_OF_ARGUMENT[argument]} {key}: {problem}") from None


def _list_tracks(args: argparse.Namespace) -> int:
    from timbre.data.families import gm_program
    from timbre.render import read_tracks

    for track in read_tracks(args.midi, args.start, args.end):
        kind = "drums" if track.is_drum else gm_program(track.program).name
        name = f" {track.name!r}" if track.name else ""
        print(f"{track.index:3d}{name}: program {track.program} ({kind}), {len(track.notes)} notes")
    return 0


@contextlib.contextmanager
def _messages(verbose: bool) -> Iterator[None]:
    """Print the renderer's warnings (and with ``verbose`` its track and cache report) to stderr."""
    logger = logging.getLogger("timbre.render")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("timbre render: %(message)s"))
    previous = logger.level, logger.propagate
    logger.addHandler(handler)
    logger.setLevel(logging.INFO if verbose else logging.WARNING)
    logger.propagate = False
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(previous[0])
        logger.propagate = previous[1]


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``timbre render``."""
    parser = subparsers.add_parser(
        "render",
        help="render a MIDI file through learned timbres",
        description=(
            "Play every note of a MIDI file through a learned timbre: each pitched track gets the timbre "
            "assigned with --timbre (or --morph), else the bundled timbre of its General MIDI program "
            "(same program, else same NSynth family, else nearest program). Drum tracks are skipped. "
            "Identical notes are synthesized once; the mix is normalised to --peak-db without clipping."
        ),
        epilog=(
            "TRACK is a track index (see --list), a track name, program:N or all. SOURCE is an audio file "
            "(encoded on the fly), an .npy embedding, gm:N (bundled timbre of program N) or "
            "blend:A,B[,...][:WEIGHT_A,WEIGHT_B,...]. Example: timbre render song.mid --out song.wav "
            "--timbre 0=flute.wav --timbre 1=blend:a.wav,b.wav:0.3,0.7 --morph Bass=gm:32,gm:38"
        ),
    )
    parser.add_argument("midi", help="MIDI file to render")
    parser.add_argument("--out", help="WAV file to write (16 kHz mono)")
    parser.add_argument(
        "--timbre", action="append", default=[], metavar="TRACK=SOURCE", help="timbre of a track (repeatable)"
    )
    parser.add_argument(
        "--morph", action="append", default=[], metavar="TRACK=A,B",
        help="move a track from timbre A to B (to C ...) across the piece (repeatable; overrides --timbre)",
    )  # fmt: skip
    parser.add_argument(
        "--gain", action="append", default=[], metavar="TRACK=DB", help="gain of a track in dB (repeatable)"
    )
    parser.add_argument(
        "--decoder", choices=sorted(DEFAULT_MODELS), help="fast (parallel, default) or wavenet (autoregressive)"
    )
    parser.add_argument(
        "--model", help="autoencoder checkpoint or bundled name (default: the bundled model of --decoder)"
    )
    parser.add_argument(
        "--timbre-set", metavar="DIR", help="timbre set for gm:N and unassigned tracks (default: the bundled set)"
    )
    parser.add_argument(
        "--start", type=non_negative_float, default=0.0, help="render from this time in seconds (default: 0)"
    )
    parser.add_argument(
        "--end", type=non_negative_float, help="render notes starting before this time in seconds (default: the end)"
    )
    parser.add_argument(
        "--release",
        type=non_negative_float,
        help="cap each note's release at this many seconds (default: the timbre's full release)",
    )
    parser.add_argument(
        "--interpolation", choices=("slerp", "lerp"), default="slerp", help="how blends and morphs mix (default: slerp)"
    )
    parser.add_argument("--batch-size", type=positive_int, default=32, help="notes per decoder call (default: 32)")
    parser.add_argument(
        "--temperature", type=non_negative_float, default=None,
        help="sampling temperature of the wavenet decoder, 0 = greedy (default: the model's own)",
    )  # fmt: skip
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    parser.add_argument("--peak-db", type=float, default=-1.0, help="peak level of the output in dBFS (default: -1)")
    parser.add_argument(
        "--reference", choices=("fluidsynth",), help="also write OUT.fluidsynth.wav and print onset F-measures"
    )
    parser.add_argument(
        "--soundfont", default=str(DEFAULT_SOUNDFONT), help="SF2 soundfont of the reference (default: %(default)s)"
    )
    add_device_argument(parser)
    parser.add_argument("--list", action="store_true", help="list the tracks of the MIDI file and exit")
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="report each track's timbre and the cache statistics"
    )
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.set_defaults(handler=_render)
