"""MIDI corpora for the composer: Bach chorales from music21, or any folder of MIDI files.

The chorales are converted from music21's bundled corpus to MIDI once and cached (one file per
chorale, four tracks with distinct programs, see :data:`CHORALE_VOICES`). Pieces are split into
train/valid/test by piece, tokenized into single token streams (:mod:`timbre.symbolic.tokens`) and served
as windows of at most ``max_tokens`` tokens.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import miditok
import numpy as np
import symusic
import torch
from torch.utils.data import Dataset

from timbre.data import DataBundle
from timbre.errors import ConfigError, DatasetError, MidiError
from timbre.io.files import atomic_write
from timbre.io.midi import is_midi_file, load_score
from timbre.symbolic.tokens import (
    create_tokenizer,
    encode_score,
    special_token_id,
    token_values,
    tokenizer_to_dict,
)

# General MIDI programs of the four chorale voices: a string section, so that the voices stay
# distinct instruments when rendered and each keeps its own track and register.
CHORALE_VOICES: tuple[tuple[str, int], ...] = (
    ("Soprano", 40),  # violin
    ("Alto", 41),  # viola
    ("Tenor", 42),  # cello
    ("Bass", 43),  # contrabass
)
CHORALE_TICKS_PER_QUARTER = 480
CHORALE_VELOCITY = 90  # music21's own MIDI velocity; the chorales have no dynamics


def default_cache_dir() -> Path:
    """Where converted corpora live: :func:`timbre.constants.cache_dir`."""
    from timbre.constants import cache_dir

    return cache_dir()


def find_midi_files(folder: str | Path) -> list[Path]:
    """Every ``.mid``/``.midi`` file under ``folder`` (recursive, any case), sorted.

    Raises:
        DatasetError: the folder does not exist or holds no MIDI file.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DatasetError(f"{folder}: MIDI folder does not exist")
    files = sorted(path for path in folder.rglob("*") if is_midi_file(path))
    if not files:
        raise DatasetError(f"{folder}: no .mid or .midi files found (searched recursively)")
    return files


def chorale_names() -> list[str]:
    """music21's bundled Bach chorales (e.g. ``"bach/bwv269"``), in corpus order, no duplicates."""
    from music21 import corpus

    return list(dict.fromkeys(corpus.chorales.Iterator(returnType="filename")))


def chorale_to_score(name: str) -> symusic.Score:
    """Convert one music21 chorale to a four-track score (repeats expanded).

    The voices get the programs of :data:`CHORALE_VOICES`. A pickup measure is shifted so that
    bar lines fall where REMI's ``Bar`` tokens put them.

    Raises:
        MidiError: the chorale has no recognisable soprano/alto/tenor/bass parts.
        music21 exceptions: e.g. ``ExpanderException`` for badly formed repeats.
    """
    from music21 import corpus, meter

    work = corpus.parse(name)
    parts = _satb_parts(work, name)
    for part in list(work.parts):
        if all(part is not wanted for wanted in parts):
            work.remove(part)
    work = work.expandRepeats()
    parts = list(work.parts)

    first_measure = parts[0].getElementsByClass("Measure").first()
    pickup = float(first_measure.paddingLeft) if first_measure is not None else 0.0

    def ticks(offset: float) -> int:
        return round((float(offset) + pickup) * CHORALE_TICKS_PER_QUARTER)

    score = symusic.Score(CHORALE_TICKS_PER_QUARTER)
    previous = None
    for signature in parts[0].flatten().getElementsByClass(meter.TimeSignature):
        if (signature.numerator, signature.denominator) == previous:
            continue
        previous = (signature.numerator, signature.denominator)
        # The opening signature stays at tick 0 so the padded pickup bar has a meter too.
        time = 0 if signature.offset == 0 else ticks(signature.offset)
        score.time_signatures.append(symusic.TimeSignature(time, *previous))

    for (voice, program), part in zip(CHORALE_VOICES, parts):
        track = symusic.Track(name=voice, program=program, is_drum=False)
        for element in part.stripTies().flatten().notes:
            duration = ticks(element.offset + element.quarterLength) - ticks(element.offset)
            if duration <= 0:  # grace notes have no duration of their own
                continue
            for pitch in element.pitches:
                track.notes.append(symusic.Note(ticks(element.offset), duration, pitch.midi, CHORALE_VELOCITY))
        score.tracks.append(track)
    if score.note_num() == 0:
        raise MidiError(f"chorale {name} has no notes")
    return score


