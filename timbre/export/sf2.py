"""A small SoundFont 2 writer: mono 16-bit samples, one instrument per preset, looped zones.

Written from the SoundFont 2.04 Technical Specification (E-mu Systems / Creative Technology, 2006);
section numbers below are the spec's. ``soundfonttools`` (PyPI, beta) was considered: it converts
between SF2 files and JSON-plus-WAV folders on disk through its command-line tools rather than
offering an in-memory writer, so writing the few record types needed here is simpler and easier to
check. The file is:

- ``RIFF 'sfbk'`` (§4.4) with three lists:
- ``LIST 'INFO'`` (§5): ``ifil`` version 2.01 (everything used here is 2.01), ``isng`` "EMU8000",
  ``INAM`` bank name, ``ISFT`` the writing software, ``ICMT`` a comment.
- ``LIST 'sdta'`` (§6): ``smpl``, every sample as 16-bit little-endian PCM followed by 46 zero
  data points (§6.1 requires at least 46).
- ``LIST 'pdta'`` (§7): the nine "hydra" sub-chunks ``phdr pbag pmod pgen inst ibag imod igen shdr``
  (§7.2-§7.10), each ending with its terminal record. Each preset has one zone pointing to an
  instrument of the same name (generator ``instrument`` last, §8.1.3); each instrument zone has
  ``keyRange`` first, ``velRange`` second and ``sampleID`` last (§8.1.3).

Sample headers (§7.10) hold absolute offsets into ``smpl``: ``dwEnd`` and ``dwEndloop`` are the
first data point *after* the sample and after the loop.
"""

from __future__ import annotations

import math
import os
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from timbre.errors import ConfigError
from timbre.export.sampler import Instrument
from timbre.io.files import atomic_write

# Generator operators (§8.1.2).
GEN_INITIAL_FILTER_FC = 8
GEN_RELEASE_VOL_ENV = 38
GEN_INSTRUMENT = 41
GEN_KEY_RANGE = 43
GEN_VEL_RANGE = 44
GEN_SAMPLE_ID = 53
GEN_SAMPLE_MODES = 54
# sampleModes (§8.1.2, 54): loop while the key is down, then play on to the end of the sample.
LOOP_DURING_KEY_THEN_RELEASE = 3
MONO_SAMPLE = 1  # sfSampleType (§7.10)
ZERO_POINTS_AFTER_SAMPLE = 46  # §6.1
NAME_BYTES = 20  # achPresetName, achInstName, achSampleName: ASCII, zero-padded
MAX_INDEX = 0xFFFF  # bag, generator and modulator indices are WORDs


@dataclass(frozen=True)
class Modulator:
    """One modulator record (§7.4): ``amount * transform(source) * amount_source`` added to ``destination``."""

    source: int
    destination: int
    amount: int
    amount_source: int = 0
    transform: int = 0


# The default modulator "MIDI Note-On Velocity to Filter Cutoff" (§8.4.3; source: velocity,
# linear, unipolar, max-to-min; FluidSynth gates it with a velocity switch as the amount source)
# lowers the filter cutoff by up to 2400 cents for soft notes. An instrument-zone modulator with
# the same sources and destination replaces a default one (§9.5.1); amount 0 switches it off,
# since the samples already carry how the timbre changes with velocity.
NO_VELOCITY_FILTER = Modulator(source=0x0102, destination=GEN_INITIAL_FILTER_FC, amount=0, amount_source=0x0C02)


@dataclass
class SoundFontSample:
    """A mono sample (§7.10).

    Attributes:
        name: up to 20 ASCII characters, unique in the file.
        data: ``[samples]`` int16.
        loop_start, loop_end: loop points in samples from the sample's start (end exclusive).
    """

    name: str
    data: np.ndarray
    sample_rate: int
    original_pitch: int
    loop_start: int
    loop_end: int
    pitch_correction: int = 0


@dataclass
class SoundFontZone:
    """An instrument zone: keys and velocities (inclusive) that play ``sample`` (an index).

    ``generators`` are extra ``(operator, amount)`` pairs, e.g. sample modes and the release.
    """

    sample: int
    key_range: tuple[int, int]
    velocity_range: tuple[int, int]
    generators: tuple[tuple[int, int], ...] = ()
    modulators: tuple[Modulator, ...] = ()


@dataclass
class SoundFontPreset:
    """A preset (bank, program) holding one instrument made of ``zones``."""

    name: str
    bank: int
    program: int
    zones: list[SoundFontZone] = field(default_factory=list)


