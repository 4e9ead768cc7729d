"""Notes in NSynth's json+wav layout: reading, filtering, and a torch ``Dataset``.

A split directory holds ``examples.json`` (a mapping ``note_str -> fields``) and
``audio/<note_str>.wav``, exactly as in the official NSynth download and as
:mod:`timbre.data.soundfont` writes it. A dataset root holds one directory per split,
``nsynth-train/``, ``nsynth-valid/``, ``nsynth-test/`` (``train/`` etc. are accepted too).

Crops. :class:`NoteDataset` can yield whole notes or crops of ``crop_samples``. A crop never
reaches past the point where the note has decayed into silence (the last sample within
``silence_db`` of the note's peak), so short, percussive notes do not give crops of nothing;
notes shorter than the crop start at 0 and are zero-padded. Crop starts are multiples of
``crop_hop``. Random crops draw from torch's global RNG: the trainer seeds it for every step
(so resumed runs replay the same crops) and DataLoader seeds it differently in every worker.
Deterministic crops (for evaluation) hash ``seed`` and the note's name: the same crop every
epoch, in every process.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from timbre.data import DataBundle
from timbre.data.equalizer import random_equalizer
from timbre.data.families import NSYNTH_FAMILIES, NSYNTH_SOURCES
from timbre.data.half_partials import remove_half_integer_partials
from timbre.errors import ConfigError, DatasetError
from timbre.io.audio import SAMPLE_RATE, load_audio

EXAMPLES_FILE = "examples.json"
AUDIO_DIR = "audio"
SPLITS = ("train", "valid", "test")
# Fields every note must have; the others NSynth defines (qualities, ids) are kept but optional.
REQUIRED_FIELDS = ("pitch", "velocity", "instrument_str", "instrument_family_str", "instrument_source_str")


class NoMatchingNotesError(DatasetError):
    """A split has notes, but none pass the filters."""


def find_split_dir(root: str | os.PathLike, split: str) -> Path:
    """The directory holding ``examples.json`` for ``split``.

    Args:
        root: a split directory itself (it contains ``examples.json``), or a dataset root
            containing ``nsynth-<split>/`` or ``<split>/``.
        split: ``"train"``, ``"valid"`` or ``"test"`` (any name works for a custom layout).

    Raises:
        DatasetError: none of these exist.
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: dataset directory does not exist")
    candidates = (root, root / f"nsynth-{split}", root / split)
    for candidate in candidates:
        if (candidate / EXAMPLES_FILE).is_file():
            return candidate
    raise DatasetError(
        f"{root}: no {EXAMPLES_FILE} for split '{split}' "
        f"(looked in {', '.join(str(candidate) for candidate in candidates)})"
    )


