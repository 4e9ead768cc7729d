"""``timbre dataset from-folder``: notes found in a folder of real recordings, bad files rejected with reasons."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch

from timbre.cli import main as timbre_main
from timbre.data.augment import shift_pitch
from timbre.data.from_folder import STATE_FILE, _PitchTracker, build_from_folder
from timbre.data.nsynth import NoteDataset
from timbre.data.onsets import detect_onsets
from timbre.io.audio import resample
from timbre.io.fluidsynth import render_note


def harmonic_tone(pitch: float, seconds: float, sample_rate: int) -> np.ndarray:
    """``[samples]`` a decaying tone of 8 partials at fractional MIDI ``pitch`` (exact ground truth)."""
    time = np.arange(round(seconds * sample_rate)) / sample_rate
    frequency = 440.0 * 2.0 ** ((pitch - 69.0) / 12.0)
    tone = sum(np.sin(2 * np.pi * k * frequency * time) / k for k in range(1, 9))
    return (0.3 * np.exp(-1.5 * time) * np.minimum(1.0, time / 0.01) * tone).astype(np.float32)


def snapshot(folder: Path) -> dict[str, str]:
    return {
        path.relative_to(folder).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


@pytest.fixture(scope="module")
def recordings(fluidr3_soundfont: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder as a sound designer has it: odd names, subfolders, rates, channels, junk."""
    folder = tmp_path_factory.mktemp("recordings") / "My Flute"
    (folder / "takes").mkdir(parents=True)

    def note(program: int, pitch: int, seconds: float = 1.5) -> np.ndarray:
        return render_note(fluidr3_soundfont, program, pitch, 100, seconds=seconds, hold=seconds * 0.7)

    flute_72 = resample(note(73, 72), 16000, 44100)
    soundfile.write(folder / "Flute C5 (stereo).wav", np.stack([flute_72, 0.8 * flute_72], axis=1), 44100)
    soundfile.write(folder / "takes" / "take 2.flac", resample(note(73, 67), 16000, 22050), 22050)
    soundfile.write(folder / "takes" / "take3.wav", resample(note(0, 55), 16000, 48000), 48000, subtype="FLOAT")
    # Three piano notes in a row, each struck while the previous one decays.
    phrase = np.concatenate([note(0, pitch, seconds=0.7) for pitch in (60, 64, 67)])
    soundfile.write(folder / "phrase.wav", phrase, 16000)
    soundfile.write(folder / "detuned.wav", harmonic_tone(69.3, 1.5, 32000), 32000)
    soundfile.write(folder / "silence.wav", np.zeros(16000, dtype=np.float32), 16000)
    noise = np.random.default_rng(0).standard_normal(24000).astype(np.float32)
    soundfile.write(folder / "noise.wav", 0.2 * noise, 16000)
    clipped = np.clip(4.0 * harmonic_tone(62.0, 1.0, 16000), -1.0, 1.0)
    soundfile.write(folder / "clipped.wav", clipped, 16000)
    (folder / "corrupt.wav").write_bytes(b"RIFF\x10\x00\x00\x00WAVEfmt garbage that is not audio")
    (folder / "notes.txt").write_text("recorded on a Tuesday\n")
    return folder