def soundfont_bytes(
    name: str, presets: Sequence[SoundFontPreset], samples: Sequence[SoundFontSample], comment: str = ""
) -> bytes:
    """The SF2 file holding ``presets`` and ``samples`` (layout in the module docstring).

    Raises:
        ConfigError: a sample index, name, range or loop that the format cannot hold.
    """
    smpl, headers = _sample_data(samples)
    # The packed records of each hydra sub-chunk.
    phdr: list[bytes] = []
    pbag: list[bytes] = []
    pmod: list[bytes] = []
    pgen: list[bytes] = []
    inst: list[bytes] = []
    ibag: list[bytes] = []
    imod: list[bytes] = []
    igen: list[bytes] = []
    for index, preset in enumerate(presets):
        if not (0 <= preset.bank <= 128 and 0 <= preset.program <= 127):
            raise ConfigError(
                f"preset {preset.name!r}: bank {preset.bank}, program {preset.program} is outside SF2's range"
            )
        phdr.append(struct.pack("<20sHHHIII", _name(preset.name), preset.program, preset.bank, len(pbag), 0, 0, 0))
        pbag.append(struct.pack("<HH", len(pgen), len(pmod)))
        pgen.append(struct.pack("<HH", GEN_INSTRUMENT, index))
        inst.append(struct.pack("<20sH", _name(preset.name), len(ibag)))
        for zone in preset.zones:
            if not 0 <= zone.sample < len(samples):
                raise ConfigError(f"preset {preset.name!r}: zone refers to sample {zone.sample} of {len(samples)}")
            ibag.append(struct.pack("<HH", len(igen), len(imod)))
            igen.append(struct.pack("<HBB", GEN_KEY_RANGE, *_range(zone.key_range, preset.name)))
            igen.append(struct.pack("<HBB", GEN_VEL_RANGE, *_range(zone.velocity_range, preset.name)))
            igen.extend(struct.pack("<Hh", operator, amount) for operator, amount in zone.generators)
            igen.append(struct.pack("<HH", GEN_SAMPLE_ID, zone.sample))
            imod.extend(
                struct.pack("<HHhHH", m.source, m.destination, m.amount, m.amount_source, m.transform)
                for m in zone.modulators
            )
    if max(len(pbag), len(pgen), len(ibag), len(igen), len(imod)) >= MAX_INDEX:
        raise ConfigError(f"{name}: {len(igen)} generators in {len(ibag)} zones exceed what one SF2 file can index")
    # Terminal records (§7.2-§7.10).
    phdr.append(struct.pack("<20sHHHIII", b"EOP", 0, 0, len(pbag), 0, 0, 0))
    pbag.append(struct.pack("<HH", len(pgen), len(pmod)))
    pmod.append(bytes(10))
    pgen.append(bytes(4))
    inst.append(struct.pack("<20sH", b"EOI", len(ibag)))
    ibag.append(struct.pack("<HH", len(igen), len(imod)))
    imod.append(bytes(10))
    igen.append(bytes(4))
    headers.append(struct.pack("<20sIIIIIBbHH", b"EOS", 0, 0, 0, 0, 0, 0, 0, 0, 0))

    info = _list(
        b"INFO",
        _chunk(b"ifil", struct.pack("<HH", 2, 1)),
        _chunk(b"isng", _text("EMU8000")),
        _chunk(b"INAM", _text(name[:255])),
        _chunk(b"ISFT", _text("timbre")),
        *([_chunk(b"ICMT", _text(comment[:65535]))] if comment else []),
    )
    sdta = _list(b"sdta", _chunk(b"smpl", smpl))
    hydra = zip((b"phdr", b"pbag", b"pmod", b"pgen", b"inst", b"ibag", b"imod", b"igen", b"shdr"),
                (phdr, pbag, pmod, pgen, inst, ibag, imod, igen, headers))  # fmt: skip
    pdta = _list(b"pdta", *(_chunk(chunk_id, b"".join(records)) for chunk_id, records in hydra))
    return _chunk(b"RIFF", b"sfbk" + info + sdta + pdta)