def _satb_parts(work: Any, name: str) -> list[Any]:
    """The soprano, alto, tenor and bass parts of a chorale, in that order."""
    parts = list(work.parts)
    by_name = {str(part.partName).strip().lower(): part for part in parts if part.partName}
    voices = [voice.lower() for voice, _ in CHORALE_VOICES]
    if all(voice in by_name for voice in voices):
        return [by_name[voice] for voice in voices]
    if len(parts) == len(voices) and not by_name:  # a few chorales have unnamed SATB parts
        return parts
    names = [part.partName for part in parts]
    raise MidiError(f"chorale {name} has no soprano/alto/tenor/bass parts (parts: {names})")


def build_chorale_corpus(
    cache_dir: str | Path | None = None, limit: int | None = None, progress: bool = False
) -> list[Path]:
    """Convert the chorales to MIDI once and return the cached files, in corpus order.

    Conversion takes a fraction of a second per chorale (under 2 minutes for all); later calls
    only read the cache. Chorales that fail to convert are skipped with a warning and
    remembered in ``skipped.json``.

    Args:
        cache_dir: cache root (default :func:`default_cache_dir`); files go to ``chorales/``.
        limit: use only the first ``limit`` chorales of the corpus (tests, quick runs).
        progress: show a progress bar while chorales are converted (none once all are cached).
    """
    from tqdm.auto import tqdm

    folder = Path(cache_dir or default_cache_dir()) / "chorales"
    folder.mkdir(parents=True, exist_ok=True)
    skipped_path = folder / "skipped.json"
    skipped: dict[str, str] = json.loads(skipped_path.read_text()) if skipped_path.exists() else {}
    names = chorale_names()[:limit]
    todo = [name for name in names if name not in skipped and not (folder / (name.replace("/", "_") + ".mid")).exists()]
    bar = tqdm(total=len(todo), desc="converting chorales (once)", unit="chorale", disable=not (progress and todo))
    files = []
    for name in names:
        path = folder / (name.replace("/", "_") + ".mid")
        if name in skipped:
            continue
        if not path.exists():
            try:
                score = chorale_to_score(name)
            except Exception as error:  # music21 raises many kinds on malformed scores
                skipped[name] = f"{type(error).__name__}: {error}"
                warnings.warn(f"skipping chorale {name}: {skipped[name]}", stacklevel=2)
                _write_atomically(skipped_path, json.dumps(skipped, indent=1).encode())
                continue
            finally:
                bar.update()
            _write_atomically(path, score.dumps_midi())
        files.append(path)
    bar.close()
    if not files:
        raise DatasetError(f"{folder}: no chorale could be converted")
    return files


def _write_atomically(path: Path, data: bytes) -> None:
    """Write through a temporary file so an interrupted conversion leaves no broken file."""
    with atomic_write(path) as file:
        file.write(data)


def corpus_files(
    corpus: str | None = None,
    folder: str | Path | None = None,
    cache_dir: str | Path | None = None,
    limit: int | None = None,
    progress: bool = False,
) -> list[Path]:
    """The MIDI files of a corpus: ``corpus="chorales"`` or a ``folder`` of MIDI files.

    ``progress`` shows a bar while the chorales are converted (the first time only).
    """
    if (corpus is None) == (folder is None):
        raise ConfigError("data: give exactly one of corpus=chorales or folder=PATH")
    if corpus is not None and corpus != "chorales":
        raise ConfigError(f"data.corpus={corpus!r} is unknown; the bundled corpus is 'chorales'")
    if folder is None:
        return build_chorale_corpus(cache_dir, limit, progress)
    return find_midi_files(folder)[:limit]


@dataclass
class CorpusSplits:
    """Token sequences of the pieces of each split; each sequence is BOS + piece + EOS."""

    train: list[np.ndarray]
    valid: list[np.ndarray]
    test: list[np.ndarray]


def split_by_piece(count: int, valid: float, test: float, seed: int) -> tuple[list[int], list[int], list[int]]:
    """Indices of the train, valid and test pieces: a seeded shuffle cut by the fractions.

    A non-zero fraction gets at least one piece while at least one piece is left to train on.
    """
    if not (0 <= valid < 1 and 0 <= test < 1 and valid + test < 1):
        raise ConfigError(f"data.valid={valid} and data.test={test} must be fractions summing below 1")
    order = np.random.default_rng(seed).permutation(count).tolist()
    sizes: list[int] = []
    for fraction in (test, valid):
        size = round(fraction * count)
        if fraction > 0 and size == 0 and count - sum(sizes) > 1:
            size = 1
        sizes.append(size)
    n_test, n_valid = sizes
    if n_test + n_valid >= count:
        raise DatasetError(f"only {count} pieces: too few to split off valid={valid} and test={test}")
    return order[n_test + n_valid :], order[n_test : n_test + n_valid], order[:n_test]