@pytest.fixture(scope="module")
def built(recordings: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    before = snapshot(recordings)
    out = tmp_path_factory.mktemp("dataset") / "flute"
    code = timbre_main(["dataset", "from-folder", str(recordings), "--out", str(out), "--quiet", "--valid", "0.3"])
    assert code == 0
    return out, before


def examples_of(out: Path) -> dict[str, dict]:
    return {
        name: fields
        for split in ("train", "valid")
        for name, fields in json.loads((out / f"nsynth-{split}" / "examples.json").read_text()).items()
    }


def test_notes_are_found_with_their_pitches(built):
    out, _ = built
    examples = examples_of(out)
    pitches: dict[str, list[int]] = {}
    for fields in examples.values():
        pitches.setdefault(fields["source_file"], []).append(fields["pitch"])
    assert {source: sorted(found) for source, found in pitches.items()} == {
        "Flute C5 (stereo).wav": [72],
        "takes/take 2.flac": [67],
        "takes/take3.wav": [55],
        "phrase.wav": [60, 64, 67],
        "detuned.wav": [69],
    }
    onsets = sorted(fields["source_seconds"] for fields in examples.values() if fields["source_file"] == "phrase.wav")
    assert onsets == pytest.approx([0.0, 0.7, 1.4], abs=0.05)
    detuned = next(fields for fields in examples.values() if fields["source_file"] == "detuned.wav")
    assert detuned["pitch_cents"] == pytest.approx(30.0, abs=10.0)
    assert all(fields["instrument_str"] == "my_flute" and fields["velocity"] == 100 for fields in examples.values())


def test_notes_are_nsynth_notes_that_load(built):
    out, _ = built
    train, valid = NoteDataset(out, "train"), NoteDataset(out, "valid")
    assert len(train) + len(valid) == 7 and len(valid) == 2
    for dataset in (train, valid):
        for index in range(len(dataset)):
            info = soundfile.info(str(dataset.audio_path(index)))
            assert (info.samplerate, info.channels, info.frames) == (16000, 1, 64000)
            audio = dataset[index]["audio"].numpy()
            # The attack is kept at the start; loudness normalised to about -28 dBFS (64 ms RMS).
            assert np.abs(audio[:1600]).max() > 0.02
            frames = np.lib.stride_tricks.sliding_window_view(audio, 1024)[::256]
            loudest = 10 * np.log10(np.mean(frames.astype(np.float64) ** 2, axis=1).max())
            assert -31.0 < loudest < -25.0


def test_bad_files_are_rejected_with_reasons_and_the_folder_is_untouched(built, recordings):
    out, before = built
    report = json.loads((out / "report.json").read_text())
    detail = report["files_detail"]
    assert detail["silence.wav"]["kept"] == [] and detail["silence.wav"]["rejected"][0]["reason"].startswith("silent")
    assert detail["noise.wav"]["kept"] == []
    assert all(r["reason"].startswith("unpitched") for r in detail["noise.wav"]["rejected"])
    assert detail["corrupt.wav"]["rejected"][0]["reason"].startswith("unreadable")
    assert detail["clipped.wav"]["kept"] == [] and detail["clipped.wav"]["rejected"][0]["reason"].startswith("clipped")
    assert report["ignored_files"] == 1 and report["files"] == 9
    markdown = (out / "report.md").read_text()
    assert "corrupt.wav" in markdown and "unpitched" in markdown
    assert (out / "pitch_histogram.png").stat().st_size > 5000
    assert snapshot(recordings) == before


def test_a_rerun_resumes_and_gives_the_same_dataset(built, recordings):
    out, _ = built
    first = examples_of(out)
    summary = build_from_folder(recordings, out, valid=0.3, progress=False)
    assert summary.resumed_files == 9
    assert examples_of(out) == first
    assert json.loads((out / STATE_FILE).read_text())["files"].keys() == {
        "Flute C5 (stereo).wav", "clipped.wav", "corrupt.wav", "detuned.wav", "noise.wav", "phrase.wav",
        "silence.wav", "takes/take 2.flac", "takes/take3.wav",
    }  # fmt: skip


def test_instruments_per_subfolder_relabel_without_a_new_analysis(built, recordings, tmp_path):
    out = tmp_path / "by-folder"
    shutil.copytree(built[0], out)
    summary = build_from_folder(recordings, out, valid=0.3, progress=False, instrument_per_folder=True)
    assert summary.resumed_files == 9
    examples = examples_of(out)
    instruments = {fields["source_file"]: fields["instrument_str"] for fields in examples.values()}
    assert instruments["takes/take 2.flac"] == instruments["takes/take3.wav"] == "takes"
    assert instruments["phrase.wav"] == "my_flute"
    # Each instrument with two notes or more has one held out.
    valid = json.loads((out / "nsynth-valid" / "examples.json").read_text())
    assert {fields["instrument_str"] for fields in valid.values()} == {"takes", "my_flute"}


def test_an_output_inside_the_folder_is_refused(recordings, capsys):
    code = timbre_main(["dataset", "from-folder", str(recordings), "--out", str(recordings / "dataset")])
    assert code == 1
    assert "inside the folder of recordings" in capsys.readouterr().err
    assert not (recordings / "dataset").exists()


def test_shift_pitch_moves_every_partial():
    tone = harmonic_tone(60.0, 1.0, 16000)
    shifted = shift_pitch(tone, 200.0)
    spectrum = np.abs(np.fft.rfft(shifted[:8000] * np.hanning(8000)))
    peak_hz = np.argmax(spectrum) * 16000 / 8000
    assert peak_hz == pytest.approx(440.0 * 2 ** ((62 - 69) / 12), abs=2.0)
    assert len(shifted) == pytest.approx(len(tone) / 2 ** (2 / 12), abs=2)


def test_the_pitch_tracker_gives_pestos_own_pitches_on_the_judged_frames():
    tracker = _PitchTracker(16000)
    windows = np.stack([harmonic_tone(pitch, 1.0, 16000) for pitch in (45.0, 62.5, 81.2)])
    windows[1, 9000:] = 0.0  # a note cut short: its last frames are silent and not judged
    pitch, confidence = tracker(windows)
    with torch.inference_mode():
        own_pitch, own_confidence, _ = tracker.model(
            torch.from_numpy(windows), sr=16000, convert_to_freq=False, return_activations=False
        )
    judged = ~np.isnan(pitch)
    assert judged[0].all() and judged[2].all() and 4 <= (~judged[1]).sum() <= 7
    assert np.array_equal(judged, ~np.isnan(confidence))
    np.testing.assert_allclose(pitch[judged], own_pitch.numpy()[judged], atol=1e-4)
    np.testing.assert_allclose(confidence[judged], own_confidence.numpy()[judged], atol=1e-5)
    medians = [np.median(row[~np.isnan(row)]) for row in pitch]
    assert medians == pytest.approx([45.0, 62.5, 81.2], abs=0.25)


def test_onsets_are_librosas():
    import librosa

    rng = np.random.default_rng(1)
    tones = np.concatenate([harmonic_tone(pitch, 0.6, 16000) for pitch in (50, 57, 62, 69)])
    bursts = (rng.standard_normal(30000) * np.repeat(rng.random(60), 500)).astype(np.float32)
    for audio in (tones, bursts, tones[:2500]):
        envelope = librosa.onset.onset_strength(y=audio, sr=16000, hop_length=256)
        expected = librosa.onset.onset_detect(
            onset_envelope=envelope, sr=16000, hop_length=256, backtrack=True, units="samples"
        )
        assert detect_onsets(audio, 16000, 256).tolist() == expected.tolist()
    # The detector finds the attacks after the first (from-folder starts a file's first note at its first sound).
    assert detect_onsets(tones, 16000, 256).tolist() == pytest.approx([9600, 19200, 28800], abs=512)