def read_examples(split_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """Read and check ``examples.json`` of a split directory.

    Returns:
        One dict per note, the fields as stored plus ``note_str``, sorted by ``note_str``.

    Raises:
        DatasetError: the file is missing or malformed, a note lacks a required field,
            or a note's wav file is missing.
    """
    split_dir = Path(split_dir)
    examples_path = split_dir / EXAMPLES_FILE
    try:
        with open(examples_path, encoding="utf-8") as file:
            raw = json.load(file)
    except FileNotFoundError as error:
        raise DatasetError(f"{examples_path}: file not found") from error
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise DatasetError(f"{examples_path}: not valid JSON ({error})") from error
    if not isinstance(raw, dict):
        raise DatasetError(f"{examples_path}: expected a JSON object mapping note names to fields")

    examples = []
    for note_str, fields in sorted(raw.items()):
        if not isinstance(fields, dict):
            raise DatasetError(f"{examples_path}: note '{note_str}' is not a JSON object")
        missing = [name for name in REQUIRED_FIELDS if name not in fields]
        if missing:
            raise DatasetError(f"{examples_path}: note '{note_str}' lacks field(s) {', '.join(missing)}")
        examples.append({**fields, "note_str": note_str})

    # One directory listing instead of a stat per note keeps indexing fast on large splits.
    audio_dir = split_dir / AUDIO_DIR
    present = set(os.listdir(audio_dir)) if audio_dir.is_dir() else set()
    missing_audio = [example["note_str"] for example in examples if f"{example['note_str']}.wav" not in present]
    if missing_audio:
        raise DatasetError(
            f"{audio_dir}: {len(missing_audio)} of {len(examples)} notes in {EXAMPLES_FILE} have no wav file "
            f"(first: {missing_audio[0]}.wav)"
        )
    return examples


def _check_vocabulary(name: str, values: Iterable[str] | None, vocabulary: Sequence[str]) -> set[str] | None:
    if values is None:
        return None
    chosen = {str(value) for value in values}
    unknown = sorted(chosen - set(vocabulary))
    if unknown:
        raise ConfigError(f"{name}: unknown value(s) {', '.join(unknown)}; choose from {', '.join(vocabulary)}")
    return chosen


def filter_examples(
    examples: Iterable[dict[str, Any]],
    families: Iterable[str] | None = None,
    sources: Iterable[str] | None = None,
    instruments: Iterable[str] | None = None,
    pitch_range: Sequence[int] | None = None,
    velocities: Iterable[int] | None = None,
) -> list[dict[str, Any]]:
    """Keep the notes matching every given filter (None means no filter).

    Args:
        examples: notes as returned by :func:`read_examples`.
        families: NSynth family names, e.g. ``["flute", "string"]``.
        sources: ``"acoustic"``, ``"electronic"``, ``"synthetic"``.
        instruments: instrument names (``instrument_str``), e.g. ``["guitar_acoustic_010"]``.
        pitch_range: ``(lowest, highest)`` MIDI pitch, both inclusive.
        velocities: MIDI velocities to keep.
    """
    family_set = _check_vocabulary("families", families, NSYNTH_FAMILIES)
    source_set = _check_vocabulary("sources", sources, NSYNTH_SOURCES)
    instrument_set = None if instruments is None else {str(name) for name in instruments}
    velocity_set = None if velocities is None else {int(velocity) for velocity in velocities}
    if pitch_range is not None:
        bounds = [int(pitch) for pitch in pitch_range]
        if len(bounds) != 2 or bounds[0] > bounds[1]:
            raise ConfigError(
                f"pitch_range: expected (lowest, highest) with lowest <= highest, got {list(pitch_range)}"
            )
        low, high = bounds

    def keep(example: dict[str, Any]) -> bool:
        return (
            (family_set is None or example["instrument_family_str"] in family_set)
            and (source_set is None or example["instrument_source_str"] in source_set)
            and (instrument_set is None or example["instrument_str"] in instrument_set)
            and (pitch_range is None or low <= int(example["pitch"]) <= high)
            and (velocity_set is None or int(example["velocity"]) in velocity_set)
        )

    return [example for example in examples if keep(example)]


def _stable_hash(*parts: object) -> int:
    """A hash that, unlike ``hash()``, is the same in every process and Python run."""
    digest = hashlib.blake2b(":".join(str(part) for part in parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little")


class NoteDataset(Dataset):
    """Notes of one split of an NSynth-layout dataset.

    Each item is a dict:

    - ``"audio"``: FloatTensor ``[samples]`` (``crop_samples`` when cropping, else the whole note);
    - ``"pitch"``, ``"velocity"``: LongTensor ``[]``, MIDI values;
    - ``"instrument"``: LongTensor ``[]``, dense id within this dataset (index into
      :attr:`instruments`, the sorted names of the instruments left after filtering);
    - ``"index"``: LongTensor ``[]``, the item's index (see :attr:`examples`, :meth:`note_str`).

    Args:
        root: dataset root or split directory (see :func:`find_split_dir`).
        split: which split to read.
        crop_samples: crop length; None yields whole notes.
        deterministic_crops: derive each crop from ``seed`` and the note name instead of drawing it.
        seed: seed of deterministic crops.
        families, sources, instruments, pitch_range, velocities: filters, see :func:`filter_examples`.
        sample_rate: rate of the yielded audio; files at other rates are resampled.
        crop_hop: crop starts are multiples of this many samples.
        silence_db: a crop ends no later than the last sample within this many dB of the note's
            peak (negative); None lets crops reach the end of the note.
        equalizer_db: largest boost or cut of the random equaliser
            (:func:`timbre.data.equalizer.random_equalizer`) applied to drawn items; 0 disables it.
            Never applied with ``deterministic_crops`` (validation).
        equalizer_probability: chance that a drawn item is equalised.
        half_partial_removal: chance that a drawn item loses some of its partials at 0.5, 1.5,
            ... times its pitch, each with probability 1/2
            (:func:`timbre.data.half_partials.remove_half_integer_partials`), before any
            equalising; never with ``deterministic_crops``.
        half_partial_count: how many half-integer partials are removed (the decoder's
            ``n_subharmonics``).

    Raises:
        DatasetError: the split is missing or malformed.
        NoMatchingNotesError: no note passes the filters.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        split: str = "train",
        crop_samples: int | None = None,
        deterministic_crops: bool = False,
        seed: int = 0,
        families: Iterable[str] | None = None,
        sources: Iterable[str] | None = None,
        instruments: Iterable[str] | None = None,
        pitch_range: Sequence[int] | None = None,
        velocities: Iterable[int] | None = None,
        sample_rate: int = SAMPLE_RATE,
        crop_hop: int = 1,
        silence_db: float | None = -60.0,
        equalizer_db: float = 0.0,
        equalizer_probability: float = 0.5,
        half_partial_removal: float = 0.0,
        half_partial_count: int = 8,
    ) -> None:
        if equalizer_db < 0 or not 0.0 <= equalizer_probability <= 1.0:
            raise ConfigError(
                f"equalizer_db must be >= 0 and equalizer_probability in [0, 1], got {equalizer_db} "
                f"and {equalizer_probability}"
            )
        if not 0.0 <= half_partial_removal <= 1.0 or half_partial_count < 1:
            raise ConfigError(
                f"half_partial_removal must be in [0, 1] and half_partial_count >= 1, got {half_partial_removal} "
                f"and {half_partial_count}"
            )
        if crop_samples is not None and crop_samples <= 0:
            raise ConfigError(f"crop_samples must be positive or None, got {crop_samples}")
        if crop_hop <= 0:
            raise ConfigError(f"crop_hop must be positive, got {crop_hop}")
        self.split_dir = find_split_dir(root, split)
        self.split = split
        every_note = read_examples(self.split_dir)
        self.examples = filter_examples(every_note, families, sources, instruments, pitch_range, velocities)
        if not self.examples:
            raise NoMatchingNotesError(
                f"{self.split_dir}: none of its {len(every_note)} notes pass the filters "
                f"(families={families}, sources={sources}, instruments={instruments}, "
                f"pitch_range={pitch_range}, velocities={velocities})"
            )
        self.instruments = sorted({example["instrument_str"] for example in self.examples})
        self._instrument_ids = {name: index for index, name in enumerate(self.instruments)}
        self.crop_samples = crop_samples
        self.deterministic_crops = deterministic_crops
        self.seed = seed
        self.sample_rate = sample_rate
        self.crop_hop = crop_hop
        self.silence_db = silence_db
        self.equalizer_db = 0.0 if deterministic_crops else float(equalizer_db)
        self.equalizer_probability = float(equalizer_probability)
        self.half_partial_removal = 0.0 if deterministic_crops else float(half_partial_removal)
        self.half_partial_count = int(half_partial_count)

    def __len__(self) -> int:
        return len(self.examples)

    def note_str(self, index: int) -> str:
        """Name of note ``index``, e.g. ``"flute_synthetic_000-060-100"``."""
        return self.examples[index]["note_str"]

    def audio_path(self, index: int) -> Path:
        """The wav file of note ``index``."""
        return self.split_dir / AUDIO_DIR / f"{self.note_str(index)}.wav"

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        example = self.examples[index]
        audio = load_audio(self.audio_path(index), self.sample_rate)
        if self.crop_samples is not None:
            audio = self._crop(index, audio)
        # No draw when off, so that runs without it replay the equaliser's draws as before.
        if self.half_partial_removal and float(torch.rand(())) < self.half_partial_removal:
            fundamental_hz = 440.0 * 2.0 ** ((int(example["pitch"]) - 69) / 12.0)
            # Each partial on its own: an organ with a 16' stop and no 5 1/3' must occur.
            removed = (torch.rand(self.half_partial_count) < 0.5).tolist()
            audio = remove_half_integer_partials(
                audio, self.sample_rate, fundamental_hz, self.half_partial_count, removed
            )
        if self.equalizer_db and float(torch.rand(())) < self.equalizer_probability:
            audio = random_equalizer(audio, self.sample_rate, self.equalizer_db)
        return {
            "audio": torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32)),
            "pitch": torch.tensor(int(example["pitch"]), dtype=torch.long),
            "velocity": torch.tensor(int(example["velocity"]), dtype=torch.long),
            "instrument": torch.tensor(self._instrument_ids[example["instrument_str"]], dtype=torch.long),
            "index": torch.tensor(index, dtype=torch.long),
        }

    def crop_start(self, index: int, audio: np.ndarray) -> int:
        """Where the crop of note ``index`` (waveform ``audio`` ``[samples]``) begins."""
        assert self.crop_samples is not None, "crop_start needs crop_samples"
        last_start = max(0, audio.shape[0] - self.crop_samples)
        if self.silence_db is not None:
            magnitude = np.abs(audio)
            threshold = magnitude.max(initial=0.0) * 10.0 ** (self.silence_db / 20.0)
            sounding = np.flatnonzero(magnitude > threshold)
            sound_end = int(sounding[-1]) + 1 if sounding.size else 0
            last_start = min(last_start, max(0, sound_end - self.crop_samples))
        choices = last_start // self.crop_hop + 1
        if self.deterministic_crops:
            choice = _stable_hash(self.seed, self.note_str(index)) % choices
        else:
            # torch's global RNG: the trainer seeds it per step (exact resumption) and DataLoader
            # seeds it differently in every worker.
            choice = int(torch.randint(choices, (1,)))
        return choice * self.crop_hop

    def _crop(self, index: int, audio: np.ndarray) -> np.ndarray:
        assert self.crop_samples is not None, "_crop needs crop_samples"
        start = self.crop_start(index, audio)
        crop = audio[start : start + self.crop_samples]
        if crop.shape[0] < self.crop_samples:
            crop = np.pad(crop, (0, self.crop_samples - crop.shape[0]))
        return crop


def build_note_bundle(
    root: str | os.PathLike,
    crop_samples: int | None,
    valid_crop_samples: int | None = None,
    *,
    seed: int = 0,
    sample_rate: int = SAMPLE_RATE,
    crop_hop: int = 1,
    silence_db: float | None = -60.0,
    equalizer_db: float = 0.0,
    equalizer_probability: float = 0.5,
    half_partial_removal: float = 0.0,
    half_partial_count: int = 8,
    **filters: Any,
) -> DataBundle:
    """Training and validation notes of an NSynth-layout dataset.

    Args:
        root: dataset root holding ``nsynth-train/`` (and optionally ``nsynth-valid/``),
            or a single split directory (then there is no validation set).
        crop_samples: training crop length (random crops); None for whole notes.
        valid_crop_samples: validation crop length (deterministic crops); None means ``crop_samples``.
        seed, sample_rate, crop_hop, silence_db: as in :class:`NoteDataset`.
        equalizer_db, equalizer_probability: the training notes' random equaliser, as in
            :class:`NoteDataset` (validation notes are never equalised).
        half_partial_removal, half_partial_count: the training notes' removal of half-integer
            partials, as in :class:`NoteDataset` (validation notes keep theirs).
        **filters: ``families``, ``sources``, ``instruments``, ``pitch_range``, ``velocities``,
            applied to both splits.

    Returns:
        A :class:`DataBundle` with ``train`` and ``valid``. ``valid`` is None when the root has
        no valid split, or (with a warning) when none of its notes pass the filters, as happens
        when filtering by training instruments: NSynth splits are instrument-disjoint.
    """
    common = dict(seed=seed, sample_rate=sample_rate, crop_hop=crop_hop, silence_db=silence_db, **filters)
    train = NoteDataset(
        root,
        "train",
        crop_samples=crop_samples,
        equalizer_db=equalizer_db,
        equalizer_probability=equalizer_probability,
        half_partial_removal=half_partial_removal,
        half_partial_count=half_partial_count,
        **common,
    )
    valid = None
    try:
        valid_dir = find_split_dir(root, "valid")
    except DatasetError:
        valid_dir = None
    if valid_dir is not None and valid_dir.resolve() != train.split_dir.resolve():
        try:
            valid = NoteDataset(
                valid_dir,
                "valid",
                crop_samples=crop_samples if valid_crop_samples is None else valid_crop_samples,
                deterministic_crops=True,
                **common,
            )
        except NoMatchingNotesError as error:
            warnings.warn(f"no validation set: {error}", stacklevel=2)
    return DataBundle(train=train, valid=valid)
