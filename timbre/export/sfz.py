"""SFZ instruments: one plain-text ``.sfz`` file per instrument, samples as WAV files beside it.

Opcodes follow the SFZ format reference (sfzformat.com), SFZ v1 only, so any SFZ player (sfizz,
Sforzando, Decent Sampler's importers, most DAW samplers) reads them:

- ``<control> default_path=samples/``: the WAV folder.
- ``<global> loop_mode=loop_sustain``: the loop plays while the key is held, then the rest of the
  sample (its release) plays; ``ampeg_release`` fades a note let go in the middle of its loop.
  ``amp_veltrack=100`` (the default, written for clarity): velocity scales the level by the
  quadratic General MIDI curve, which the samples assume (see :mod:`timbre.export.sampler`).
- One ``<region>`` per zone: ``sample``, ``pitch_keycenter``, ``lokey``/``hikey``,
  ``lovel``/``hivel``, ``loop_start``/``loop_end`` (SFZ's loop end is the last sample *in* the
  loop, inclusive).
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

from timbre.export.sampler import Instrument
from timbre.io.audio import save_wav
from timbre.io.files import atomic_write

SAMPLE_FOLDER = "samples"


def file_stem(name: str) -> str:
    """``name`` reduced to a portable file name (letters, digits, ``.``, ``-``, ``_``)."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._")
    return stem or "instrument"


def sfz_text(instrument: Instrument, sample_files: Sequence[str]) -> str:
    """The ``.sfz`` text of ``instrument`` whose sample ``i`` is the WAV ``sample_files[i]``
    (relative to the sample folder)."""
    lines = [
        f"// {instrument.name}: a sampler instrument exported by timbre",
        f"// timbre source: {instrument.source}",
        "",
        "<control>",
        f"default_path={SAMPLE_FOLDER}/",
        "",
        "<global>",
        "loop_mode=loop_sustain",
        f"ampeg_release={instrument.release_seconds:.3f}",
        "amp_veltrack=100",
        "",
    ]
    for zone in instrument.zones:
        sample = instrument.samples[zone.sample]
        lines.append(
            f"<region> sample={sample_files[zone.sample]} pitch_keycenter={sample.root} "
            f"lokey={zone.keys.low} hikey={zone.keys.high} lovel={zone.layer.low} hivel={zone.layer.high} "
            f"loop_start={sample.loop.start} loop_end={sample.loop.end - 1}"
        )
    return "\n".join(lines) + "\n"


def write_sfz(directory: str | os.PathLike, instruments: Sequence[Instrument]) -> tuple[list[Path], list[Path]]:
    """Write each instrument as ``DIRECTORY/<name>.sfz`` with its WAVs (16-bit) in ``DIRECTORY/samples/``.

    Every file is written atomically, the ``.sfz`` files after their samples, so an interrupted
    export never leaves an instrument pointing at missing samples.

    Returns:
        ``(instrument_files, sample_files)``: the ``.sfz`` paths in the order of ``instruments``,
        and every WAV written.
    """
    directory = Path(directory)
    stems: list[str] = []
    for instrument in instruments:
        stem = file_stem(instrument.name)
        while stem in stems:  # two instruments of one name still get their own files
            stem += "_"
        stems.append(stem)
    instrument_files, sample_files = [], []
    for instrument, stem in zip(instruments, stems):
        files = [f"{stem}_{sample.name}.wav" for sample in instrument.samples]
        for sample, file in zip(instrument.samples, files):
            path = directory / SAMPLE_FOLDER / file
            sample_files.append(save_wav(path, sample.audio, instrument.sample_rate, subtype="PCM_16"))
        path = directory / f"{stem}.sfz"
        with atomic_write(path, "w") as handle:
            handle.write(sfz_text(instrument, files))
        instrument_files.append(path)
    return instrument_files, sample_files
