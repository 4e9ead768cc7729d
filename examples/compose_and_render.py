"""Compose a chorale and play its four voices through four learned timbres, then once more with a morph.

Writes under ``--out`` (default ``out/``):

- ``chorale.mid``: a new four-part chorale from the bundled composer (``--style bach`` of a
  many-style composer);
- ``chorale-timbres.wav``: soprano, alto, tenor and bass through flute, clarinet, French horn and
  acoustic bass timbres of the bundled timbre set, encoded and decoded by the bundled model;
- ``chorale-morph.wav``: the same, with the soprano turning from flute into trumpet over the piece;
- ``chorale-fluidsynth.wav``: the same notes through FluidSynth's General MIDI strings, for A/B;
- ``chorale-pianoroll.png`` and ``chorale-rainbowgram.png`` (the first 8 s of the timbre render).

    python examples/compose_and_render.py [--out out] [--bars 8] [--seed 0]
        [--composer PATH] [--model default] [--timbre-set DIR]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

import timbre
from timbre.plots import plot_rainbowgram
from timbre.render import DEFAULT_TIMBRE_SET, TrackNotes, onset_f_measure, read_tracks, render_fluidsynth, render_midi
from timbre.symbolic.compose import compose, load_composer, save_midi

# Timbres of the four voices, highest first (General MIDI programs in the bundled timbre set).
VOICE_TIMBRES = ("gm:73", "gm:71", "gm:60", "gm:32")  # flute, clarinet, French horn, acoustic bass
SOPRANO_MORPH = ("gm:73", "gm:56")  # flute to trumpet
VOICE_NAMES = ("soprano", "alto", "tenor", "bass")
COLOURS = ("tab:red", "tab:orange", "tab:green", "tab:blue")
RAINBOWGRAM_SECONDS = 8.0


def voices_by_register(tracks: list[TrackNotes]) -> list[TrackNotes]:
    """The pitched tracks with notes, highest mean pitch first (soprano, alto, tenor, bass)."""
    voiced = [track for track in tracks if track.notes and not track.is_drum]
    return sorted(voiced, key=lambda track: -np.mean([note.pitch for note in track.notes]))


def plot_piano_roll(voices: list[TrackNotes], path: Path) -> Path:
    """One bar per note, time against MIDI pitch, a colour per voice."""
    figure = Figure(figsize=(10, 4), dpi=100, layout="constrained")
    ax = figure.add_subplot()
    for voice, name, colour in zip(voices, VOICE_NAMES, COLOURS):
        for note in voice.notes:
            ax.broken_barh([(note.onset, note.duration)], (note.pitch - 0.4, 0.8), color=colour)
        ax.plot([], [], color=colour, linewidth=6, label=name)  # a legend entry for the voice
    ax.set(xlabel="time (s)", ylabel="MIDI pitch", title="composed chorale")
    ax.legend(loc="upper right", fontsize="small")
    figure.savefig(path)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("out"), help="output folder (default: out)")
    parser.add_argument("--bars", type=int, default=8, help="bars to compose (default: 8)")
    parser.add_argument("--seed", type=int, default=0, help="random seed of the composer (default: 0)")
    parser.add_argument("--composer", help="composer checkpoint (default: the bundled composer)")
    parser.add_argument("--model", default="default", help="autoencoder (default: the bundled parallel model)")
    parser.add_argument("--timbre-set", type=Path, default=DEFAULT_TIMBRE_SET, help="timbre set (default: bundled)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    composer = load_composer(args.composer)
    # A many-style composer is asked for a four-part Bach chorale; the chorale model writes nothing else.
    style, voice_count = ("bach", 4) if "bach" in composer.styles else (None, None)
    score = compose(composer, bars=args.bars, seed=args.seed, style=style, voices=voice_count)
    midi = save_midi(score, args.out / "chorale.mid")
    voices = voices_by_register(read_tracks(midi))
    if len(voices) > len(VOICE_TIMBRES):
        raise SystemExit(f"{midi}: {len(voices)} voices; this example plays at most {len(VOICE_TIMBRES)}")
    print(f"wrote {midi}: {sum(len(v.notes) for v in voices)} notes in {len(voices)} voices")

    model = timbre.load(args.model)
    timbres = {str(voice.index): source for voice, source in zip(voices, VOICE_TIMBRES)}
    renders = {
        "timbres": render_midi(midi, model, timbres, timbre_set_dir=args.timbre_set),
        "morph": render_midi(
            midi, model, timbres, morphs={str(voices[0].index): list(SOPRANO_MORPH)}, timbre_set_dir=args.timbre_set
        ),
    }
    samples = renders["timbres"].audio.shape[0]
    outputs = {name: result.audio for name, result in renders.items()}
    outputs["fluidsynth"] = render_fluidsynth(midi, samples=samples, sample_rate=model.sample_rate)
    for name, audio in outputs.items():
        path = timbre.save_wav(args.out / f"chorale-{name}.wav", audio, model.sample_rate)
        score = onset_f_measure(audio, midi, sample_rate=model.sample_rate)
        print(f"wrote {path}: {audio.shape[0] / model.sample_rate:.1f} s, onset F-measure {score.f_measure:.3f}")
    result = renders["timbres"]
    print(
        f"timbre render: {result.plan.notes} notes, {result.plan.unique_notes} synthesized, "
        f"{result.wall_seconds:.1f} s ({result.realtime_factor:.1f}x real time)"
    )

    print(f"wrote {plot_piano_roll(voices, args.out / 'chorale-pianoroll.png')}")
    excerpt = result.audio[: round(RAINBOWGRAM_SECONDS * model.sample_rate)]
    rainbowgram = args.out / "chorale-rainbowgram.png"
    plot_rainbowgram(excerpt, rainbowgram, title="chorale through four learned timbres", sample_rate=model.sample_rate)
    print(f"wrote {rainbowgram}")


if __name__ == "__main__":
    main()
