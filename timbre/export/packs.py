"""Export timbres as sampler packs: one or more instruments, or an NSynth Super style grid.

:func:`export_instruments` turns timbre sources (anything ``timbre render --timbre`` accepts, see
:mod:`timbre.render.timbres`) into the presets of one SF2 file or a folder of SFZ instruments.
:func:`export_grid` does the same for every cell of a ``size`` x ``size`` grid between four corner
timbres (:func:`timbre.interpolate.grid_weights`), names each preset by its position and writes a
JSON map from positions to presets.

The whole pack shares one gain (:func:`timbre.export.sampler.normalize`), so its presets keep the
loudness relations timbre gives them; the gain is reported and stored in the grid map.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from timbre import interpolate
from timbre.constants import DEFAULT_PITCH_RANGE
from timbre.embedding import Embedding
from timbre.errors import ConfigError
from timbre.export.plan import SamplingPlan, sampling_plan
from timbre.export.sampler import DEFAULT_BATCH_SIZE, Instrument, normalize, render_instruments
from timbre.export.sf2 import write_sf2
from timbre.export.sfz import write_sfz
from timbre.io.files import atomic_write
from timbre.render.timbres import DEFAULT_TIMBRE_SET, TimbreResolver, TimbreSet, TimbreSource, parse_source
from timbre.synthesizer import TimbreModel

FORMATS = ("sf2", "sfz")
PEAK_DB = -1.0
CORNER_NAMES = ("top_left", "top_right", "bottom_left", "bottom_right")


@dataclass
class ExportResult:
    """What an export wrote.

    Attributes:
        files: the instrument files (one ``.sf2``, or one ``.sfz`` per preset) and the grid map.
        instruments: the instruments, as written.
        gain: the pack's gain over timbre's synthesis at velocity 127 (linear).
        seconds: wall time of the export.
        bytes: size on disk of everything written (samples included).
    """

    files: list[Path]
    instruments: list[Instrument]
    gain: float
    seconds: float
    bytes: int
    grid: list[dict[str, Any]] = field(default_factory=list)

    @property
    def samples(self) -> int:
        return sum(len(instrument.samples) for instrument in self.instruments)

    @property
    def zones(self) -> int:
        return sum(len(instrument.zones) for instrument in self.instruments)


def model_pitch_range(model: TimbreModel) -> tuple[int, int]:
    """The pitches ``model`` was trained on (its checkpoint's ``pitch_range``, else timbre's default)."""
    low, high = model.info.get("pitch_range") or DEFAULT_PITCH_RANGE
    return int(low), int(high)


def default_plan(model: TimbreModel) -> SamplingPlan:
    """A sample every 3 semitones over the model's pitch range, 3 velocity layers."""
    return sampling_plan(*model_pitch_range(model))


def source_name(source: TimbreSource | str, timbre_set: TimbreSet) -> str:
    """A short preset name for a timbre source: the file stem, the bundled instrument, or a blend of those."""
    if isinstance(source, str):
        source = parse_source(source)
    if source.kind == "gm":
        return timbre_set.lookup(int(source.value))[0].name.replace("_", " ")
    if source.kind == "blend":
        return "+".join(source_name(part, timbre_set) for part in source.parts)
    return Path(source.value).stem


def export_instruments(
    model: TimbreModel,
    presets: Sequence[tuple[str | None, str | TimbreSource | Embedding]],
    out: str | os.PathLike,
    *,
    format: str = "sf2",
    plan: SamplingPlan | None = None,
    timbre_set: str | os.PathLike = DEFAULT_TIMBRE_SET,
    interpolation: str = "slerp",
    batch_size: int = DEFAULT_BATCH_SIZE,
    temperature: float | None = None,
    seed: int = 0,
    progress: bool = False,
) -> ExportResult:
    """Export timbres as sampler instruments.

    Args:
        model: the model that plays the timbres.
        presets: ``(name, source)`` per instrument; a None name is made from the source.
        out: the ``.sf2`` file, or the folder of ``.sfz`` files (format ``"sfz"``).
        format: ``"sf2"`` (all presets in one file) or ``"sfz"``.
        plan: roots, velocity layers and sample length (default: :func:`default_plan`).
        timbre_set: where ``gm:N`` sources find their notes.
        interpolation: how ``blend:`` sources mix (``"slerp"`` or ``"lerp"``).
        batch_size, temperature, seed, progress: see :func:`timbre.export.sampler.render_instruments`.

    Raises:
        ConfigError: bad format, output path, source or plan; AudioError: unreadable source audio.
    """
    started = time.perf_counter()
    _check_output(out, format)
    if not presets:
        raise ConfigError("nothing to export: give at least one timbre source")
    resolver = TimbreResolver(model, TimbreSet(timbre_set), interpolation)
    named = []
    for name, source in presets:
        embedding = resolver.resolve(source)
        if name is None:
            name = embedding.source if isinstance(source, Embedding) else source_name(source, resolver.timbre_set)
        named.append((name, embedding))
    return _export(model, named, out, format, plan, batch_size, temperature, seed, progress, started)


def grid_cells(size: int, weighting: str = "bilinear") -> list[dict[str, Any]]:
    """Position, preset name and corner weights of every cell of a ``size`` x ``size`` grid,
    row by row from the top-left (see :func:`timbre.interpolate.grid_weights`)."""
    weights = interpolate.grid_weights(size, weighting)
    return [
        {
            "row": row, "col": col, "x": col / (size - 1), "y": row / (size - 1),
            "name": f"grid r{row} c{col}",
            "weights": {corner: round(float(w), 6) for corner, w in zip(CORNER_NAMES, weights[row, col])},
        }
        for row in range(size)
        for col in range(size)
    ]  # fmt: skip


