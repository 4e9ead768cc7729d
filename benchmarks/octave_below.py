"""How loud a decoder plays the octave below: partials 0.5 and 1.5 against partial 1, per note.

For every checkpoint (or bundled model) and every note, encodes the note's first 4 s and prints
the decoder's harmonic distribution at partials 0.5, 1.5 and 2.5 against partial 1, in dB,
averaged over control frames 20-300 (the held part), beside the same levels measured on the
note's audio (the largest FFT magnitude within 3% of each partial, 0.1-2.0 s). Drawbar organs
sound an octave below the key (+5 to +11 dB over partial 1 on FluidR3's and MuseScore's); flutes
do not. A model without half-integer partials prints "-" for them.

    python benchmarks/octave_below.py CHECKPOINT_OR_NAME... [--notes WAV:PITCH ...] [--raw]

The default notes come from `timbre evaluate build-testset --out data/eval-timgm6mb` (TimGM6mb)
and `timbre dataset build ... --out data/multi` (the training set; see the README).
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from timbre.hub import resolve
from timbre.models import dsp
from timbre.train.checkpoint import load_model

NOTES = [
    "data/eval-timgm6mb/audio/organ_electronic_000-060-100.wav:60",
    "data/eval-timgm6mb/audio/organ_acoustic_003-060-100.wav:60",
    "data/eval-timgm6mb/audio/flute_acoustic_001-060-100.wav:60",
    "data/multi/nsynth-train/audio/musescore_general_organ_electronic_000-060-100.wav:60",
    "data/multi/nsynth-train/audio/fluidr3_gm_organ_electronic_000-065-127.wav:65",
    "data/multi/nsynth-train/audio/fluidr3_gm_flute_acoustic_000-060-100.wav:60",
]
PARTIALS = (0.5, 1.5, 2.5)


def measured_db(audio: np.ndarray, pitch: int, sample_rate: int) -> list[float]:
    """The audio's partials 0.5, 1.5 and 2.5 against partial 1, in dB (0.1-2.0 s)."""
    held = audio[int(0.1 * sample_rate) : int(2.0 * sample_rate)]
    spectrum = np.abs(np.fft.rfft(held * np.hanning(len(held))))
    hz = np.fft.rfftfreq(len(held), 1 / sample_rate)
    f0 = float(dsp.midi_to_hz(float(pitch)))

    def level(ratio: float) -> float:
        near = (hz > 0.97 * ratio * f0) & (hz < 1.03 * ratio * f0)
        return 20 * math.log10(spectrum[near].max() + 1e-12)

    return [level(ratio) - level(1.0) for ratio in PARTIALS]


def decoded_db(model: torch.nn.Module, audio: np.ndarray, pitch: int) -> list[float | None]:
    """The decoder's partials 0.5, 1.5 and 2.5 against partial 1, in dB (None: it has none)."""
    decoder = model.decoder
    numbers = dsp.partial_numbers(decoder.n_harmonics, getattr(decoder, "n_subharmonics", 0)).tolist()
    with torch.inference_mode():
        z = model.encode(torch.from_numpy(audio[: 4 * 16000])[None], torch.tensor([pitch]))
        distribution = decoder.controls(z, torch.tensor([pitch]))["harmonic_distribution"][0, 20:300].mean(0)
    one = float(distribution[numbers.index(1.0)])
    return [20 * math.log10(float(distribution[numbers.index(r)]) / one) if r in numbers else None for r in PARTIALS]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="+", help="checkpoints, run directories or bundled model names")
    parser.add_argument("--notes", nargs="+", default=NOTES, help="WAV:MIDI_PITCH pairs")
    parser.add_argument("--raw", action="store_true", help="the trained weights, not their moving average")
    args = parser.parse_args()
    torch.set_num_threads(1)
    header = "  ".join(f"{ratio:>5}" for ratio in PARTIALS)
    print(f"{'note':58} {'model':28} {header}   (dB against partial 1)")
    for note in args.notes:
        path, pitch_text = note.rsplit(":", 1)
        audio, sample_rate = sf.read(path, dtype="float32")
        if audio.ndim > 1:
            audio = audio.mean(axis=1)
        pitch = int(pitch_text)
        rows = [("the audio", measured_db(audio, pitch, sample_rate))]
        for name in args.models:
            model, _ = load_model(resolve(name), use_ema=not args.raw)
            rows.append((name, decoded_db(model.eval(), audio, pitch)))
        for label, levels in rows:
            cells = "  ".join("    -" if value is None else f"{value:+5.0f}" for value in levels)
            print(f"{Path(path).stem:58} {label[-28:]:28} {cells}")


if __name__ == "__main__":
    main()
