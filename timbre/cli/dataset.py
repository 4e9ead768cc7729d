"""``timbre dataset build``: render an NSynth-layout note dataset from one or several soundfonts;
``timbre dataset from-folder``: the same layout from any folder of recordings."""

from __future__ import annotations

import argparse
import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

from timbre.errors import ConfigError

# NSynth's families (timbre.data.families.NSYNTH_FAMILIES), spelled out so --help does not import torch.
NSYNTH_FAMILY_CHOICES = (
    "bass", "brass", "flute", "guitar", "keyboard", "mallet", "organ", "reed", "string", "synth_lead", "vocal",
)  # fmt: skip


def parse_int_list(text: str, name: str) -> list[int]:
    """Parse ``"21-108"``, ``"48,60,72"`` or a mix (``"0-7,40"``) into a list of integers.

    Raises:
        ConfigError: naming ``name`` (the option) when the text is not of that form.
    """
    values: list[int] = []
    for part in text.split(","):
        part = part.strip()
        low, separator, high = part.partition("-")
        # Only the number parsing is guarded: ConfigError is itself a ValueError.
        try:
            first, last = (int(low), int(high)) if separator else (int(part), int(part))
        except ValueError:
            raise ConfigError(f"{name}: expected numbers like '21-108' or '48,60,72', got '{text}'") from None
        if first > last:
            raise ConfigError(f"{name}: range '{part}' runs backwards")
        values.extend(range(first, last + 1))
    return values


def positive_int(text: str) -> int:
    """argparse type: an integer of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got '{text}'") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


@contextmanager
def _terminate_as_interrupt() -> Iterator[None]:
    """Let SIGTERM unwind like Ctrl-C, so the build writes examples.json of the finished notes."""

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _build(args: argparse.Namespace) -> int:
    # Imported here so that `timbre --help` does not load torch and FluidSynth.
    from timbre.data.families import DEFAULT_PROGRAMS
    from timbre.data.soundfont import DEFAULT_PITCHES, DEFAULT_VELOCITIES, build_dataset

    with _terminate_as_interrupt():
        summary = build_dataset(
            soundfonts=args.soundfont,
            out=args.out,
            programs=parse_int_list(args.programs, "--programs") if args.programs else DEFAULT_PROGRAMS,
            pitches=parse_int_list(args.pitches, "--pitches") if args.pitches else DEFAULT_PITCHES,
            velocities=parse_int_list(args.velocities, "--velocities") if args.velocities else DEFAULT_VELOCITIES,
            seconds=args.seconds,
            hold=args.hold,
            valid=args.valid,
            test=args.test,
            sample_rate=args.sample_rate,
            progress=not args.quiet,
            workers=args.workers,
            seed=args.seed,
            pitch_step=args.pitch_step,
            velocities_per_pitch=args.velocities_per_pitch,
        )
    print(summary.describe())
    return 0


def _from_folder(args: argparse.Namespace) -> int:
    from timbre.data.from_folder import build_from_folder

    with _terminate_as_interrupt():
        summary = build_from_folder(
            args.folder,
            args.out,
            instrument=args.instrument,
            seconds=args.seconds,
            valid=args.valid,
            family=args.family,
            source=args.source,
            retune=not args.keep_tuning,
            progress=not args.quiet,
            workers=args.workers,
            instrument_per_folder=args.instrument_per_folder,
        )
    print(summary.describe())
    return 0


def _fraction(text: str) -> float:
    """argparse type: a number in [0, 1)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got '{text}'") from None
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 0 and below 1, got {value}")
    return value


