"""``timbre interpolate``, ``timbre grid`` and ``timbre morph``: new timbres between sounds."""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from pathlib import Path

from timbre.cli.common import (
    add_model_argument,
    add_synthesis_arguments,
    bounded_positive_int,
    check_inputs_exist,
    check_output_dir,
    check_output_file,
    load_model,
    report_written,
    warn_if_outside_training_range,
)
from timbre.errors import ConfigError

# Bounds on the notes one command decodes (each note is decoded and written in turn, so these
# bound the run time, not the memory).
MAX_STEPS = 1000
MAX_GRID_SIZE = 32
CORNERS = ("top-left", "top-right", "bottom-left", "bottom-right")


def register(subparsers: argparse._SubParsersAction) -> None:
    sweep = subparsers.add_parser(
        "interpolate", help="a sweep of timbres from sound A to sound B", description=run_interpolate.__doc__
    )
    sweep.add_argument("a", help="first sound (audio file or .npy embedding)")
    sweep.add_argument("b", help="second sound (audio file or .npy embedding)")
    sweep.add_argument(
        "--steps", type=bounded_positive_int(MAX_STEPS), default=5,
        help=f"notes in the sweep, endpoints included, 2-{MAX_STEPS} (default: 5)",
    )  # fmt: skip
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
    grid.add_argument(
        "corners", nargs="+", metavar="SOUND", help="four sounds: top-left, top-right, bottom-left, bottom-right"
    )
    grid.add_argument(
        "--size", type=bounded_positive_int(MAX_GRID_SIZE), default=5,
        help=f"grid side, 2-{MAX_GRID_SIZE} (default: 5, i.e. 25 notes)",
    )  # fmt: skip
    grid.add_argument(
        "--weighting",
        choices=("bilinear", "distance"),
        default="bilinear",
        help="corner weights (default: bilinear; distance = NSynth Super)",
    )
    grid.add_argument(
        "--method", choices=("lerp", "slerp"), default="lerp", help="how embeddings are mixed (default: lerp)"
    )
    grid.add_argument("--out", required=True, help="output directory")
    add_synthesis_arguments(grid)
    add_model_argument(grid)
    grid.set_defaults(handler=run_grid)

    morph = subparsers.add_parser(
        "morph", help="one note whose timbre moves from A to B over time", description=run_morph.__doc__
    )
    morph.add_argument("a", help="starting sound")
    morph.add_argument("b", help="ending sound")
    morph.add_argument(
        "--curve", choices=("linear", "ease", "sigmoid"), default="linear", help="mix over time (default: linear)"
    )
    morph.add_argument(
        "--method", choices=("slerp", "lerp"), default="slerp", help="how embeddings are mixed (default: slerp)"
    )
    morph.add_argument("--out", required=True, help="output WAV")
    add_synthesis_arguments(morph)
    add_model_argument(morph)
    morph.set_defaults(handler=run_morph)


def _source(model, path: str):
    """The Embedding in a .npy file, or an audio file's, encoded by ``model`` (refining with a
    progress bar: seconds per file unless the model stores it)."""
    if path.lower().endswith(".npy"):
        from timbre.embedding import Embedding

        return Embedding.load(path)
    return model.encode(path, progress=True)


def _sidecars(paths: list[str]) -> list[Path]:
    """The inputs and the metadata files read beside .npy embeddings (outputs must spare both)."""
    return [*map(Path, paths), *(Path(p).with_suffix(".json") for p in paths if p.lower().endswith(".npy"))]