def tokenize_corpus(
    tokenizer: miditok.MusicTokenizer,
    files: Sequence[Path],
    valid: float = 0.1,
    test: float = 0.1,
    seed: int = 0,
) -> CorpusSplits:
    """Split ``files`` by piece and tokenize each one; unreadable files are skipped with a warning."""
    bos, eos = special_token_id(tokenizer, "BOS"), special_token_id(tokenizer, "EOS")
    pieces = []
    for path in files:
        try:
            ids = encode_score(tokenizer, load_score(path))
        except MidiError as error:
            warnings.warn(f"skipping {error}", stacklevel=2)
            continue
        pieces.append(np.asarray([bos, *ids, eos], dtype=np.int64))
    if not pieces:
        raise DatasetError(f"none of the {len(files)} MIDI files could be tokenized")
    train, valid_ids, test_ids = split_by_piece(len(pieces), valid, test, seed)
    return CorpusSplits(
        train=[pieces[i] for i in train],
        valid=[pieces[i] for i in valid_ids],
        test=[pieces[i] for i in test_ids],
    )


def voice_programs(tokenizer: miditok.MusicTokenizer, pieces: Sequence[np.ndarray]) -> list[int]:
    """Programs used in ``pieces``, highest voice first (by mean pitch of their notes).

    For the chorales this is soprano, alto, tenor, bass. The order lets a primer's tracks be
    given the programs of the voices whose register they are in.
    """
    programs = token_values(tokenizer, "Program")
    pitches = token_values(tokenizer, "Pitch") | token_values(tokenizer, "PitchDrum")
    totals: dict[int, list[float]] = {}
    for piece in pieces:
        program = None
        for token in piece.tolist():
            if token in programs:
                program = programs[token]
            elif token in pitches and program is not None:
                total = totals.setdefault(program, [0.0, 0.0])
                total[0] += pitches[token]
                total[1] += 1
    return sorted(totals, key=lambda p: -totals[p][0] / totals[p][1])


class TokenWindows(Dataset):
    """Windows of token sequences for training or evaluation.

    With ``random_crops`` each item is a random window of one piece (one item per piece and
    epoch), optionally transposed by a random number of semitones that keeps every pitch in the
    tokenizer's range. Without it the pieces are cut into consecutive windows that overlap by
    one token, so that every token of every piece is predicted exactly once per pass.

    Items: ``{"tokens": LongTensor [length]}`` with ``length <= max_tokens``.
    """

    def __init__(
        self,
        pieces: Sequence[np.ndarray],
        max_tokens: int,
        random_crops: bool,
        pitch_of_token: dict[int, int] | None = None,
        transpose: int = 0,
    ) -> None:
        if max_tokens < 2:
            raise ConfigError(f"data.max_tokens must be at least 2, got {max_tokens}")
        self.pieces = list(pieces)
        self.max_tokens = max_tokens
        self.random_crops = random_crops
        self.transpose = transpose
        self._pitch_table = pitch_lookup(pitch_of_token or {}) if transpose else None
        if random_crops:
            self.windows = [(i, 0) for i in range(len(self.pieces))]
        else:
            step = max_tokens - 1
            self.windows = [
                (i, start) for i, piece in enumerate(self.pieces) for start in range(0, max(len(piece) - 1, 1), step)
            ]

    def __len__(self) -> int:
        return len(self.windows)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        piece_index, start = self.windows[index]
        piece = self.pieces[piece_index]
        if self.random_crops and len(piece) > self.max_tokens:
            start = int(torch.randint(len(piece) - self.max_tokens + 1, ()).item())
        window = piece[start : start + self.max_tokens]
        if self._pitch_table is not None:
            window = self._transposed(window, self._pitch_table)
        return {"tokens": torch.from_numpy(np.ascontiguousarray(window))}

    def _transposed(self, window: np.ndarray, pitch_table: tuple[np.ndarray, np.ndarray, int, int]) -> np.ndarray:
        pitch, token_of_pitch, low, high = pitch_table
        in_table = window < len(pitch)
        pitches = np.where(in_table, pitch[np.minimum(window, len(pitch) - 1)], -1)
        is_pitch = pitches >= 0
        if not is_pitch.any():
            return window
        down = max(-self.transpose, low - int(pitches[is_pitch].min()))
        up = min(self.transpose, high - int(pitches[is_pitch].max()))
        shift = int(torch.randint(down, up + 1, ()).item())
        shifted = window.copy()
        shifted[is_pitch] = token_of_pitch[pitches[is_pitch] + shift]
        return shifted