def _seconds(text: str) -> float:
    """argparse type: a note length of 0.25-60 seconds."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got '{text}'") from None
    if not 0.25 <= value <= 60:
        raise argparse.ArgumentTypeError(f"must be between 0.25 and 60 seconds, got {value}")
    return value


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``timbre dataset`` and its ``build`` sub-command."""
    parser = subparsers.add_parser("dataset", help="build note datasets", description="Build note datasets.")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    build = actions.add_parser(
        "build",
        help="render an NSynth-layout dataset from one or several soundfonts",
        description=(
            "Render every (program, pitch, velocity) note of one or several soundfonts NSynth-style (held, then "
            "released; 16 kHz mono) into OUT/nsynth-{train,valid,test}/, split by instrument: an instrument is "
            "one (soundfont, program). Notes a preset has no sample for are skipped. Re-running skips finished "
            "notes; an interrupted build leaves a readable dataset of the notes finished so far."
        ),
    )
    build.add_argument(
        "--soundfont", required=True, action="append",
        help="SF2 or SF3 file, e.g. /usr/share/sounds/sf2/FluidR3_GM.sf2; repeat it to build from several",
    )  # fmt: skip
    build.add_argument("--out", required=True, help="dataset root directory (created)")
    build.add_argument(
        "--programs", help="General MIDI programs, e.g. 0,24,40 or 0-111 (default: 0-111, the pitched ones)"
    )
    build.add_argument("--pitches", help="MIDI pitches, e.g. 21-108 (default) or 48,60,72")
    build.add_argument("--velocities", help="MIDI velocities (default: 25,50,75,100,127)")
    build.add_argument("--seconds", type=float, default=4.0, help="note length in seconds (default: 4)")
    build.add_argument("--hold", type=float, default=3.0, help="seconds the key is held before release (default: 3)")
    build.add_argument("--valid", type=float, default=0.1, help="fraction of instruments for validation (default: 0.1)")
    build.add_argument("--test", type=float, default=0.1, help="fraction of instruments for testing (default: 0.1)")
    build.add_argument("--sample-rate", type=int, default=16000, help="sample rate of the audio (default: 16000)")
    build.add_argument(
        "--workers",
        type=int,
        default=min(4, os.cpu_count() or 1),
        help="rendering processes; the output does not depend on it (default: CPU count, at most 4)",
    )
    build.add_argument(
        "--pitch-step", type=positive_int, default=1,
        help="keep every N-th of the pitches per instrument, from an offset drawn per instrument (default: 1, all)",
    )  # fmt: skip
    build.add_argument(
        "--velocities-per-pitch", type=positive_int, metavar="K",
        help="keep K of the velocities per (instrument, pitch), drawn with the seed (default: all)",
    )  # fmt: skip
    build.add_argument(
        "--seed", type=int, default=0, help="seed of the instrument split and the pitch/velocity draws (default: 0)"
    )
    build.add_argument("--quiet", action="store_true", help="no progress bar")
    build.set_defaults(handler=_build)

    from_folder = actions.add_parser(
        "from-folder",
        help="find the notes in a folder of recordings and write them as an NSynth-layout dataset",
        description=(
            "Walk FOLDER recursively (WAV, FLAC, OGG, MP3, AIFF: any rate, mono or stereo), find the notes in "
            "each file (several per file by onset detection), estimate their pitch with PESTO, reject what is "
            "unpitched, silent, clipped or too short (the report says why, file by file), cut or pad each note to "
            "--seconds keeping its attack, normalise its loudness, and write OUT/nsynth-{train,valid}/ (valid: "
            "the held-out notes, spread over the pitches) with OUT/report.md and OUT/pitch_histogram.png. FOLDER "
            "is never written to. Re-running resumes: files already analysed are skipped. Then fine-tune: "
            "timbre-train experiment=finetune data.root=OUT"
        ),
    )
    from_folder.add_argument("folder", metavar="FOLDER", help="folder of recordings (read only)")
    from_folder.add_argument("--out", required=True, help="dataset root directory (created)")
    from_folder.add_argument(
        "--instrument", help="instrument name: lower-case letters, digits and _ (default: the folder's name)"
    )
    from_folder.add_argument(
        "--instrument-per-folder", action="store_true",
        help="each top-level subfolder of FOLDER is an instrument named after it (held-out notes are drawn from each)",
    )  # fmt: skip
    from_folder.add_argument("--seconds", type=_seconds, default=4.0, help="length of every note (default: 4)")
    from_folder.add_argument(
        "--valid", type=_fraction, default=0.2, help="fraction of the notes held out for validation (default: 0.2)"
    )
    from_folder.add_argument("--family", choices=NSYNTH_FAMILY_CHOICES, help="NSynth family label (default: unknown)")
    from_folder.add_argument("--source", choices=("acoustic", "electronic", "synthetic"), help="NSynth source label")
    from_folder.add_argument(
        "--keep-tuning", action="store_true",
        help="do not retune notes onto their nearest MIDI pitch (the measured deviation is recorded either way)",
    )  # fmt: skip
    from_folder.add_argument(
        "--workers", type=positive_int, default=min(2, os.cpu_count() or 1),
        help="analysing processes; the output does not depend on it (default: CPU count, at most 2)",
    )  # fmt: skip
    from_folder.add_argument("--quiet", action="store_true", help="no progress bar")
    from_folder.set_defaults(handler=_from_folder)
