from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from timbre.data import DataBundle
from timbre.data.nsynth import NoMatchingNotesError, NoteDataset, build_note_bundle, find_split_dir, read_examples
from timbre.errors import ConfigError, DatasetError

from conftest import FIXTURE_SOUNDING_SECONDS

GUITAR = "guitar_electronic_028-060-127"


@pytest.fixture
def nsynth_copy(nsynth_fixture_root, tmp_path):
    """A private copy of the hand-made dataset, for tests that damage it."""
    return shutil.copytree(nsynth_fixture_root, tmp_path / "nsynth")


def test_reads_official_layout_unchanged(nsynth_fixture_root):
    dataset = NoteDataset(nsynth_fixture_root, "valid")
    assert len(dataset) == 4
    assert dataset.instruments == ["bass_synthetic_033", "flute_acoustic_002", "guitar_electronic_028"]
    assert [dataset.note_str(i) for i in range(4)] == sorted(dataset.note_str(i) for i in range(4))

    item = dataset[2]
    assert dataset.note_str(2) == "flute_acoustic_002-069-075"
    assert dataset.examples[2]["qualities_str"] == ["bright", "reverb"]
    assert item["audio"].dtype == torch.float32 and item["audio"].shape == (64000,)
    assert item["pitch"].dtype == torch.long and item["pitch"].shape == ()
    assert (int(item["pitch"]), int(item["velocity"]), int(item["instrument"]), int(item["index"])) == (69, 75, 1, 2)
    # The audio is the note the json describes: a 440 Hz sine for pitch 69.
    spectrum = np.abs(np.fft.rfft(item["audio"].numpy()))
    assert np.fft.rfftfreq(64000, 1 / 16000)[spectrum.argmax()] == pytest.approx(440.0, abs=1.0)


def test_find_split_dir_layouts(nsynth_fixture_root, tmp_path):
    split_dir = nsynth_fixture_root / "nsynth-valid"
    assert find_split_dir(nsynth_fixture_root, "valid") == split_dir
    assert find_split_dir(split_dir, "anything") == split_dir
    shutil.copytree(split_dir, tmp_path / "valid")
    assert find_split_dir(tmp_path, "valid") == tmp_path / "valid"
    with pytest.raises(DatasetError, match="no examples.json for split 'train'"):
        find_split_dir(nsynth_fixture_root, "train")
    with pytest.raises(DatasetError, match="does not exist"):
        find_split_dir(tmp_path / "nowhere", "train")


@pytest.mark.parametrize(
    "filters,expected",
    [
        ({"families": ["bass"]}, ["bass_synthetic_033-022-050", "bass_synthetic_033-045-100"]),
        ({"sources": ["acoustic", "electronic"]}, ["flute_acoustic_002-069-075", GUITAR]),
        ({"instruments": ["flute_acoustic_002"]}, ["flute_acoustic_002-069-075"]),
        ({"pitch_range": (45, 69)}, ["bass_synthetic_033-045-100", "flute_acoustic_002-069-075", GUITAR]),
        ({"velocities": [50, 127]}, ["bass_synthetic_033-022-050", GUITAR]),
        ({"families": ["bass"], "velocities": [100]}, ["bass_synthetic_033-045-100"]),
    ],
)
def test_filters(nsynth_fixture_root, filters, expected):
    dataset = NoteDataset(nsynth_fixture_root, "valid", **filters)
    assert [dataset.note_str(i) for i in range(len(dataset))] == expected
    # Instrument ids are dense over what is left after filtering.
    assert sorted({int(dataset[i]["instrument"]) for i in range(len(dataset))}) == list(range(len(dataset.instruments)))


def test_bad_filters(nsynth_fixture_root):
    with pytest.raises(ConfigError, match="families: unknown value"):
        NoteDataset(nsynth_fixture_root, "valid", families=["guitars"])
    with pytest.raises(ConfigError, match="pitch_range"):
        NoteDataset(nsynth_fixture_root, "valid", pitch_range=(70, 60))
    with pytest.raises(NoMatchingNotesError, match="none of its 4 notes pass the filters"):
        NoteDataset(nsynth_fixture_root, "valid", families=["vocal"])


def test_missing_examples_json(tmp_path):
    (tmp_path / "nsynth-train" / "audio").mkdir(parents=True)
    with pytest.raises(DatasetError, match="no examples.json"):
        NoteDataset(tmp_path, "train")


