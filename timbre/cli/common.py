"""Arguments and steps shared by the sound commands (model choice, pitch, plots, output paths)."""

from __future__ import annotations

import argparse
from pathlib import Path

from timbre.errors import ConfigError


def add_model_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model",
        default="default",
        help="bundled model name (default, fast, wavenet-small) or a checkpoint / run directory (default: %(default)s)",
    )
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default: %(default)s)")


def add_synthesis_arguments(parser: argparse.ArgumentParser, seconds_default: float | None = 4.0) -> None:
    parser.add_argument("--pitch", type=midi_pitch, default=60, help="MIDI pitch to play (default: %(default)s)")
    parser.add_argument(
        "--seconds",
        type=positive_float,
        default=seconds_default,
        help="note length in seconds including the release (default: %(default)s)",
    )
    parser.add_argument("--velocity", type=midi_velocity, default=None, help="MIDI velocity 1-127 (default: as encoded)")
    parser.add_argument("--temperature", type=float, default=1.0, help="AR sampling temperature, 0 = greedy (default: 1.0)")
    parser.add_argument("--seed", type=int, default=0, help="random seed: same seed, same audio (default: 0)")
    parser.add_argument("--plot", action="store_true", help="also write rainbowgram PNGs next to the WAVs")


def midi_pitch(text: str) -> int:
    value = _integer(text, "pitch")
    if not 0 <= value <= 127:
        raise argparse.ArgumentTypeError(f"pitch {value} is outside the MIDI range 0-127")
    return value


def midi_velocity(text: str) -> int:
    value = _integer(text, "velocity")
    if not 1 <= value <= 127:
        raise argparse.ArgumentTypeError(f"velocity {value} is outside the MIDI range 1-127")
    return value


def positive_int(text: str) -> int:
    value = _integer(text, "value")
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{value} is not a positive integer")
    return value


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text} is not a positive number")
    return value


def _integer(text: str, name: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{name} {text!r} is not an integer") from None


def load_model(args: argparse.Namespace):
    """The model named by ``--model`` (heavy imports deferred so ``--help`` stays fast)."""
    from timbre.hub import load

    return load(args.model, device=args.device)


def warn_if_outside_training_range(model, pitch: int) -> None:
    from timbre.constants import DEFAULT_PITCH_RANGE

    low, high = model.info.get("pitch_range", DEFAULT_PITCH_RANGE)
    if not low <= pitch <= high:
        print(f"warning: pitch {pitch} is outside the range the model was trained on ({low}-{high})")


def check_inputs_exist(paths: list[str]) -> None:
    for path in paths:
        if not Path(path).exists():
            raise ConfigError(f"{path}: file does not exist")


def report_written(paths: list[Path]) -> None:
    for path in paths:
        print(f"wrote {path}")
