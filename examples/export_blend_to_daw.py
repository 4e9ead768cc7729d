"""Take a blended timbre into any DAW: export it as an SF2 and an SFZ instrument, then play a MIDI
file through the SF2 with FluidSynth, as a sampler in a DAW would.

Writes ``<out>/<name>.sf2`` (load it in any SF2 player: FluidSynth, Polyphone, a DAW's sampler),
``<out>/sfz/<name>.sfz`` with its ``samples/`` folder (sfizz, Sforzando, ...), and
``<out>/<midi stem>_through_<name>.wav``. Without ``--midi`` it writes and plays a short melody
over held chords (``<out>/melody.mid``), long notes included, so the sustain loops are heard.

    python examples/export_blend_to_daw.py [--blend blend:gm:73,gm:89:0.7,0.3] [--name "Flute pad"]
        [--midi song.mid] [--keys 36-84] [--model default] [--out DIR]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import symusic

import timbre
from timbre.export import export_instruments, sampling_plan
from timbre.export.sfz import file_stem
from timbre.render.reference import render_fluidsynth

TICKS_PER_QUARTER = 480
# (onset, length) in quarter notes, and the pitches sounding: a melody over two held chords.
MELODY = [(0, 1, 72), (1, 1, 74), (2, 1, 76), (3, 1, 79), (4, 2, 77), (6, 2, 76), (8, 4, 72)]
CHORDS = [(0, 4, (48, 55, 64)), (4, 4, (53, 60, 65)), (8, 4, (48, 55, 64))]


def melody_score() -> symusic.Score:
    """A 12-beat phrase at 90 bpm: a melody, and chords held for a whole bar (2.7 s) each."""
    score = symusic.Score(TICKS_PER_QUARTER)
    score.tempos.append(symusic.Tempo(0, 90.0))
    track = symusic.Track("blend", program=0)
    for onset, length, pitch in MELODY:
        track.notes.append(symusic.Note(onset * TICKS_PER_QUARTER, length * TICKS_PER_QUARTER, pitch, 100))
    for onset, length, pitches in CHORDS:
        for pitch in pitches:
            track.notes.append(symusic.Note(onset * TICKS_PER_QUARTER, length * TICKS_PER_QUARTER, pitch, 70))
    score.tracks.append(track)
    return score


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--blend", default="blend:gm:73,gm:89:0.7,0.3", help="the timbre (any timbre source)")
    parser.add_argument("--name", default="Flute pad", help="preset name")
    parser.add_argument("--midi", help="MIDI file to play (every pitched track plays the blend)")
    parser.add_argument("--keys", default="36-84", help="sampled key range LOW-HIGH")
    parser.add_argument("--model", default="default")
    parser.add_argument("--out", default="out/export_blend_to_daw")
    args = parser.parse_args()

    out = Path(args.out)
    model = timbre.load(args.model)
    low, high = (int(key) for key in args.keys.split("-"))
    plan = sampling_plan(low, high, step=3, velocity_layers=3)
    for format, path in (("sf2", out / f"{file_stem(args.name)}.sf2"), ("sfz", out / "sfz")):
        result = export_instruments(model, [(args.name, args.blend)], path, format=format, plan=plan, progress=True)
        print(
            f"{format}: {result.samples} samples, {result.zones} zones, "
            f"{result.bytes / 1e6:.1f} MB, {result.seconds:.1f} s"
        )
        for file in result.files:
            print(f"wrote {file}")
    soundfont = out / f"{file_stem(args.name)}.sf2"

    if args.midi:
        score, stem = symusic.Score(args.midi), Path(args.midi).stem
    else:
        score, stem = melody_score(), "melody"
        midi_path = out / "melody.mid"
        score.dump_midi(str(midi_path))
        print(f"wrote {midi_path}")
    # The SF2 holds one preset (bank 0, program 0): every pitched track plays it.
    for track in score.tracks:
        track.program = 0
    audio = render_fluidsynth(score, soundfont)
    print(f"wrote {timbre.save_wav(out / f'{stem}_through_{file_stem(args.name)}.wav', audio, model.sample_rate)}")


if __name__ == "__main__":
    main()