def test_corrupt_examples_json(nsynth_copy):
    (nsynth_copy / "nsynth-valid" / "examples.json").write_text('{"a": ')
    with pytest.raises(DatasetError, match="examples.json: not valid JSON"):
        NoteDataset(nsynth_copy, "valid")


def test_missing_field_and_missing_wav(nsynth_copy):
    split_dir = nsynth_copy / "nsynth-valid"
    (split_dir / "audio" / f"{GUITAR}.wav").unlink()
    with pytest.raises(DatasetError, match=f"1 of 4 notes .* have no wav file \\(first: {GUITAR}.wav\\)"):
        read_examples(split_dir)
    examples = json.loads((split_dir / "examples.json").read_text())
    del examples[GUITAR]
    del examples["flute_acoustic_002-069-075"]["pitch"]
    (split_dir / "examples.json").write_text(json.dumps(examples))
    with pytest.raises(DatasetError, match="note 'flute_acoustic_002-069-075' lacks field\\(s\\) pitch"):
        read_examples(split_dir)


def test_crops_are_on_the_hop_grid_and_stay_in_the_sounding_part(nsynth_fixture_root):
    dataset = NoteDataset(nsynth_fixture_root, "valid", crop_samples=4096, crop_hop=256, seed=1)
    guitar = [example["note_str"] for example in dataset.examples].index(GUITAR)
    full = NoteDataset(nsynth_fixture_root, "valid")[guitar]["audio"].numpy()
    sound_end = int(FIXTURE_SOUNDING_SECONDS[GUITAR] * 16000)
    starts = {dataset.crop_start(guitar, full) for _ in range(100)}
    assert all(start % 256 == 0 and start + 4096 <= sound_end for start in starts)
    assert len(starts) > 5  # random, not stuck
    # Without the silence rule crops may reach into the silent tail.
    anywhere = NoteDataset(nsynth_fixture_root, "valid", crop_samples=4096, silence_db=None)
    assert max(anywhere.crop_start(guitar, full) for _ in range(100)) + 4096 > sound_end


def test_crop_is_the_slice_at_its_start(nsynth_fixture_root):
    dataset = NoteDataset(nsynth_fixture_root, "valid", crop_samples=4096, crop_hop=64, deterministic_crops=True)
    full = NoteDataset(nsynth_fixture_root, "valid")
    for index in range(len(dataset)):
        whole = full[index]["audio"]
        start = dataset.crop_start(index, whole.numpy())
        assert torch.equal(dataset[index]["audio"], whole[start : start + 4096])


def test_random_crops_follow_torch_global_rng(nsynth_fixture_root):
    dataset = NoteDataset(nsynth_fixture_root, "valid", crop_samples=1024)

    def draws(seed):
        torch.manual_seed(seed)
        return torch.stack([dataset[i % 4]["audio"] for i in range(8)])

    assert torch.equal(draws(3), draws(3))
    assert not torch.equal(draws(3), draws(4))


def test_deterministic_crops_repeat_every_epoch(nsynth_fixture_root):
    first = NoteDataset(nsynth_fixture_root, "valid", crop_samples=2048, deterministic_crops=True)
    second = NoteDataset(nsynth_fixture_root, "valid", crop_samples=2048, deterministic_crops=True)
    for index in range(len(first)):
        assert torch.equal(first[index]["audio"], first[index]["audio"])
        assert torch.equal(first[index]["audio"], second[index]["audio"])
    full = NoteDataset(nsynth_fixture_root, "valid")
    starts = [first.crop_start(i, full[i]["audio"].numpy()) for i in range(len(first))]
    assert len(set(starts)) > 1


def test_workers_draw_different_crops(nsynth_fixture_root):
    dataset = NoteDataset(nsynth_fixture_root, "valid", families=["bass"], crop_samples=512)

    def crops():
        generator = torch.Generator().manual_seed(0)
        loader = DataLoader(dataset, batch_size=1, num_workers=2, sampler=[0] * 4, generator=generator)
        return [batch["audio"][0] for batch in loader]

    first = crops()
    # Samplers hand items to workers round-robin: items 0 and 1 come from different workers.
    assert not torch.equal(first[0], first[1])
    assert all(torch.equal(a, b) for a, b in zip(first, crops()))


