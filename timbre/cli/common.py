"""Arguments and steps shared by the commands: model choice, pitch, output paths, messages.

Every check that can fail on the user's input runs here before any model is loaded or any
note decoded, so a mistake costs a second, not a render, and never touches an existing file.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path

from timbre.errors import ConfigError

# Longest note the sound commands decode: ten minutes is already a drone, and a typo of
# --seconds 100000 would otherwise allocate gigabytes before failing.
MAX_NOTE_SECONDS = 600.0


class OneLineParser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line (``timbre X: error: ...``), exit 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def add_model_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model",
        default="default",
        help="bundled model name (default, fast-v5, wavenet, wavenet-v1, ...) or a checkpoint / run directory "
        "(default: %(default)s)",
    )
    add_device_argument(parser)


def add_device_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", type=device_name, default="cpu", help="cpu or cuda (default: %(default)s)")


def add_synthesis_arguments(parser: argparse.ArgumentParser, seconds_default: float | None = 4.0) -> None:
    parser.add_argument("--pitch", type=midi_pitch, default=60, help="MIDI pitch to play (default: %(default)s)")
    parser.add_argument(
        "--seconds",
        type=note_seconds,
        default=seconds_default,
        help=f"note length in seconds including the release, at most {MAX_NOTE_SECONDS:g} (default: %(default)s)",
    )
    parser.add_argument(
        "--velocity", type=midi_velocity, default=None, help="MIDI velocity 1-127 (default: as encoded)"
    )
    parser.add_argument(
        "--temperature",
        type=non_negative_float,
        default=None,
        help="AR sampling temperature, 0 = greedy (default: the model's, 1.0 unless its card says otherwise)",
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed: same seed, same audio (default: 0)")
    parser.add_argument("--plot", action="store_true", help="also write rainbowgram PNGs next to the WAVs")


# ----------------------------------------------------------------------------- argument types


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


def non_negative_int(text: str) -> int:
    value = _integer(text, "value")
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} is not a whole number >= 0")
    return value


def bounded_positive_int(largest: int):
    """An argparse type: an integer in ``[1, largest]``."""

    def parse(text: str) -> int:
        value = positive_int(text)
        if value > largest:
            raise argparse.ArgumentTypeError(f"{value} is more than the maximum of {largest}")
        return value

    return parse


def positive_float(text: str) -> float:
    value = _number(text)
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text} is not a positive number")
    return value


def non_negative_float(text: str) -> float:
    value = _number(text)
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"{text} is not a number >= 0")
    return value


def finite_float(text: str) -> float:
    value = _number(text)
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text} is not a finite number")
    return value


def probability(text: str) -> float:
    value = _number(text)
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"{text} is not a probability in (0, 1]")
    return value


def add_sampling_arguments(parser: argparse.ArgumentParser) -> None:
    """The composer's sampling flags: ``--temperature``, ``--top-k``, ``--top-p``."""
    parser.add_argument(
        "--temperature", type=non_negative_float, default=1.0, help="sampling temperature; 0 is greedy (default: 1.0)"
    )
    parser.add_argument("--top-k", type=positive_int, help="sample among the K most likely tokens only")
    parser.add_argument(
        "--top-p", type=probability, help="sample among the most likely tokens holding probability P only"
    )


def note_seconds(text: str) -> float:
    value = positive_float(text)
    if value > MAX_NOTE_SECONDS:
        raise argparse.ArgumentTypeError(f"{text} s is longer than the maximum note of {MAX_NOTE_SECONDS:g} s")
    return value


def device_name(text: str) -> str:
    """``cpu``, ``cuda`` or ``cuda:N``, refused here if this machine cannot run it."""
    if text == "cpu":
        return text  # every machine has one; checking would import torch before the other checks ran
    from timbre.synthesizer import check_device

    try:
        check_device(text)
    except ConfigError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return text


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None


