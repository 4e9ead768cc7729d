"""``timbre export`` and ``timbre export-grid``: learned timbres as SFZ / SF2 sampler instruments."""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Any

from timbre.cli.common import (
    add_device_argument,
    check_output_dir,
    check_output_file,
    non_negative_float,
    positive_float,
    positive_int,
)

# Longest sample of an export: a sampler loops the sustain, so longer samples only add megabytes
# (a typo of --seconds 1000 would otherwise synthesize for hours).
MAX_SAMPLE_SECONDS = 60.0
GRID_CORNERS = ("top-left", "top-right", "bottom-left", "bottom-right")

SOURCE_HELP = (
    "a timbre: an audio file, an .npy embedding, gm:N (bundled timbre of General MIDI program N) or "
    "blend:A,B[,...][:WEIGHT_A,WEIGHT_B,...]"
)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``timbre export`` and ``timbre export-grid``."""
    export = subparsers.add_parser(
        "export",
        help="export timbres as a multi-sampled SFZ or SF2 instrument for any sampler",
        description=(
            "Synthesize a sample every --step semitones over --keys in --velocity-layers layers, loop each "
            "sample's sustain where waveform and spectrum match (crossfaded), keep the release after the "
            "loop, and map key and velocity ranges so every MIDI key plays. SF2 holds every preset in one "
            "file; SFZ writes one .sfz per preset and a samples/ folder."
        ),
        epilog=(
            "Examples: timbre export flute.wav --out flute.sf2 | "
            "timbre export blend:gm:73,gm:89:0.7,0.3 --format sfz --out warm_flute/ | "
            "timbre export --preset Flute=gm:73 --preset Pad=gm:89 --preset Mine=me.wav --out pack.sf2"
        ),
    )
    export.add_argument("source", nargs="?", help=SOURCE_HELP)
    export.add_argument(
        "--preset", action="append", default=[], metavar="NAME=SOURCE",
        help="a named preset (repeatable: several presets in one SF2, or several .sfz files)",
    )  # fmt: skip
    export.add_argument("--name", help="preset name of SOURCE (default: made from the source)")
    export.add_argument(
        "--interpolation", choices=("slerp", "lerp"), default="slerp", help="how blend: sources mix (default: slerp)"
    )
    _add_common(export)
    export.set_defaults(handler=run_export)

    grid = subparsers.add_parser(
        "export-grid",
        help="export an NSynth Super style grid between four timbres as sampler presets",
        description=(
            "One preset per cell of a --size x --size grid between four corner timbres (top-left, top-right, "
            "bottom-left, bottom-right), named 'grid r<row> c<col>', plus a JSON map from grid positions to "
            "presets (OUT.json beside an SF2, grid.json in an SFZ folder)."
        ),
    )
    grid.add_argument(
        "corners", nargs="+", metavar="SOURCE", help="four timbres: top-left, top-right, bottom-left, bottom-right"
    )
    grid.add_argument("--size", type=positive_int, default=5, help="cells per side (default: 5, i.e. 25 presets)")
    grid.add_argument(
        "--weighting", choices=("bilinear", "distance"), default="bilinear",
        help="corner weights (default: bilinear; distance = NSynth Super)",
    )  # fmt: skip
    grid.add_argument(
        "--method", choices=("lerp", "slerp"), default="lerp", help="how cells mix the corners (default: lerp)"
    )
    _add_common(grid)
    grid.set_defaults(handler=run_export_grid)


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, help="the .sf2 file, or the SFZ folder")
    parser.add_argument(
        "--format", choices=("sf2", "sfz"), help="sampler format (default: sf2 if --out ends in .sf2, else sfz)"
    )
    parser.add_argument("--keys", type=key_range, help="sampled key range LOW-HIGH (default: the model's pitch range)")
    parser.add_argument("--step", type=positive_int, default=3, help="semitones between sampled keys (default: 3)")
    parser.add_argument("--velocity-layers", type=positive_int, default=3, help="velocity layers (default: 3)")
    parser.add_argument(
        "--seconds", type=sample_seconds, default=3.0,
        help=f"length of each sample, release included, at most {MAX_SAMPLE_SECONDS:g} (default: 3.0)",
    )  # fmt: skip
    parser.add_argument(
        "--decoder", choices=("fast", "wavenet"), help="fast (parallel, default) or wavenet (autoregressive)"
    )
    parser.add_argument(
        "--model", help="autoencoder checkpoint or bundled name (default: the bundled model of --decoder)"
    )
    parser.add_argument("--timbre-set", metavar="DIR", help="timbre set for gm:N sources (default: the bundled set)")
    parser.add_argument("--batch-size", type=positive_int, default=32, help="notes per decoder call (default: 32)")
    parser.add_argument(
        "--temperature", type=non_negative_float, default=None,
        help="sampling temperature of the wavenet decoder; 0 is greedy (default: the model's own)",
    )  # fmt: skip
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    add_device_argument(parser)
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def sample_seconds(text: str) -> float:
    value = positive_float(text)
    if value > MAX_SAMPLE_SECONDS:
        raise argparse.ArgumentTypeError(f"{text} s is longer than the maximum sample of {MAX_SAMPLE_SECONDS:g} s")
    return value


def key_range(text: str) -> tuple[int, int]:
    low, separator, high = text.partition("-")
    try:
        bounds = (int(low), int(high if separator else low))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a key range LOW-HIGH, e.g. 24-96") from None
    if not 0 <= bounds[0] <= bounds[1] <= 127:
        raise argparse.ArgumentTypeError(f"key range {text} must lie within 0-127, lowest first")
    return bounds


def run_export(args: argparse.Namespace) -> int:
    """``timbre export``."""
    _check_out(args.out, _sampler_format(args))  # before the imports: they take seconds
    from timbre.errors import ConfigError
    from timbre.export import export_instruments

    presets: list[tuple[str | None, str]] = []
    if args.source:
        presets.append((args.name, args.source))
    elif args.name:
        raise ConfigError("--name names SOURCE; with --preset give each preset its name as NAME=SOURCE")
    for text in args.preset:
        name, separator, source = text.partition("=")
        if not (separator and name.strip() and source.strip()):
            raise ConfigError(f"--preset {text!r}: expected NAME=SOURCE, e.g. --preset Flute=gm:73")
        presets.append((name.strip(), source.strip()))
    if not presets:
        raise ConfigError("nothing to export: give a SOURCE or at least one --preset NAME=SOURCE")
    model, options = _setup(args)
    result = export_instruments(model, presets, args.out, interpolation=args.interpolation, **options)
    _report(result, model)
    return 0


def run_export_grid(args: argparse.Namespace) -> int:
    """``timbre export-grid``."""
    from timbre.errors import ConfigError

    if len(args.corners) != len(GRID_CORNERS):
        raise ConfigError(
            f"export-grid needs exactly {len(GRID_CORNERS)} corner timbres ({', '.join(GRID_CORNERS)}), "
            f"got {len(args.corners)}"
        )
    if args.size < 2:
        raise ConfigError(f"--size must be at least 2, got {args.size}")
    _check_out(args.out, _sampler_format(args))  # before the imports: they take seconds
    from timbre.export import export_grid

    model, options = _setup(args)
    result = export_grid(
        model, args.corners, args.out, size=args.size, weighting=args.weighting, method=args.method, **options
    )
    _report(result, model)
    return 0


def _setup(args: argparse.Namespace) -> tuple[Any, dict[str, Any]]:
    """The model, and the export options the arguments ask for (format, sampling plan, ...)."""
    import timbre
    from timbre.cli.render import DEFAULT_MODELS
    from timbre.errors import ConfigError
    from timbre.export import model_pitch_range, sampling_plan

    model_name = args.model or DEFAULT_MODELS[args.decoder or "fast"]
    model = timbre.load(model_name, device=args.device)
    if args.decoder and model.decoder_kind != args.decoder:
        raise ConfigError(
            f"--model {model_name} has a {model.decoder_kind} decoder, but --decoder {args.decoder} was asked for"
        )
    trained = model_pitch_range(model)
    low, high = args.keys or trained
    if low < trained[0] or high > trained[1]:
        print(
            f"warning: --keys {low}-{high} reaches beyond the pitches the model was trained on "
            f"({trained[0]}-{trained[1]}); the samples there are extrapolations",
            file=sys.stderr,
        )
    options = {
        "format": _sampler_format(args),
        "plan": sampling_plan(low, high, args.step, args.velocity_layers, args.seconds),
        "batch_size": args.batch_size,
        "temperature": model.default_temperature if args.temperature is None else args.temperature,
        "seed": args.seed,
        "progress": not args.no_progress,
    }
    if args.timbre_set:
        options["timbre_set"] = args.timbre_set
    return model, options


def _sampler_format(args: argparse.Namespace) -> str:
    return args.format or ("sf2" if Path(args.out).suffix.lower() == ".sf2" else "sfz")


def _check_out(out: str, sampler_format: str) -> None:
    """Refuse an ``--out`` that does not fit the format or cannot be written, before any model loads."""
    from timbre.errors import ConfigError

    if sampler_format == "sf2":
        check_output_file(out, [], (".sf2",))
        return
    if Path(out).suffix.lower() in (".sf2", ".sfz"):
        raise ConfigError(
            f"--out {out}: an SFZ export writes a folder (one .sfz per preset and a samples/ folder); "
            "give a folder name, or --format sf2 for one .sf2 file"
        )
    check_output_dir(out, [], [])


def _report(result: Any, model: Any) -> None:
    kind = "preset" if result.files[0].suffix == ".sf2" else "instrument"
    count = len(result.instruments)
    print(
        f"{count} {kind}{'s' * (count != 1)}, {result.samples} samples in {result.zones} key/velocity zones, "
        f"{result.bytes / 1e6:.1f} MB, {result.seconds:.1f} s ({model.decoder_kind} decoder, "
        f"pack gain {20 * math.log10(result.gain):+.1f} dB over the model's velocity-127 level)"
    )
    for path in result.files:
        print(f"wrote {path}")
