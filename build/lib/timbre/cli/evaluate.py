"""``timbre evaluate``: measure trained models; one sub-command per model family.

Each ``_register_*`` function below adds one sub-command; add a family by writing another and
listing it in :data:`SUBCOMMANDS`.
"""

from __future__ import annotations

import argparse
from typing import Callable


def _composer(args: argparse.Namespace) -> int:
    # Imported here so that `timbre --help` does not load torch and music21.
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
    )
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
    parser.add_argument("--model", help="composer checkpoint file or run directory (default: the bundled chorale model)")
    parser.add_argument("--out", required=True, help="directory for the report and the generated pieces (created)")
    parser.add_argument("--samples", type=int, default=16, help="pieces to generate (default: 16)")
    parser.add_argument("--bars", type=int, default=16, help="bars per generated piece (default: 16)")
    parser.add_argument("--temperature", type=float, default=1.0, help="sampling temperature (default: 1.0)")
    parser.add_argument("--top-k", type=int, help="sample among the K most likely tokens only")
    parser.add_argument("--top-p", type=float, help="sample among the most likely tokens holding probability P only")
    parser.add_argument("--seed", type=int, default=0, help="random seed of the generated pieces (default: 0)")
    parser.add_argument("--cache-dir", help="corpus cache root (default: $TIMBRE_CACHE or ~/.cache/timbre)")
    parser.set_defaults(handler=_composer)


def _pitch_range(text: str) -> tuple[int, int]:
    low, _, high = text.partition("-")
    try:
        return int(low), int(high or low)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected LOW-HIGH MIDI pitches such as 36-84, got {text!r}") from None


def _autoencoder(args: argparse.Namespace) -> int:
    from timbre.evaluation.autoencoder import evaluate_autoencoder, summary_table

    report = evaluate_autoencoder(
        args.model,
        args.data,
        args.out,
        split=args.split,
        notes=args.notes,
        seed=args.seed,
        baseline=args.baseline,
        sweeps=args.sweeps,
        steps=args.steps,
        seconds=args.seconds,
        pitch_range=args.pitches,
        batch_size=args.batch_size,
        temperature=args.temperature,
        examples=args.examples,
        device=args.device,
        progress=True,
    )
    print(summary_table(report))
    print(f"report in {args.out}/report.md")
    return 0


def _register_autoencoder(actions: argparse._SubParsersAction) -> None:
    parser = actions.add_parser(
        "autoencoder",
        help="reconstruction and interpolation of held-out instruments: spectral distance, pitch accuracy, smoothness",
        description=(
            "Reconstruct notes of a held-out split (spread over its instruments and pitches) and score them by "
            "multi-scale spectral distance and by pitch accuracy within 50 cents (PESTO pitch tracker), beside the "
            "input notes' own pitch score (the ceiling) and an untrained model of the same config; decode slerp "
            "sweeps between two instruments at one pitch and score pitch-keeping and the smoothness of the "
            "spectral centroid. Writes OUT/report.json, OUT/report.md, rainbowgram sheets and a pitch-error histogram."
        ),
    )
    parser.add_argument("--model", default="default", help="bundled model name or checkpoint (default: the bundled default)")
    parser.add_argument("--data", required=True, help="dataset root (NSynth layout) or split directory")
    parser.add_argument("--out", required=True, help="directory for the report (created)")
    parser.add_argument("--split", default="test", help="split to evaluate: test, valid or train (default: test)")
    parser.add_argument("--notes", type=int, default=64, help="notes to reconstruct (default: 64)")
    parser.add_argument("--seed", type=int, default=0, help="picks notes and pairs, the baseline weights, the noise (default: 0)")
    parser.add_argument("--baseline", choices=("untrained", "none"), default="untrained",
                        help="also score an untrained model of the same config (default: untrained)")  # fmt: skip
    parser.add_argument("--sweeps", type=int, default=4, help="interpolation sweeps, 0 for none (default: 4)")
    parser.add_argument("--steps", type=int, default=7, help="steps per sweep, endpoints included (default: 7)")
    parser.add_argument("--seconds", type=float, help="evaluate only the first SECONDS of each note (for slow decoders)")
    parser.add_argument("--pitches", type=_pitch_range, metavar="LOW-HIGH", help="only notes in this MIDI pitch range")
    parser.add_argument("--batch-size", type=int, default=16, help="notes per decoder pass (default: 16)")
    parser.add_argument("--temperature", type=float, default=1.0, help="sampling temperature of a WaveNet decoder (default: 1.0)")
    parser.add_argument("--examples", type=int, default=4, help="notes and sweeps drawn as rainbowgrams (default: 4)")
    parser.add_argument("--device", default="cpu", help="torch device of the models, e.g. cuda (default: cpu)")
    parser.set_defaults(handler=_autoencoder)


SUBCOMMANDS: tuple[Callable[[argparse._SubParsersAction], None], ...] = (_register_composer, _register_autoencoder)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``timbre evaluate`` and its sub-commands."""
    parser = subparsers.add_parser("evaluate", help="evaluate trained models", description="Evaluate trained models.")
    actions = parser.add_subparsers(dest="model_family", metavar="MODEL", required=True)
    for register_subcommand in SUBCOMMANDS:
        register_subcommand(actions)