def _integer(text: str, name: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{name} {text!r} is not an integer") from None


# ----------------------------------------------------------------------------- inputs and outputs


def check_inputs_exist(paths: Iterable[str]) -> None:
    for path in paths:
        if not Path(path).exists():
            raise ConfigError(f"{path}: file does not exist")
        if Path(path).is_dir():
            raise ConfigError(f"{path}: is a folder, not a file")


def check_output_file(
    out: str | os.PathLike, inputs: Iterable[str | os.PathLike], suffixes: Sequence[str], option: str = "--out"
) -> Path:
    """Refuse an output file that would destroy an input, cannot be written, or has the wrong type.

    Args:
        out: the file the command will write.
        inputs: every file the command reads (an output equal to one of them is refused).
        suffixes: accepted file name endings, e.g. ``(".wav",)``: the command writes that format.
        option: the option that named ``out``, for the messages.
    """
    path = Path(out)
    if path.suffix.lower() not in suffixes:
        kinds = " or ".join(suffixes)
        found = f"'{path.suffix}'" if path.suffix else "no extension"
        raise ConfigError(f"{option} {out}: this command writes {kinds} files, but the name has {found}")
    if path.is_dir():
        raise ConfigError(f"{option} {out}: is an existing folder; give a file name")
    _refuse_inputs([path], inputs, option)
    _check_can_create(path, option)
    return path


def check_output_dir(
    out: str | os.PathLike, inputs: Iterable[str | os.PathLike], names: Iterable[str], option: str = "--out"
) -> Path:
    """Refuse an output folder that is a file, cannot be written, or would receive a file over an input.

    ``names`` are the files the command will write inside ``out``.
    """
    directory = Path(out)
    if directory.exists() and not directory.is_dir():
        raise ConfigError(f"{option} {out}: is an existing file, not a folder")
    _refuse_inputs([directory / name for name in names], inputs, option)
    _check_can_create(directory / "x", option)
    return directory


def _refuse_inputs(outputs: Iterable[Path], inputs: Iterable[str | os.PathLike], option: str) -> None:
    input_paths = [Path(p) for p in inputs if p is not None]
    for output in outputs:
        for source in input_paths:
            if _same_file(output, source):
                raise ConfigError(
                    f"{option} {output}: this is the input file {source}; writing it would destroy the input, "
                    "choose another output name"
                )


def _same_file(a: Path, b: Path) -> bool:
    if a.exists() and b.exists():
        return os.path.samefile(a, b)
    return os.path.realpath(a) == os.path.realpath(b)


def _check_can_create(path: Path, option: str) -> None:
    """Raise unless a file can be created at ``path`` (parents included), without creating any."""
    folder = path.parent
    while not folder.exists():
        if folder.parent == folder:
            break
        folder = folder.parent
    if not folder.is_dir():
        raise ConfigError(f"{option} {path.parent}: {folder} is a file, not a folder")
    try:
        # A real probe: os.access says yes to root on read-only file systems.
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as error:
        reason = error.strerror or type(error).__name__
        raise ConfigError(f"{option} {path}: cannot write in folder {folder} ({reason.lower()})") from None


def report_written(paths: list[Path]) -> None:
    for path in paths:
        print(f"wrote {path}")


# ----------------------------------------------------------------------------- models and messages


def load_model(args: argparse.Namespace):
    """The model named by ``--model`` (heavy imports deferred so ``--help`` stays fast)."""
    from timbre.hub import load

    return load(args.model, device=args.device)


def warn_if_outside_training_range(model, pitch: int) -> None:
    from timbre.constants import DEFAULT_PITCH_RANGE

    low, high = model.info.get("pitch_range", DEFAULT_PITCH_RANGE)
    if not low <= pitch <= high:
        print(f"warning: pitch {pitch} is outside the range the model was trained on ({low}-{high})")


def show_warnings_as_lines(command: str) -> None:
    """Print every Python warning that is shown as one ``timbre COMMAND: warning: ...`` line on
    stderr (``--debug`` keeps Python's format, with the file and line)."""

    def show(message, category, filename, lineno, file=None, line=None) -> None:  # noqa: ANN001
        print(f"timbre {command}: warning: {message}", file=sys.stderr)

    warnings.showwarning = show