def write_sf2(path: str | os.PathLike, instruments: Sequence[Instrument], name: str, comment: str = "") -> Path:
    """Write ``instruments`` as the presets of one SF2 file (atomically).

    Preset ``i`` is bank ``i // 128``, program ``i % 128``. Samples loop during the key-down and
    play through their baked release after it (sample mode 3); the volume envelope's release lasts
    the instrument's release, so a note let go in the middle of its loop fades out too.
    """
    samples: list[SoundFontSample] = []
    presets: list[SoundFontPreset] = []
    for index, instrument in enumerate(instruments):
        first = len(samples)
        for sample in instrument.samples:
            samples.append(
                SoundFontSample(
                    f"{index:03d}{sample.name}", to_int16(sample.audio), instrument.sample_rate, sample.root,
                    sample.loop.start, sample.loop.end,
                )
            )  # fmt: skip
        release = (GEN_RELEASE_VOL_ENV, timecents(instrument.release_seconds))
        zones = [
            SoundFontZone(
                first + zone.sample, (zone.keys.low, zone.keys.high), (zone.layer.low, zone.layer.high),
                ((GEN_SAMPLE_MODES, LOOP_DURING_KEY_THEN_RELEASE), release), (NO_VELOCITY_FILTER,),
            )
            for zone in instrument.zones
        ]  # fmt: skip
        presets.append(SoundFontPreset(instrument.name, index // 128, index % 128, zones))
    data = soundfont_bytes(name, presets, samples, comment)
    path = Path(path)
    with atomic_write(path) as file:
        file.write(data)
    return path


def to_int16(audio: np.ndarray) -> np.ndarray:
    """``[samples]`` float in [-1, 1] to int16 (rounded, clipped)."""
    return np.clip(np.round(np.asarray(audio, dtype=np.float64) * 32767.0), -32768, 32767).astype("<i2")


def timecents(seconds: float) -> int:
    """A duration as SF2 timecents, ``1200 * log2(seconds)`` (§8.1.3), within the spec's -12000..8000."""
    return int(np.clip(round(1200.0 * math.log2(max(seconds, 1e-3))), -12000, 8000))


def _sample_data(samples: Sequence[SoundFontSample]) -> tuple[bytes, list[bytes]]:
    """The ``smpl`` chunk body and the sample headers (without the terminal one)."""
    chunks, headers, position = [], [], 0
    names = set()
    for sample in samples:
        data = np.asarray(sample.data)
        if data.dtype != np.int16 or data.ndim != 1 or data.size == 0:
            raise ConfigError(
                f"sample {sample.name!r}: expected non-empty int16 [samples], got {data.dtype} {data.shape}"
            )
        if not 0 <= sample.loop_start < sample.loop_end <= data.size:
            raise ConfigError(
                f"sample {sample.name!r}: loop {sample.loop_start}-{sample.loop_end} outside its {data.size} samples"
            )
        encoded = _name(sample.name)
        if encoded in names:
            raise ConfigError(f"sample name {sample.name!r} is used twice (names are unique in an SF2 file)")
        names.add(encoded)
        headers.append(
            struct.pack(
                "<20sIIIIIBbHH", encoded, position, position + data.size, position + sample.loop_start,
                position + sample.loop_end, sample.sample_rate, sample.original_pitch, sample.pitch_correction,
                0, MONO_SAMPLE,
            )
        )  # fmt: skip
        chunks.append(data.astype("<i2").tobytes() + bytes(2 * ZERO_POINTS_AFTER_SAMPLE))
        position += data.size + ZERO_POINTS_AFTER_SAMPLE
    return b"".join(chunks), headers


def _name(text: str) -> bytes:
    """A zero-padded 20-byte name field: ASCII, at most 19 characters, so it ends with a zero."""
    return text.encode("ascii", "replace")[: NAME_BYTES - 1].ljust(NAME_BYTES, b"\0")


def _range(bounds: tuple[int, int], preset: str) -> tuple[int, int]:
    low, high = int(bounds[0]), int(bounds[1])
    if not 0 <= low <= high <= 127:
        raise ConfigError(f"preset {preset!r}: range {low}-{high} is outside 0-127")
    return low, high


def _text(text: str) -> bytes:
    """A zero-terminated ASCII string padded to an even length (§5.1)."""
    data = text.encode("ascii", "replace") + b"\0"
    return data + b"\0" * (len(data) % 2)


def _chunk(chunk_id: bytes, body: bytes) -> bytes:
    return chunk_id + struct.pack("<I", len(body)) + body + b"\0" * (len(body) % 2)


def _list(list_type: bytes, *chunks: bytes) -> bytes:
    return _chunk(b"LIST", list_type + b"".join(chunks))