def test_crop_longer_than_note_is_zero_padded(tmp_path):
    from timbre.io.audio import save_wav

    split_dir = tmp_path / "nsynth-train"
    fields = {
        "pitch": 60,
        "velocity": 100,
        "instrument_str": "x_acoustic_000",
        "instrument_family_str": "keyboard",
        "instrument_source_str": "acoustic",
    }
    (split_dir / "audio").mkdir(parents=True)
    (split_dir / "examples.json").write_text(json.dumps({"x_acoustic_000-060-100": fields}))
    save_wav(split_dir / "audio" / "x_acoustic_000-060-100.wav", np.full(100, 0.5, dtype=np.float32))
    audio = NoteDataset(tmp_path, "train", crop_samples=300)[0]["audio"]
    assert audio.shape == (300,) and torch.all(audio[:100] > 0.49) and torch.all(audio[100:] == 0)


def test_indexes_ten_thousand_notes(tmp_path):
    # Correctness at scale only; the speed is measured by benchmarks/nsynth_index_speed.py.
    split_dir = tmp_path / "nsynth-train"
    (split_dir / "audio").mkdir(parents=True)
    examples = {}
    for number in range(10_000):
        instrument = f"string_acoustic_{number // 440:03d}"
        note_str = f"{instrument}-{21 + number % 88:03d}-{(25, 50, 75, 100, 127)[number // 88 % 5]:03d}"
        examples[note_str] = {
            "note": number,
            "note_str": note_str,
            "instrument": number // 440,
            "instrument_str": instrument,
            "pitch": 21 + number % 88,
            "velocity": 100,
            "sample_rate": 16000,
            "qualities": [0] * 10,
            "qualities_str": [],
            "instrument_family": 8,
            "instrument_family_str": "string",
            "instrument_source": 0,
            "instrument_source_str": "acoustic",
        }
        (split_dir / "audio" / f"{note_str}.wav").touch()
    (split_dir / "examples.json").write_text(json.dumps(examples))

    dataset = NoteDataset(tmp_path, "train", pitch_range=(21, 108))
    assert len(dataset) == 10_000 and len(dataset.instruments) == 23
    assert [dataset.note_str(i) for i in (0, 9_999)] == sorted(examples)[::9_999]
    octave = NoteDataset(tmp_path, "train", pitch_range=(60, 71))  # both ends included
    assert len(octave) == sum(60 <= fields["pitch"] <= 71 for fields in examples.values()) == 1368


def test_build_note_bundle(nsynth_fixture_root, tmp_path):
    shutil.copytree(nsynth_fixture_root / "nsynth-valid", tmp_path / "nsynth-train")
    shutil.copytree(nsynth_fixture_root / "nsynth-valid", tmp_path / "nsynth-valid")
    bundle = build_note_bundle(tmp_path, crop_samples=1024, valid_crop_samples=2048, families=["bass", "flute"])
    assert isinstance(bundle, DataBundle)
    assert len(bundle.train) == 3 and bundle.train[0]["audio"].shape == (1024,)
    assert bundle.valid.deterministic_crops and bundle.valid[0]["audio"].shape == (2048,)
    assert not bundle.train.deterministic_crops

    # A split directory alone has no validation set; so has a filter that empties valid.
    assert build_note_bundle(tmp_path / "nsynth-train", crop_samples=None).valid is None
    (tmp_path / "nsynth-valid" / "examples.json").write_text(json.dumps({}))
    with pytest.warns(UserWarning, match="no validation set"):
        assert build_note_bundle(tmp_path, crop_samples=1024).valid is None


def test_reads_the_builders_output(fluidr3_dataset):
    bundle = build_note_bundle(fluidr3_dataset, crop_samples=6144)
    test_split = NoteDataset(fluidr3_dataset, "test")
    splits = [bundle.train, bundle.valid, test_split]
    assert [len(split) for split in splits] == [3, 3, 3]
    for split in splits:
        for index in range(len(split)):
            item = split[index]
            assert int(item["pitch"]) == split.examples[index]["pitch"] and int(item["velocity"]) == 100
    assert test_split[0]["audio"].shape == (64000,) and bundle.train[0]["audio"].shape == (6144,)
    # Crops avoid the silence: every training crop has sound in it.
    assert all(float(bundle.train[i]["audio"].abs().max()) > 1e-3 for i in range(3))