def run_interpolate(args: argparse.Namespace) -> int:
    """Encode A and B, blend their embeddings in --steps mixes, decode every mix at --pitch.

    Writes DIR/step_<i>_mix_<m>.wav for each step (and DIR/sweep.png with --plot). Notes are
    decoded and written a few at a time; DIR receives them all only once every note is done.
    """
    import numpy as np

    from timbre.io.audio import save_wav
    from timbre.io.files import staged_directory
    from timbre.sound_design import crossfade, sweep_embeddings, synthesize_in_chunks

    if args.steps < 2:
        raise ConfigError(f"--steps {args.steps}: steps must be at least 2 (the two ends of the sweep)")
    check_inputs_exist([args.a, args.b])
    mixes = np.linspace(0.0, 1.0, args.steps)
    names = [f"step_{i:02d}_mix_{mix:.2f}" for i, mix in enumerate(mixes)]
    files = [f"{name}.wav" for name in names] + (["sweep.png"] if args.plot else [])
    out = check_output_dir(args.out, _sidecars([args.a, args.b]), files)
    model = load_model(args)
    warn_if_outside_training_range(model, args.pitch)
    options = dict(
        pitch=args.pitch, seconds=args.seconds, velocity=args.velocity, seed=args.seed, temperature=args.temperature,
        progress=True,
    )  # fmt: skip
    a, b = _source(model, args.a), _source(model, args.b)
    notes: Iterator[np.ndarray]  # [samples] per step, synthesized as they are written
    if args.method == "crossfade":
        ends = list(synthesize_in_chunks(model, [model.encode(a), model.encode(b)], **options))
        notes = (crossfade(np.stack(ends), mix) for mix in mixes)
    else:
        embeddings, _ = sweep_embeddings(model, a, b, steps=args.steps, method=args.method)
        notes = synthesize_in_chunks(model, embeddings, **options)
    kept = []
    with staged_directory(out) as staging:
        for name, note in zip(names, notes):
            save_wav(staging / f"{name}.wav", note, model.sample_rate)
            if args.plot:
                kept.append(note)
        if args.plot:
            from timbre.plots import plot_sweep

            labels = [f"{args.method} {mix:.2f}" for mix in mixes]
            plot_sweep(kept, labels, staging / "sweep.png", sample_rate=model.sample_rate)
    report_written([out / name for name in files])
    return 0


def run_grid(args: argparse.Namespace) -> int:
    """Blend four sounds over a --size x --size grid and decode every point at --pitch.

    Writes DIR/grid_r<row>_c<col>.wav (and DIR/grid.png with --plot). Notes are decoded and
    written a few at a time; DIR receives them all only once every note is done.
    """
    from timbre.io.audio import save_wav
    from timbre.io.files import staged_directory
    from timbre.sound_design import grid_embeddings, synthesize_in_chunks

    if len(args.corners) != 4:
        raise ConfigError(
            f"a grid needs exactly 4 sounds ({', '.join(CORNERS)}), got {len(args.corners)}: {' '.join(args.corners)}"
        )
    if args.size < 2:
        raise ConfigError(f"--size {args.size}: a grid needs at least 2 points per side")
    check_inputs_exist(args.corners)
    cells = [(row, col) for row in range(args.size) for col in range(args.size)]
    files = [f"grid_r{row}_c{col}.wav" for row, col in cells] + (["grid.png"] if args.plot else [])
    out = check_output_dir(args.out, _sidecars(args.corners), files)
    model = load_model(args)
    warn_if_outside_training_range(model, args.pitch)
    embeddings = grid_embeddings(
        model, [_source(model, c) for c in args.corners], size=args.size, weighting=args.weighting, method=args.method
    )
    notes = synthesize_in_chunks(
        model, embeddings, pitch=args.pitch, seconds=args.seconds, velocity=args.velocity, seed=args.seed,
        temperature=args.temperature, progress=True,
    )  # fmt: skip
    kept = []
    with staged_directory(out) as staging:
        for name, note in zip(files, notes):
            save_wav(staging / name, note, model.sample_rate)
            if args.plot:
                kept.append(note)
        if args.plot:
            from timbre.plots import plot_grid

            rows = [kept[row * args.size : (row + 1) * args.size] for row in range(args.size)]
            plot_grid(rows, staging / "grid.png", sample_rate=model.sample_rate)
    report_written([out / name for name in files])
    return 0


def run_morph(args: argparse.Namespace) -> int:
    """Play one note at --pitch whose timbre moves from A to B along --curve over --seconds."""
    from timbre.io.audio import save_wav
    from timbre.sound_design import morph_note

    check_inputs_exist([args.a, args.b])
    out = check_output_file(args.out, _sidecars([args.a, args.b]), (".wav",))
    if args.plot:
        check_output_file(out.with_suffix(".png"), _sidecars([args.a, args.b]), (".png",))
    model = load_model(args)
    warn_if_outside_training_range(model, args.pitch)
    audio = morph_note(
        model, _source(model, args.a), _source(model, args.b), pitch=args.pitch, seconds=args.seconds or 4.0,
        curve=args.curve, method=args.method, velocity=args.velocity, seed=args.seed, temperature=args.temperature,
        progress=True,
    )  # fmt: skip
    written = [save_wav(out, audio, model.sample_rate)]
    if args.plot:
        from timbre.plots import plot_rainbowgram

        png = out.with_suffix(".png")
        plot_rainbowgram(
            audio, png, title=f"morph {Path(args.a).stem} -> {Path(args.b).stem}", sample_rate=model.sample_rate
        )
        written.append(png)
    report_written(written)
    return 0
