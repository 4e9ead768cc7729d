"""``timbre interpolate``, ``timbre grid`` and ``timbre morph``: new timbres between sounds."""

from __future__ import annotations

import argparse
from pathlib import Path

from timbre.cli.common import (
    add_model_argument,
    add_synthesis_arguments,
    check_inputs_exist,
    load_model,
    positive_int,
    report_written,
    warn_if_outside_training_range,
)


def register(subparsers: argparse._SubParsersAction) -> None:
    sweep = subparsers.add_parser(
        "interpolate", help="a sweep of timbres from sound A to sound B", description=run_interpolate.__doc__
    )
    sweep.add_argument("a", help="first sound (audio file or .npy embedding)")
    sweep.add_argument("b", help="second sound (audio file or .npy embedding)")
    sweep.add_argument("--steps", type=positive_int, default=5, help="notes in the sweep, endpoints included (default: 5)")
    sweep.add_argument(
        "--method",
        choices=("slerp", "lerp", "crossfade"),
        default="slerp",
        help="blend embeddings (slerp, lerp) or crossfade the decoded endpoints' audio (default: slerp)",
    )
    sweep.add_argument("--out", required=True, help="output directory")
    add_synthesis_arguments(sweep)
    add_model_argument(sweep)
    sweep.set_defaults(handler=run_interpolate)

    grid = subparsers.add_parser(
        "grid", help="an NSynth Super style grid between four sounds", description=run_grid.__doc__
    )
    grid.add_argument("corners", nargs=4, metavar="SOUND", help="top-left, top-right, bottom-left, bottom-right")
    grid.add_argument("--size", type=positive_int, default=5, help="grid side (default: 5, i.e. 25 notes)")
    grid.add_argument("--weighting", choices=("bilinear", "distance"), default="bilinear", help="corner weights (default: bilinear; distance = NSynth Super)")
    grid.add_argument("--method", choices=("lerp", "slerp"), default="lerp", help="how embeddings are mixed (default: lerp)")
    grid.add_argument("--out", required=True, help="output directory")
    add_synthesis_arguments(grid)
    add_model_argument(grid)
    grid.set_defaults(handler=run_grid)

    morph = subparsers.add_parser(
        "morph", help="one note whose timbre moves from A to B over time", description=run_morph.__doc__
    )
    morph.add_argument("a", help="starting sound")
    morph.add_argument("b", help="ending sound")
    morph.add_argument("--curve", choices=("linear", "ease", "sigmoid"), default="linear", help="mix over time (default: linear)")
    morph.add_argument("--method", choices=("slerp", "lerp"), default="slerp", help="how embeddings are mixed (default: slerp)")
    morph.add_argument("--out", required=True, help="output WAV")
    add_synthesis_arguments(morph)
    add_model_argument(morph)
    morph.set_defaults(handler=run_morph)


def _source(path: str):
    """An audio path, or the Embedding in a .npy file."""
    if path.endswith(".npy"):
        from timbre.embedding import Embedding

        return Embedding.load(path)
    return path


def run_interpolate(args: argparse.Namespace) -> int:
    """Encode A and B, blend their embeddings in --steps mixes, decode every mix at --pitch.

    Writes DIR/step_<i>_mix_<m>.wav for each step (and DIR/sweep.png with --plot).
    """
    from timbre.sound_design import interpolation_sweep, write_notes

    check_inputs_exist([args.a, args.b])
    model = load_model(args)
    warn_if_outside_training_range(model, args.pitch)
    audio, mixes = interpolation_sweep(
        model, _source(args.a), _source(args.b), steps=args.steps, pitch=args.pitch, seconds=args.seconds,
        method=args.method, velocity=args.velocity, seed=args.seed, temperature=args.temperature, progress=True,
    )  # fmt: skip
    names = [f"step_{i:02d}_mix_{mix:.2f}" for i, mix in enumerate(mixes)]
    labels = [f"{args.method} {mix:.2f}" for mix in mixes]
    report_written(write_notes(args.out, audio, names, model.sample_rate, "sweep.png" if args.plot else None, labels))
    return 0


def run_grid(args: argparse.Namespace) -> int:
    """Blend four sounds over a --size x --size grid and decode every point at --pitch.

    Writes DIR/grid_r<row>_c<col>.wav (and DIR/grid.png with --plot).
    """
    from timbre.io.audio import save_wav
    from timbre.sound_design import timbre_grid

    check_inputs_exist(args.corners)
    model = load_model(args)
    warn_if_outside_training_range(model, args.pitch)
    audio = timbre_grid(
        model, [_source(c) for c in args.corners], size=args.size, pitch=args.pitch, seconds=args.seconds,
        weighting=args.weighting, method=args.method, velocity=args.velocity, seed=args.seed,
        temperature=args.temperature, progress=True,
    )  # fmt: skip
    out = Path(args.out)
    written = [
        save_wav(out / f"grid_r{row}_c{col}.wav", audio[row, col], model.sample_rate)
        for row in range(args.size)
        for col in range(args.size)
    ]
    if args.plot:
        from timbre.plots import plot_grid

        written.append(plot_grid([list(row) for row in audio], out / "grid.png", sample_rate=model.sample_rate))
    report_written(written)
    return 0


def run_morph(args: argparse.Namespace) -> int:
    """Play one note at --pitch whose timbre moves from A to B along --curve over --seconds."""
    from timbre.io.audio import save_wav
    from timbre.sound_design import morph_note

    check_inputs_exist([args.a, args.b])
    model = load_model(args)
    warn_if_outside_training_range(model, args.pitch)
    audio = morph_note(
        model, _source(args.a), _source(args.b), pitch=args.pitch, seconds=args.seconds or 4.0,
        curve=args.curve, method=args.method, velocity=args.velocity, seed=args.seed, temperature=args.temperature,
        progress=True,
    )  # fmt: skip
    written = [save_wav(args.out, audio, model.sample_rate)]
    if args.plot:
        from timbre.plots import plot_rainbowgram

        png = Path(args.out).with_suffix(".png")
        plot_rainbowgram(audio, png, title=f"morph {Path(args.a).stem} -> {Path(args.b).stem}", sample_rate=model.sample_rate)
        written.append(png)
    report_written(written)
    return 0
