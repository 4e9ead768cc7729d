"""``timbre evaluate``: measure trained models (one sub-command per model family) and build test sets.

Each ``_register_*`` function below adds one sub-command; add one by writing another and listing
it in :data:`SUBCOMMANDS`.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from timbre.cli.common import (
    add_device_argument,
    add_sampling_arguments,
    bounded_positive_int,
    check_inputs_exist,
    check_output_dir,
    non_negative_float,
    positive_float,
    positive_int,
)
from timbre.errors import ConfigError

# Pieces and bars `evaluate composer` generates at most: the statistics settle long before, and a
# typo such as --samples 16000 would otherwise compose for hours.
MAX_SAMPLES = 1024
MAX_BARS = 1024


def _composer(args: argparse.Namespace) -> int:
    # Imported here so that `timbre --help` does not load torch and music21.
    check_output_dir(args.out, [args.model], [])  # before the imports: they take seconds
    from timbre.evaluation.composer import evaluate_composer

    report = evaluate_composer(
        args.model,
        args.out,
        samples=args.samples,
        bars=args.bars,
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        seed=args.seed,
        cache_dir=args.cache_dir,
        progress=True,
        style_guidance=args.style_guidance,
    )
    if "style_judge" in report:  # a many-style composer (timbre.evaluation.style_judge)
        from timbre.evaluation.style_judge import summary_line

        print(summary_line(report) + f"; report in {args.out}/composer_styles.md")
        return 0
    likelihood = report["likelihood"]
    print(
        f"test bits/token: model {likelihood['model_bits_per_token']:.3f}, "
        f"Kneser-Ney {likelihood['ngram_order']}-gram {likelihood['ngram_bits_per_token']:.3f} "
        f"(reduction {100 * likelihood['reduction_vs_ngram']:.1f}%, target 25%: "
        f"{'met' if likelihood['target_met'] else 'NOT met'}); "
        f"pitch-class histogram distance {report['statistics']['key_normalized_pitch_class_histogram_distance']:.3f} "
        "(keys normalized); "
        f"report in {args.out}/composer.md"
    )
    return 0


def _register_composer(actions: argparse._SubParsersAction) -> None:
    parser = actions.add_parser(
        "composer",
        help="held-out bits per token against an n-gram baseline, and statistics of generated pieces",
        description=(
            "Score the test pieces of the composer's own corpus split (rebuilt from the checkpoint) in bits "
            "per token, against an interpolated Kneser-Ney n-gram fitted on its training pieces; generate "
            "pieces and compare pitch-class histogram, pitch range per voice, polyphony and scale consistency "
            "with the held-out pieces. Writes OUT/composer.json, OUT/composer.md and the generated MIDI."
        ),
    )
    parser.add_argument(
        "--model",
        help="composer checkpoint file or run directory, or a bundled composer: styles or chorales "
        "(default: composer-styles)",
    )
    parser.add_argument("--out", required=True, help="directory for the report and the generated pieces (created)")
    parser.add_argument(
        "--samples", type=bounded_positive_int(MAX_SAMPLES), default=16,
        help=f"pieces to generate, at most {MAX_SAMPLES} (default: 16)",
    )  # fmt: skip
    parser.add_argument(
        "--bars", type=bounded_positive_int(MAX_BARS), default=16,
        help=f"bars per generated piece, at most {MAX_BARS} (default: 16)",
    )  # fmt: skip
    add_sampling_arguments(parser)
    parser.add_argument("--seed", type=int, default=0, help="random seed of the generated pieces (default: 0)")
    parser.add_argument(
        "--style-guidance", type=non_negative_float, default=1.0, metavar="SCALE",
        help="classifier-free guidance of the pieces generated for each style (many-style composers; "
        "see timbre compose --style-guidance) (default: %(default)s)",
    )  # fmt: skip
    parser.add_argument("--cache-dir", help="corpus cache root (default: $TIMBRE_CACHE or ~/.cache/timbre)")
    parser.set_defaults(handler=_composer)


def _pitch_range(text: str) -> tuple[int, int]:
    low, _, high = text.partition("-")
    try:
        return int(low), int(high or low)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected LOW-HIGH MIDI pitches such as 36-84, got {text!r}") from None


def _baselines(text: str) -> list[str]:
    from timbre.evaluation.scoring import BASELINES

    names = [name.strip() for name in text.split(",") if name.strip()]
    if names == ["none"]:
        return []
    unknown = [name for name in names if name not in BASELINES]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"expected 'none' or some of {','.join(BASELINES)}, got {text!r}")
    return names


def _steps(text: str) -> int:
    value = positive_int(text)
    if value < 2:
        raise argparse.ArgumentTypeError(f"a sweep needs at least 2 steps (its endpoints), got {value}")
    return value


def _count(text: str) -> int:
    value = int(text) if text.lstrip("-").isdigit() else -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 0, got {text!r}")
    return value


def _autoencoder(args: argparse.Namespace) -> int:
    if not Path(args.data).is_dir():
        state = "is a file" if Path(args.data).exists() else "does not exist"
        raise ConfigError(f"--data {args.data}: {state}; give a folder of notes")
    check_output_dir(args.out, [], [])  # before the imports: they take seconds
    from timbre.evaluation.autoencoder import evaluate_autoencoder, summary_table

    report = evaluate_autoencoder(
        args.model,
        args.data,
        args.out,
        split=args.split,
        notes=args.notes,
        seed=args.seed,
        baselines=args.baselines,
        track_pitch=args.track_pitch,
        sweeps=args.sweeps,
        steps=args.steps,
        seconds=args.seconds,
        pitch_range=args.pitches,
        batch_size=args.batch_size,
        temperature=args.temperature,
        clock_gain=args.clock_gain,
        device=args.device,
        progress=True,
        reference=args.reference,
        refine=args.refine,
        encode_pitch=args.encode_pitch,
    )
    print(summary_table(report))
    print(f"report in {args.out}/report.md")
    return 0


def _register_autoencoder(actions: argparse._SubParsersAction) -> None:
    parser = actions.add_parser(
        "autoencoder",
        help="reconstruction of notes from any folder: timbre identification, spectral and loudness distance, pitch",
        description=(
            "Encode and decode every note of a folder (an NSynth split, a `timbre dataset build` or "
            "`timbre evaluate build-testset` output, or audio files with the MIDI pitch in their names such as "
            "flute_60.wav, or listed in a notes.json) and score the reconstructions by timbre identification "
            "(top-1/top-3: is the nearest original at the same pitch, by MFCC statistics, of the note's own "
            "instrument?), multi-scale spectral distance, loudness-envelope error and pitch within 50 cents "
            "(PESTO), beside two baselines in the same run: every note from one fixed (mean) embedding, and an "
            "untrained model of the same config. Also decodes slerp sweeps between two instruments at one pitch. "
            "Writes OUT/report.json, OUT/report.md, a rainbowgram sheet of every instrument (original vs "
            "reconstructions), sweeps and a pitch-error histogram."
        ),
    )
    parser.add_argument(
        "--model", default="default", help="bundled model name or checkpoint (default: the bundled default)"
    )
    parser.add_argument("--data", required=True, help="folder of notes: NSynth split or root, or audio files")
    parser.add_argument("--out", required=True, help="directory for the report (created)")
    parser.add_argument("--split", help="split of an NSynth dataset root: test, valid or train (default: test)")
    parser.add_argument(
        "--notes",
        type=positive_int,
        help="at most this many notes, in whole pitch groups (default: all, one per instrument and pitch)",
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="picks notes and sweeps, the untrained weights, the noise (default: 0)"
    )
    parser.add_argument(
        "--baselines",
        type=_baselines,
        default=["fixed_embedding", "untrained"],  # a list: argparse converts only string defaults
        help="baselines scored in the same run: fixed_embedding, untrained, both (default) or none",
    )
    parser.add_argument(
        "--reference",
        metavar="DIR",
        help="the same notes from another source, scored beside the model, e.g. the test set rendered "
        "from another soundfont (timbre evaluate build-testset --soundfont FluidR3_GM.sf2 --out DIR)",
    )
    parser.add_argument(
        "--track-pitch",
        choices=("model", "all", "none"),
        default="model",
        help="whose pitch PESTO judges (~0.3 s per note): the originals and the model's (default), "
        "all systems, or none",
    )
    parser.add_argument(
        "--refine", type=_count, default=None, metavar="STEPS",
        help="refine each encoding by STEPS gradient steps through the decoder, as encode --refine does "
        "(parallel decoder; default: the model's own, 0 unless its card says otherwise)",
    )  # fmt: skip
    parser.add_argument(
        "--encode-pitch", choices=("given", "heard"), default="given",
        help="encode each note told its labelled pitch (default), or told nothing, as encode(file) is, so "
        "that a model needing the pitch hears it",
    )  # fmt: skip
    parser.add_argument("--sweeps", type=_count, default=4, help="interpolation sweeps, 0 for none (default: 4)")
    parser.add_argument("--steps", type=_steps, default=7, help="steps per sweep, endpoints included (default: 7)")
    parser.add_argument(
        "--seconds", type=positive_float, help="evaluate only the first SECONDS of each note (for slow decoders)"
    )
    parser.add_argument("--pitches", type=_pitch_range, metavar="LOW-HIGH", help="only notes in this MIDI pitch range")
    parser.add_argument(
        "--batch-size",
        type=positive_int,
        help="notes per decoder pass (default: 1 for the fast decoder, 16 for WaveNet)",
    )
    parser.add_argument(
        "--temperature", type=non_negative_float, default=None,
        help="sampling temperature of a WaveNet decoder; 0 is greedy (default: the model's own)",
    )  # fmt: skip
    parser.add_argument(
        "--clock-gain", type=non_negative_float, default=None,
        help="gain of a WaveNet decoder's pitch clock (default: the model's own)",
    )  # fmt: skip
    add_device_argument(parser)
    parser.set_defaults(handler=_autoencoder)


def _build_testset(args: argparse.Namespace) -> int:
    from timbre.cli.dataset import parse_int_list
    from timbre.evaluation.testset import (
        TESTSET_PITCHES,
        TESTSET_PROGRAMS,
        build_testset,
    )

    check_inputs_exist([args.soundfont])
    check_output_dir(args.out, [args.soundfont], ["examples.json"])

    recipe = build_testset(
        args.soundfont,
        args.out,
        programs=parse_int_list(args.programs, "--programs") if args.programs else TESTSET_PROGRAMS,
        pitches=parse_int_list(args.pitches, "--pitches") if args.pitches else TESTSET_PITCHES,
        progress=not args.quiet,
    )
    print(
        f"{recipe['notes']} notes ({len(recipe['programs'])} programs x {len(recipe['pitches'])} pitches) of "
        f"{recipe['soundfont']} in {args.out}; evaluate with: timbre evaluate autoencoder --data {args.out} --out DIR"
    )
    return 0


def _register_build_testset(actions: argparse._SubParsersAction) -> None:
    parser = actions.add_parser(
        "build-testset",
        help="render the standard test set (24 GM programs x 5 pitches) from a soundfont never used in training",
        description=(
            "Render 24 General MIDI programs (two of each family: piano, chromatic percussion, organ, guitar, "
            "bass, strings, ensemble, brass, reed, pipe, synth lead, synth pad) at pitches 48, 55, 60, 67 and 72, "
            "4 s notes held 3 s, velocity 100, 16 kHz, into OUT/examples.json and OUT/audio/ (NSynth layout). "
            "The default soundfont, TimGM6mb (Debian timgm6mb-soundfont), is reserved for evaluation."
        ),
    )
    parser.add_argument(
        "--soundfont", default="/usr/share/sounds/sf2/TimGM6mb.sf2", help="SF2 file (default: %(default)s)"
    )
    parser.add_argument("--out", required=True, help="folder of the test set (created), e.g. data/eval-timgm6mb")
    parser.add_argument("--programs", help="other General MIDI programs, e.g. 0,24,40 (default: the standard 24)")
    parser.add_argument("--pitches", help="other MIDI pitches, e.g. 48,60,72 (default: 48,55,60,67,72)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(handler=_build_testset)


SUBCOMMANDS: tuple[Callable[[argparse._SubParsersAction], None], ...] = (
    _register_composer,
    _register_autoencoder,
    _register_build_testset,
)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``timbre evaluate`` and its sub-commands."""
    parser = subparsers.add_parser("evaluate", help="evaluate trained models", description="Evaluate trained models.")
    actions = parser.add_subparsers(dest="evaluation", metavar="COMMAND", required=True)
    for register_subcommand in SUBCOMMANDS:
        register_subcommand(actions)
    for name, subparser in actions.choices.items():
        # Errors and warnings then name the sub-command, as its usage errors do.
        subparser.set_defaults(command=f"evaluate {name}")