def pitch_lookup(pitch_of_token: dict[int, int]) -> tuple[np.ndarray, np.ndarray, int, int]:
    """``pitch[token]`` (-1 if not a pitch), ``token_of_pitch[pitch]``, lowest and highest pitch."""
    pitch = np.full(max(pitch_of_token) + 1, -1, dtype=np.int64)
    for token, value in pitch_of_token.items():
        pitch[token] = value
    low, high = min(pitch_of_token.values()), max(pitch_of_token.values())
    token_of_pitch = np.zeros(high + 1, dtype=np.int64)
    for token, value in pitch_of_token.items():
        token_of_pitch[value] = token
    return pitch, token_of_pitch, low, high


def collate_tokens(items: list[dict[str, torch.Tensor]], pad_id: int) -> dict[str, torch.Tensor]:
    """Pad windows to the longest one.

    Returns:
        ``{"tokens": LongTensor [batch, length], "mask": BoolTensor [batch, length]}``; ``mask``
        is False on padding, and elsewhere the item's own ``mask`` if it has one (tokens the loss
        skips), else True.
    """
    length = max(len(item["tokens"]) for item in items)
    tokens = torch.full((len(items), length), pad_id, dtype=torch.long)
    mask = torch.zeros((len(items), length), dtype=torch.bool)
    for row, item in enumerate(items):
        tokens[row, : len(item["tokens"])] = item["tokens"]
        mask[row, : len(item["tokens"])] = item.get("mask", True)
    return {"tokens": tokens, "mask": mask}


@dataclass
class TokenCollator:
    """Picklable ``collate_fn`` (DataLoader workers) that pads with ``pad_id``."""

    pad_id: int

    def __call__(self, items: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        return collate_tokens(items, self.pad_id)


def build_midi_bundle(
    corpus: str | None = None,
    folder: str | None = None,
    cache_dir: str | None = None,
    tokenizer: str = "remi",
    velocities: int = 32,
    time_signatures: bool = True,
    max_tokens: int = 512,
    valid: float = 0.1,
    test: float = 0.1,
    seed: int = 0,
    limit: int | None = None,
    transpose: int = 0,
) -> DataBundle:
    """The composer's data: train/valid token windows, the tokenizer and the corpus recipe.

    Args:
        corpus: ``"chorales"`` for music21's Bach chorales (exclusive with ``folder``).
        folder: a folder of MIDI files, searched recursively.
        cache_dir: cache root for the converted chorales (default :func:`default_cache_dir`).
        tokenizer: ``"remi"`` or ``"tsd"`` (see :func:`timbre.symbolic.tokens.create_tokenizer`).
        velocities: velocity bins of the tokenizer, 0 for none.
        time_signatures: whether the tokenizer has time-signature tokens.
        max_tokens: tokens per training window.
        valid, test: fractions of the pieces held out (split by piece, seeded).
        seed: seed of the split.
        limit: use only the first ``limit`` pieces (quick runs, tests).
        transpose: random transposition of training windows by up to this many semitones.

    Returns:
        A :class:`DataBundle`; ``model_overrides`` sets the model's ``vocab_size`` and
        ``pad_id``; ``artifacts`` holds ``tokenizer`` (its dict), ``corpus`` (the arguments
        that rebuild these splits, for evaluation) and ``programs`` (voices, highest first).
    """
    token_maker = create_tokenizer(tokenizer, velocities=velocities, time_signatures=time_signatures)
    files = corpus_files(corpus, folder, cache_dir, limit)
    splits = tokenize_corpus(token_maker, files, valid, test, seed)
    pad_id = special_token_id(token_maker, "PAD")
    pitch_of_token = token_values(token_maker, "Pitch")
    recipe = {
        "corpus": corpus,
        "folder": str(folder) if folder is not None else None,
        "limit": limit,
        "valid": valid,
        "test": test,
        "seed": seed,
    }
    return DataBundle(
        train=TokenWindows(splits.train, max_tokens, True, pitch_of_token, transpose),
        valid=TokenWindows(splits.valid, max_tokens, False) if splits.valid else None,
        collate_fn=TokenCollator(pad_id),
        model_overrides={"vocab_size": len(token_maker), "pad_id": pad_id},
        artifacts={
            "tokenizer": tokenizer_to_dict(token_maker),
            "corpus": recipe,
            "programs": voice_programs(token_maker, splits.train),
        },
    )
