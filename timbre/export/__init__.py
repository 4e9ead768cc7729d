"""Sampler instruments from learned timbres: SFZ and SF2 files that any DAW sampler plays.

A timbre becomes a multi-sampled instrument (:mod:`~timbre.export.plan`): notes synthesized every
few semitones in several velocity layers (:mod:`~timbre.export.sampler`), each looped where its
sustain's waveform and spectrum match (:mod:`~timbre.export.loop`), written as SFZ text plus WAVs
(:mod:`~timbre.export.sfz`) or one SF2 file (:mod:`~timbre.export.sf2`). :mod:`~timbre.export.packs`
exports several timbres, or an NSynth Super style grid of them, in one go.

Example::

    import timbre
    from timbre.export import export_instruments

    model = timbre.load()
    export_instruments(model, [("flute", "gm:73"), ("warm", "blend:gm:73,gm:89:0.7,0.3")], "mine.sf2")
"""

from timbre.export.loop import Loop, crossfade_loop, find_loop
from timbre.export.packs import ExportResult, export_grid, export_instruments, grid_cells, model_pitch_range
from timbre.export.plan import KeyZone, SamplingPlan, VelocityLayer, sampling_plan
from timbre.export.sampler import Instrument, Sample, Zone, normalize, render_instruments
from timbre.export.sf2 import write_sf2
from timbre.export.sfz import write_sfz

__all__ = [
    "ExportResult", "Instrument", "KeyZone", "Loop", "Sample", "SamplingPlan", "VelocityLayer", "Zone",
    "crossfade_loop", "export_grid", "export_instruments", "find_loop", "grid_cells", "model_pitch_range",
    "normalize", "render_instruments", "sampling_plan", "write_sf2", "write_sfz",
]  # fmt: skip