def export_grid(
    model: TimbreModel,
    corners: Sequence[str | TimbreSource | Embedding],
    out: str | os.PathLike,
    *,
    size: int = 5,
    format: str = "sf2",
    weighting: str = "bilinear",
    method: str = "lerp",
    plan: SamplingPlan | None = None,
    timbre_set: str | os.PathLike = DEFAULT_TIMBRE_SET,
    batch_size: int = DEFAULT_BATCH_SIZE,
    temperature: float | None = None,
    seed: int = 0,
    progress: bool = False,
) -> ExportResult:
    """Export an NSynth Super style grid: one instrument per cell, plus a JSON map of the cells.

    Cell ``(row, col)`` mixes the four corners (top-left, top-right, bottom-left, bottom-right)
    with :func:`timbre.interpolate.grid_weights` and plays as the preset ``"grid r<row> c<col>"``
    (SF2: bank ``i // 128``, program ``i % 128`` for cell ``i = row * size + col``; SFZ: the file
    ``grid_r<row>_c<col>.sfz``). The map (``<out>.json`` beside an SF2, ``grid.json`` inside an
    SFZ folder) lists every cell's position, weights and preset.

    Args:
        corners: four timbre sources.
        size: cells per side (>= 2).
        weighting: ``"bilinear"`` or ``"distance"`` (NSynth Super's weights).
        method: ``"lerp"`` (NSynth's) or ``"slerp"``: how a cell mixes the corners.
        other arguments: as in :func:`export_instruments`.
    """
    started = time.perf_counter()
    _check_output(out, format)
    if len(corners) != 4:
        raise ConfigError(
            f"a grid needs 4 corner timbres (top-left, top-right, bottom-left, bottom-right), got {len(corners)}"
        )
    cells = grid_cells(size, weighting)
    resolver = TimbreResolver(model, TimbreSet(timbre_set), method)
    corner_embeddings = [resolver.resolve(corner) for corner in corners]
    labels = [str(corner.source if isinstance(corner, Embedding) else corner) for corner in corners]
    named = [
        (
            cell["name"],
            resolver.mix(corner_embeddings, list(cell["weights"].values()), f"grid r{cell['row']} c{cell['col']}"),
        )
        for cell in cells
    ]
    result = _export(model, named, out, format, plan, batch_size, temperature, seed, progress, started)
    out = Path(out)
    for index, (cell, instrument_file) in enumerate(zip(cells, _preset_files(result, format))):
        cell.update({"bank": index // 128, "program": index % 128} if format == "sf2" else {"file": instrument_file})
    grid_map = {
        "format": format,
        **({"file": out.name} if format == "sf2" else {}),
        "size": size,
        "weighting": weighting,
        "method": method,
        "corners": dict(zip(CORNER_NAMES, labels)),
        "gain_db": round(20 * math.log10(result.gain), 3),
        "cells": cells,
    }
    map_path = out.with_suffix(".json") if format == "sf2" else out / "grid.json"
    with atomic_write(map_path, "w") as handle:
        json.dump(grid_map, handle, indent=2)
        handle.write("\n")
    result.files.append(map_path)
    result.bytes += map_path.stat().st_size
    result.grid = cells
    result.seconds = time.perf_counter() - started
    return result


def _export(
    model: TimbreModel,
    named: list[tuple[str, Embedding]],
    out: str | os.PathLike,
    format: str,
    plan: SamplingPlan | None,
    batch_size: int,
    temperature: float | None,
    seed: int,
    progress: bool,
    started: float,
) -> ExportResult:
    plan = plan or default_plan(model)
    instruments = render_instruments(
        model, named, plan, batch_size=batch_size, temperature=temperature, seed=seed, progress=progress
    )
    gain = normalize(instruments, PEAK_DB)
    out = Path(out)
    if format == "sf2":
        sources = "; ".join(f"{i.name} = {i.source}" for i in instruments)
        comment = f"Exported by timbre from model {model.name}. Presets: {sources}"
        files = [write_sf2(out, instruments, out.stem, comment[:65535])]
        size = files[0].stat().st_size
    else:
        files, samples = write_sfz(out, instruments)
        size = sum(path.stat().st_size for path in files + samples)
    return ExportResult(files, instruments, gain, time.perf_counter() - started, size)


def _preset_files(result: ExportResult, format: str) -> list[str]:
    if format == "sf2":
        return [result.files[0].name] * len(result.instruments)
    return [path.name for path in result.files]


def _check_output(out: str | os.PathLike, format: str) -> None:
    if format not in FORMATS:
        raise ConfigError(f"unknown sampler format {format!r}: expected one of {', '.join(FORMATS)}")
    path = Path(out)
    if format == "sf2" and path.is_dir():
        raise ConfigError(f"{path}: is a folder; an SF2 export writes one file, e.g. {path / 'instrument.sf2'}")
    if format == "sfz" and path.suffix.lower() == ".sfz":
        raise ConfigError(
            f"{path}: an SFZ export writes a folder (one .sfz per preset and a samples/ folder), not a file"
        )
    if format == "sfz" and path.exists() and not path.is_dir():
        raise ConfigError(f"{path}: exists and is not a folder")
