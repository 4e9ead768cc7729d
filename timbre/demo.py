"""The main job (``timbre demo`` / ``make demo``): the whole product on the bundled models.

Steps, each writing WAVs and pictures under the output directory:

1. ``reconstructions/``: bundled instrument notes encoded and decoded (original above, decoded below);
2. ``sweep/``: an interpolation sweep flute → trumpet (slerp), and the crossfade baseline;
3. ``grid/``: a 3×3 NSynth-Super-style grid between four instruments;
4. ``morph.wav``: one note turning from flute into cello;
5. ``chorale.mid`` / ``chorale.wav``: a chorale composed by the bundled composer, its four voices
   played by four learned timbres, and ``chorale_morph.wav`` with the top voice morphing; with a
   many-style composer (the default) also ``palestrina.mid`` / ``.wav`` and ``irish.mid`` / ``.wav``,
   each played by the learned timbres of its style's instruments (choir and organ, fiddle).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from timbre.data.timbre_set import load_timbre_index
from timbre.hub import load
from timbre.io.audio import load_audio, save_wav
from timbre.sound_design import interpolation_sweep, morph_note, timbre_grid, write_notes

if TYPE_CHECKING:
    from timbre.symbolic.compose import LoadedComposer

# GM programs of the bundled timbre set used by the demo.
FLUTE, TRUMPET, CELLO, ORGAN, CLARINET, HORN, PIANO = 73, 56, 42, 19, 71, 60, 0
# The chorale's four voices (soprano, alto, tenor, bass) and the timbre each plays.
CHORALE_TIMBRES = {"0": f"gm:{FLUTE}", "1": f"gm:{CLARINET}", "2": f"gm:{HORN}", "3": f"gm:{CELLO}"}
# What a many-style composer writes besides the chorale ("bach"): (style, voices).
OTHER_STYLES = (("palestrina", 4), ("irish", 1))


def run_demo(
    out: str | Path,
    model: str = "default",
    composer: str | None = None,
    bars: int = 8,
    seed: int = 0,
    say: Callable[[str], None] = print,
) -> list[Path]:
    """Run every step of the demo into ``out``; returns the files written."""
    from timbre.plots import plot_grid, plot_rainbowgram, plot_spectrogram
    from timbre.symbolic.compose import load_composer

    out = Path(out)
    started = time.perf_counter()
    loaded_composer = load_composer(composer)  # first: a missing checkpoint ends the demo before any work
    timbre_model = load(model)
    say(f"model: {timbre_model}")
    notes = {entry["program"]: entry for entry in load_timbre_index()}
    path = {program: notes[program]["path"] for program in notes}
    written: list[Path] = []

    say("1/5 encoding and decoding the bundled instrument notes")
    programs = [FLUTE, TRUMPET, CELLO, ORGAN, PIANO]
    originals = [load_audio(path[p]) for p in programs]
    embeddings = [timbre_model.encode(path[p], pitch=60, velocity=100) for p in programs]
    decoded = timbre_model.synthesize_batch(embeddings, [60] * len(programs), seconds=[4.0] * len(programs), seed=seed)
    names = [notes[p]["file"].removesuffix(".wav") for p in programs]
    written += write_notes(out / "reconstructions", list(decoded), names, timbre_model.sample_rate)
    written.append(plot_grid([originals, list(decoded)], out / "reconstructions" / "original_vs_decoded.png"))

    say("2/5 interpolation sweep flute -> trumpet (slerp) and the crossfade baseline")
    for method in ("slerp", "crossfade"):
        audio, mixes = interpolation_sweep(
            timbre_model, embeddings[0], embeddings[1], steps=7, pitch=60, seconds=4.0, method=method, seed=seed
        )
        labels = [f"{method} {m:.2f}" for m in mixes]
        step_names = [f"{method}_{i:02d}_mix_{m:.2f}" for i, m in enumerate(mixes)]
        written += write_notes(
            out / "sweep", list(audio), step_names, timbre_model.sample_rate, f"sweep_{method}.png", labels
        )

    say("3/5 3x3 grid between flute, trumpet, cello and organ")
    grid = timbre_grid(timbre_model, embeddings[:4], size=3, pitch=60, seconds=4.0, seed=seed)
    for row in range(3):
        for col in range(3):
            written.append(save_wav(out / "grid" / f"grid_r{row}_c{col}.wav", grid[row, col], timbre_model.sample_rate))
    written.append(plot_grid([list(row) for row in grid], out / "grid" / "grid.png"))

    say("4/5 morph flute -> cello over one note")
    morph = morph_note(timbre_model, embeddings[0], embeddings[2], pitch=55, seconds=4.0, curve="ease", seed=seed)
    written.append(save_wav(out / "morph.wav", morph, timbre_model.sample_rate))
    plot_rainbowgram(morph, out / "morph.png", title="morph flute -> cello")
    written.append(out / "morph.png")

    say(f"5/5 composing {bars}-bar pieces and rendering them through learned timbres")
    written += compose_and_render(timbre_model, out, loaded_composer, bars, seed, say)
    plot_spectrogram(load_audio(out / "chorale.wav"), out / "chorale.png", title="chorale rendered by timbre")
    written.append(out / "chorale.png")

    say(f"done in {time.perf_counter() - started:.0f} s; wrote {len(written)} files under {out}:")
    for file in written:
        say(f"  {file}")
    return written


def compose_and_render(
    model, out: Path, composer: LoadedComposer, bars: int, seed: int, say: Callable[[str], None]
) -> list[Path]:
    """Compose a chorale, render it with four timbres, then with its top voice morphing; a
    many-style composer also writes :data:`OTHER_STYLES`, each through its style's own timbres."""
    from timbre.render import render_midi
    from timbre.symbolic.compose import compose, save_midi

    many_styles = "bach" in composer.styles
    style, voices = ("bach", 4) if many_styles else (None, None)
    chorale = compose(composer, bars=bars, seed=seed, style=style, voices=voices)
    midi = save_midi(chorale, out / "chorale.mid")
    written = [midi]
    result = render_midi(midi, model, CHORALE_TIMBRES, seed=seed)
    written.append(save_wav(out / "chorale.wav", result.audio, result.sample_rate))
    say(f"    chorale: {result.seconds:.1f} s of music rendered {result.realtime_factor:.1f}x faster than real time")
    morphing = render_midi(midi, model, CHORALE_TIMBRES, morphs={"0": [f"gm:{FLUTE}", f"gm:{TRUMPET}"]}, seed=seed)
    written.append(save_wav(out / "chorale_morph.wav", morphing.audio, morphing.sample_rate))
    for style, voices in OTHER_STYLES if many_styles else ():
        midi = save_midi(compose(composer, bars=bars, seed=seed, style=style, voices=voices), out / f"{style}.mid")
        result = render_midi(midi, model, seed=seed)  # each program through its own learned timbre
        written += [midi, save_wav(out / f"{style}.wav", result.audio, result.sample_rate)]
        count = len(result.plan.tracks)
        say(f"    {style}: {result.seconds:.1f} s of music in {count} voice{'s' if count > 1 else ''}")
    return written
