"""Render MIDI through learned timbres, with a FluidSynth reference and an onset metric.

- :mod:`timbre.render.notes`: the notes of a MIDI file per track, in seconds, in a time window;
- :mod:`timbre.render.timbres`: timbre sources (audio, embeddings, blends, the bundled timbre set);
- :mod:`timbre.render.assign`: which timbre, morph and gain each track gets (``--timbre 0=...``);
- :mod:`timbre.render.renderer`: plan, synthesize in batches with a note cache, mix;
- :mod:`timbre.render.reference`: the same notes through FluidSynth and the GM soundfont;
- :mod:`timbre.render.metrics`: onset F-measure of a render against its MIDI.

>>> import timbre
>>> from timbre.render import render_midi
>>> result = render_midi("song.mid", timbre.load(), {"0": "flute.wav", "1": "blend:a.wav,b.wav:0.3,0.7"})
>>> timbre.save_wav("song.wav", result.audio, result.sample_rate)
"""

from timbre.render.assign import TrackAssignment, assign_tracks
from timbre.render.metrics import OnsetScore, detect_onsets, onset_f_measure, reference_onsets
from timbre.render.notes import Note, TrackNotes, read_tracks
from timbre.render.reference import DEFAULT_SOUNDFONT, render_fluidsynth
from timbre.render.renderer import (
    NoteJob,
    RenderPlan,
    RenderResult,
    TrackPlan,
    fold_pitch,
    plan_render,
    render_midi,
    render_plan,
)
from timbre.render.timbres import (
    DEFAULT_TIMBRE_SET,
    BundledTimbre,
    TimbreResolver,
    TimbreSet,
    TimbreSource,
    parse_assignment,
    parse_source,
)

__all__ = [
    "DEFAULT_SOUNDFONT",
    "DEFAULT_TIMBRE_SET",
    "BundledTimbre",
    "Note",
    "NoteJob",
    "OnsetScore",
    "RenderPlan",
    "RenderResult",
    "TimbreResolver",
    "TimbreSet",
    "TimbreSource",
    "TrackNotes",
    "TrackAssignment",
    "TrackPlan",
    "assign_tracks",
    "detect_onsets",
    "fold_pitch",
    "onset_f_measure",
    "parse_assignment",
    "parse_source",
    "plan_render",
    "read_tracks",
    "reference_onsets",
    "render_fluidsynth",
    "render_midi",
    "render_plan",
]
