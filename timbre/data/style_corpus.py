"""The many-style composer's data: music21's corpus tokenized with style, voice and infilling tokens.

Every training sequence starts ``BOS Style_<style> Voices_<n>`` (MuseNet-style conditioning);
with probability ``condition_dropout`` the style becomes ``Style_any`` (and, independently with
``voices_dropout``, the voice count ``Voices_any``), so that the same model also samples
unconditionally. With probability ``infill_rate`` an item is a bar-level fill-in-the-middle
example (:class:`timbre.symbolic.tokens.ConditionTokens`): the bars before and after a gap, then
the gap. That is what lets ``timbre compose --keep ... --regenerate ...`` rewrite chosen bars of
any MIDI file with both sides as context (Bavarian et al. 2022, "Efficient training of language
models to fill in the middle": FIM examples cost the left-to-right ability almost nothing).

Styles are balanced in sampling: a style is drawn with probability proportional to its training
tokens to the power ``style_balance`` (0: every style equally often; 1: as in the corpus, where
Essen folk songs are half of everything), then one of its pieces uniformly.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import miditok
import numpy as np
import torch
from torch.utils.data import Dataset

from timbre.data import DataBundle
from timbre.data.midi import TokenCollator, pitch_lookup, split_by_piece
from timbre.data.music21_corpus import CorpusPiece, build_music21_corpus, corpus_folder, style_programs
from timbre.data.styles import STYLE_NAMES
from timbre.errors import ConfigError, DatasetError, MidiError
from timbre.io.files import atomic_write
from timbre.io.midi import load_score
from timbre.symbolic.tokens import (
    WIDE_TIME_SIGNATURES,
    ConditionTokens,
    bar_token_starts,
    create_tokenizer,
    encode_score,
    special_token_id,
    token_values,
    tokenizer_to_dict,
)

# Tokens around a piece's music: BOS Style Voices (and EOS at its end).
CONDITION_PREFIX = 3
# Extra tokens of an infilling example: Infill_Prefix, Infill_Suffix, Infill_Middle, FillBars, Infill_End.
INFILL_OVERHEAD = 5


@dataclass
class StyledPiece:
    """A tokenized piece: ``tokens`` (int64 ``[length]``, music only: no BOS/EOS), style, voices."""

    tokens: np.ndarray
    style: str
    voices: int
    id: str = ""


def create_style_tokenizer() -> miditok.MusicTokenizer:
    """REMI with programs, no velocities (the corpus has none), every meter of the corpus."""
    return create_tokenizer("remi", velocities=0, time_signatures=True, time_signature_range=WIDE_TIME_SIGNATURES)


def tokenize_pieces(
    tokenizer: miditok.MusicTokenizer, folder: Path, pieces: Sequence[CorpusPiece], progress: bool = False
) -> list[StyledPiece]:
    """Tokenize converted pieces, through a cache beside them keyed by the tokenizer's settings.

    Pieces whose notes the tokenizer cannot represent are left out.
    """
    key = hashlib.sha256(json.dumps(tokenizer_to_dict(tokenizer), sort_keys=True).encode()).hexdigest()[:12]
    cache_path = folder / f"tokens-{key}.npz"
    cached: dict[str, np.ndarray] = {}
    if cache_path.exists():
        with np.load(cache_path) as stored:
            cached = {name: stored[name] for name in stored.files}
    from tqdm.auto import tqdm

    result, changed = [], False
    for piece in tqdm(pieces, desc="tokenizing", unit="piece", disable=not progress):
        tokens = cached.get(piece.file)
        if tokens is None:
            try:
                tokens = np.asarray(encode_score(tokenizer, load_score(folder / piece.file)), dtype=np.int64)
            except MidiError:
                tokens = np.zeros(0, dtype=np.int64)  # remembered as unusable
            cached[piece.file] = tokens
            changed = True
        if len(tokens):
            result.append(StyledPiece(tokens, piece.style, piece.voices, piece.id))
    if changed:
        with atomic_write(cache_path) as file:
            np.savez(file, **cached)  # type: ignore[arg-type]  # numpy's stubs miss **arrays
    return result


@dataclass
class StyledSplits:
    """Pieces of each split, in style order then corpus order."""

    train: list[StyledPiece]
    valid: list[StyledPiece]
    test: list[StyledPiece]


def split_styled(pieces: Sequence[StyledPiece], valid: float, test: float, seed: int) -> StyledSplits:
    """Split by piece within each style (so that every style has held-out pieces)."""
    splits = StyledSplits([], [], [])
    for style in STYLE_NAMES:
        group = [piece for piece in pieces if piece.style == style]
        if not group:
            continue
        if len(group) < 3:
            splits.train += group
            continue
        train, valid_ids, test_ids = split_by_piece(len(group), valid, test, seed)
        splits.train += [group[i] for i in sorted(train)]
        splits.valid += [group[i] for i in sorted(valid_ids)]
        splits.test += [group[i] for i in sorted(test_ids)]
    return splits


def load_style_splits(
    tokenizer: miditok.MusicTokenizer,
    styles: Sequence[str] | None = None,
    limit_per_style: int | None = None,
    valid: float = 0.05,
    test: float = 0.05,
    seed: int = 0,
    cache_dir: str | Path | None = None,
    progress: bool = True,
) -> StyledSplits:
    """Convert (once), tokenize (once) and split the corpus: the recipe a checkpoint stores."""
    pieces = build_music21_corpus(cache_dir, styles, limit_per_style, progress)
    tokenized = tokenize_pieces(tokenizer, corpus_folder(cache_dir), pieces, progress)
    if not tokenized:
        raise DatasetError(f"{corpus_folder(cache_dir)}: no piece could be tokenized")
    return split_styled(tokenized, valid, test, seed)


def conditioned_sequence(piece: StyledPiece, conditions: ConditionTokens, bos: int, eos: int) -> np.ndarray:
    """``BOS Style Voices <piece> EOS``: how a whole piece is scored in evaluation."""
    prefix = [bos, conditions.style_id(piece.style), conditions.voices_id(piece.voices)]
    return np.concatenate([np.asarray(prefix, dtype=np.int64), piece.tokens, np.asarray([eos], dtype=np.int64)])


def infill_sequence(
    conditions: ConditionTokens,
    head: Sequence[int],
    before: Sequence[Sequence[int]],
    after: Sequence[Sequence[int]],
    middle_bars: int,
    middle: Sequence[int] | None = None,
) -> list[int]:
    """A fill-in-the-middle sequence: ``head Infill_Prefix <before> Infill_Suffix <after> Infill_Middle FillBars_n``.

    Args:
        head: ``BOS Style Voices``.
        before, after: the bars (token lists) on each side of the gap.
        middle_bars: bars in the gap.
        middle: the gap's tokens (training), followed by ``Infill_End``; None for generation.
    """
    sequence = [*head, conditions.id("Infill_Prefix")]
    for bar in before:
        sequence += bar
    sequence.append(conditions.id("Infill_Suffix"))
    for bar in after:
        sequence += bar
    sequence += [conditions.id("Infill_Middle"), conditions.fill_bars_id(middle_bars)]
    if middle is not None:
        sequence += [*middle, conditions.id("Infill_End")]
    return sequence


def fit_context(
    before: Sequence[Sequence[int]], after: Sequence[Sequence[int]], room: int
) -> tuple[list[Sequence[int]], list[Sequence[int]]]:
    """The bars nearest the gap that fit in ``room`` tokens, alternating sides (before first)."""
    kept_before: list[Sequence[int]] = []
    kept_after: list[Sequence[int]] = []
    used = 0
    left, right = len(before) - 1, 0
    while left >= 0 or right < len(after):
        progressed = False
        if left >= 0 and used + len(before[left]) <= room:
            kept_before.insert(0, before[left])
            used += len(before[left])
            left -= 1
            progressed = True
        else:
            left = -1
        if right < len(after) and used + len(after[right]) <= room:
            kept_after.append(after[right])
            used += len(after[right])
            right += 1
            progressed = True
        else:
            right = len(after)
        if not progressed:
            break
    return kept_before, kept_after


class StyledWindows(Dataset):
    """Training or validation items of conditioned token windows.

    Training (``random_crops``): item ``i`` draws a style (balanced, see the module docstring;
    the style of slot ``i`` is fixed, the piece and crop come from torch's generator, which the
    trainer seeds per step), then a crop starting at a bar line or an infilling example,
    transposed by up to ``transpose`` semitones. Validation: the opening window of each piece,
    styles interleaved, with its true conditions.

    Items: ``{"tokens": LongTensor [length], "mask": BoolTensor [length]}``; ``mask`` is False
    at the Style and Voices tokens (given, not predicted) and True at every other token.
    """

    def __init__(
        self,
        pieces: Sequence[StyledPiece],
        conditions: ConditionTokens,
        bos: int,
        eos: int,
        bar: int,
        max_tokens: int,
        random_crops: bool,
        style_balance: float = 0.5,
        condition_dropout: float = 0.1,
        voices_dropout: float = 0.5,
        infill_rate: float = 0.5,
        pitch_of_token: dict[int, int] | None = None,
        transpose: int = 0,
        seed: int = 0,
    ) -> None:
        if max_tokens < 32:
            raise ConfigError(f"data.max_tokens must be at least 32, got {max_tokens}")
        if not pieces:
            raise DatasetError("no pieces to make windows of")
        self.conditions, self.bos, self.eos, self.bar = conditions, bos, eos, bar
        self.max_tokens, self.random_crops = max_tokens, random_crops
        self.condition_dropout, self.voices_dropout, self.infill_rate = condition_dropout, voices_dropout, infill_rate
        self.transpose = transpose
        self.by_style: dict[str, list[StyledPiece]] = {}
        for piece in pieces:
            self.by_style.setdefault(piece.style, []).append(piece)
        self.styles = list(self.by_style)
        self.bar_starts = {id(piece): bar_token_starts(piece.tokens, bar) for piece in pieces}
        self.pitch_table = pitch_lookup(pitch_of_token) if transpose and pitch_of_token else None
        if random_crops:
            tokens = np.array([sum(len(p.tokens) for p in self.by_style[s]) for s in self.styles], dtype=np.float64)
            weights = tokens**style_balance
            self.style_weights = weights / weights.sum()
            rng = np.random.default_rng(seed)
            self.slot_style = rng.choice(len(self.styles), size=len(pieces), p=self.style_weights)
            self.order: list[StyledPiece] = []
        else:
            # Interleave styles so that the trainer's evenly spaced valid items cover all of them.
            groups = [self.by_style[style] for style in self.styles]
            self.order = [group[i] for i in range(max(map(len, groups))) for group in groups if i < len(group)]

    def __len__(self) -> int:
        return len(self.slot_style) if self.random_crops else len(self.order)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        if not self.random_crops:
            piece = self.order[index]
            return self._item(self._crop(piece, piece.style, piece.voices, start_bar=0))
        style = self.styles[int(self.slot_style[index])]
        group = self.by_style[style]
        piece = group[int(torch.randint(len(group), ()).item())]
        style_label = "any" if torch.rand(()).item() < self.condition_dropout else style
        voices: int | None = None if torch.rand(()).item() < self.voices_dropout else piece.voices
        sequence: np.ndarray | None = None
        if torch.rand(()).item() < self.infill_rate:
            sequence = self._infill(piece, style_label, voices)
        if sequence is None:
            starts = self.bar_starts[id(piece)]
            fitting = [i for i, start in enumerate(starts) if len(piece.tokens) - start > self.max_tokens // 2] or [0]
            sequence = self._crop(piece, style_label, voices, start_bar=fitting[int(torch.randint(len(fitting), ()))])
        if self.pitch_table is not None:
            sequence = _transposed(sequence, self.pitch_table, self.transpose)
        return self._item(sequence)

    def _head(self, style: str, voices: int | None) -> list[int]:
        return [self.bos, self.conditions.style_id(style), self.conditions.voices_id(voices)]

    def _crop(self, piece: StyledPiece, style: str, voices: int | None, start_bar: int) -> np.ndarray:
        starts = self.bar_starts[id(piece)]
        start = int(starts[start_bar]) if len(starts) else 0
        body = np.concatenate([piece.tokens[start:], [self.eos]])[: self.max_tokens - CONDITION_PREFIX]
        return np.concatenate([np.asarray(self._head(style, voices), dtype=np.int64), body])

    def _infill(self, piece: StyledPiece, style: str, voices: int | None) -> np.ndarray | None:
        """A fill-in-the-middle example of ``piece``, or None when its bars are too long."""
        starts = self.bar_starts[id(piece)]
        if len(starts) < 2:
            return None
        bounds = [*starts.tolist(), len(piece.tokens)]
        bars = [piece.tokens[bounds[i] : bounds[i + 1]].tolist() for i in range(len(starts))]
        count = int(torch.randint(1, min(self.conditions.max_fill_bars, len(bars) - 1) + 1, ()))
        first = int(torch.randint(len(bars) - count + 1, ()))
        middle = [token for bar in bars[first : first + count] for token in bar]
        room = self.max_tokens - CONDITION_PREFIX - INFILL_OVERHEAD - len(middle)
        if room < 0:
            return None
        before, after = fit_context(bars[:first], bars[first + count :], room)
        return np.asarray(
            infill_sequence(self.conditions, self._head(style, voices), before, after, count, middle), dtype=np.int64
        )

    @staticmethod
    def _item(sequence: np.ndarray) -> dict[str, torch.Tensor]:
        mask = np.ones(len(sequence), dtype=bool)
        mask[1:CONDITION_PREFIX] = False  # Style and Voices are given, never predicted
        return {"tokens": torch.from_numpy(np.ascontiguousarray(sequence)), "mask": torch.from_numpy(mask)}


def _transposed(window: np.ndarray, table: tuple[np.ndarray, np.ndarray, int, int], most: int) -> np.ndarray:
    """``window`` with every pitch moved by one random shift of at most ``most`` that stays in range."""
    pitch, token_of_pitch, low, high = table
    in_table = window < len(pitch)
    pitches = np.where(in_table, pitch[np.minimum(window, len(pitch) - 1)], -1)
    is_pitch = pitches >= 0
    if not is_pitch.any():
        return window
    down = max(-most, low - int(pitches[is_pitch].min()))
    up = min(most, high - int(pitches[is_pitch].max()))
    shift = int(torch.randint(down, up + 1, ()).item())
    shifted = window.copy()
    shifted[is_pitch] = token_of_pitch[pitches[is_pitch] + shift]
    return shifted


def style_conditions(tokenizer: miditok.MusicTokenizer, styles: Sequence[str]) -> ConditionTokens:
    """The condition tokens of a many-style composer over ``tokenizer``."""
    return ConditionTokens(len(tokenizer), tuple(styles))


def build_music21_bundle(
    styles: Sequence[str] | None = None,
    limit_per_style: int | None = None,
    cache_dir: str | None = None,
    max_tokens: int = 512,
    valid: float = 0.05,
    test: float = 0.05,
    seed: int = 0,
    style_balance: float = 0.5,
    condition_dropout: float = 0.1,
    voices_dropout: float = 0.5,
    infill_rate: float = 0.5,
    transpose: int = 5,
    max_valid_per_style: int = 40,
    progress: bool = True,
) -> DataBundle:
    """The many-style composer's data (config ``data=music21``).

    Args:
        styles: styles to use (default: every style of :mod:`timbre.data.styles`).
        limit_per_style: only the first N corpus files of each style (tests, quick runs).
        cache_dir: cache root (default :func:`timbre.constants.cache_dir`).
        max_tokens: tokens per training window (conditions included).
        valid, test: fractions of each style's pieces held out (split by piece, seeded).
        seed: seed of the split and of the style of each training slot.
        style_balance: exponent of the style sampling weights (0 balanced, 1 as in the corpus).
        condition_dropout, voices_dropout: probability of ``Style_any`` / ``Voices_any``.
        infill_rate: share of training items that are fill-in-the-middle examples.
        transpose: random transposition of training items by up to this many semitones.
        max_valid_per_style: validation pieces per style used while training.
        progress: progress bars while converting and tokenizing.

    Returns:
        A :class:`DataBundle`; ``artifacts`` hold ``tokenizer``, ``conditions`` (the condition
        tokens), ``style_programs`` (voice programs of each style, highest first), ``programs``
        (every program), and ``corpus`` (the recipe that rebuilds these splits).
    """
    chosen = list(styles or STYLE_NAMES)
    tokenizer = create_style_tokenizer()
    splits = load_style_splits(tokenizer, chosen, limit_per_style, valid, test, seed, cache_dir, progress)
    present = [style for style in chosen if any(piece.style == style for piece in splits.train)]
    conditions = style_conditions(tokenizer, present)
    bos, eos = special_token_id(tokenizer, "BOS"), special_token_id(tokenizer, "EOS")
    bar = tokenizer.vocab["Bar_None"]
    pad_id = special_token_id(tokenizer, "PAD")
    common: dict[str, Any] = {"conditions": conditions, "bos": bos, "eos": eos, "bar": bar, "max_tokens": max_tokens}
    train = StyledWindows(
        splits.train, random_crops=True, style_balance=style_balance, condition_dropout=condition_dropout,
        voices_dropout=voices_dropout, infill_rate=infill_rate, pitch_of_token=token_values(tokenizer, "Pitch"),
        transpose=transpose, seed=seed, **common,
    )  # fmt: skip
    valid_pieces = [p for style in present for p in [q for q in splits.valid if q.style == style][:max_valid_per_style]]
    programs = style_programs(present)
    return DataBundle(
        train=train,
        valid=StyledWindows(valid_pieces, random_crops=False, **common) if valid_pieces else None,
        collate_fn=TokenCollator(pad_id),
        model_overrides={"vocab_size": conditions.vocab_size, "pad_id": pad_id},
        artifacts={
            "tokenizer": tokenizer_to_dict(tokenizer),
            "conditions": conditions.to_dict(),
            "style_programs": programs,
            "programs": list(dict.fromkeys(p for style in present for p in programs[style])),
            "corpus": {
                "corpus": "music21",
                "styles": chosen,
                "limit_per_style": limit_per_style,
                "valid": valid,
                "test": test,
                "seed": seed,
            },
        },
    )
