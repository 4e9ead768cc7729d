"""MIDI tokenization with miditok: create, save and restore tokenizers; encode and decode scores.

A tokenizer travels with every composer checkpoint as the JSON-able dict of
:func:`tokenizer_to_dict`, so a trained model always decodes with the exact vocabulary it was
trained on. Sequences are single streams with ``Program`` tokens before each note (REMI+ or TSD
with programs), so one sequence holds every voice of a piece.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import miditok
import numpy as np
import symusic
import torch

from timbre.errors import ConfigError, MidiError

TOKENIZER_KINDS = {"remi": miditok.REMI, "tsd": miditok.TSD}


# Meters of the whole music21 corpus (Palestrina's 4/2 and 2/1, folk 9/8 and 6/4, ...). A meter
# outside a tokenizer's range is read as 4/4, which would move bar lines.
WIDE_TIME_SIGNATURES: dict[int, list[int]] = {
    8: [3, 6, 9, 12],
    4: [1, 2, 3, 4, 5, 6, 7],
    2: [1, 2, 3, 4, 6, 8],
    1: [1, 2, 3, 4],
}


def create_tokenizer(
    kind: str = "remi",
    velocities: int = 32,
    time_signatures: bool = True,
    pitch_range: tuple[int, int] = (21, 109),
    time_signature_range: dict[int, list[int]] | None = None,
) -> miditok.MusicTokenizer:
    """A miditok tokenizer with programs, BOS/EOS/PAD special tokens and one token stream.

    Args:
        kind: ``"remi"`` (Bar/Position time, the default) or ``"tsd"`` (TimeShift time).
        velocities: number of velocity bins; 0 leaves velocity tokens out (decoded notes
            then get miditok's default velocity, 100) — right for corpora such as the
            chorales whose velocities are all equal and carry no information.
        time_signatures: add a ``TimeSig`` token after each bar (REMI) or at changes (TSD).
        pitch_range: lowest and one-past-highest MIDI pitch with a token.
        time_signature_range: ``{denominator: [numerators]}`` with a token (None: miditok's
            default, 3/8 6/8 12/8 and 1/4..6/4; :data:`WIDE_TIME_SIGNATURES` for many styles).
    """
    if kind not in TOKENIZER_KINDS:
        raise ConfigError(f"tokenizer {kind!r} is unknown; choose one of {sorted(TOKENIZER_KINDS)}")
    if velocities < 0:
        raise ConfigError(f"tokenizer velocities must be >= 0, got {velocities}")
    extra = {"time_signature_range": time_signature_range} if time_signature_range is not None else {}
    config = miditok.TokenizerConfig(
        pitch_range=tuple(pitch_range),
        use_programs=True,
        one_token_stream_for_programs=True,
        use_velocities=velocities > 0,
        num_velocities=max(velocities, 1),
        use_time_signatures=time_signatures,
        special_tokens=["PAD", "BOS", "EOS", "MASK"],
        **extra,
    )
    return TOKENIZER_KINDS[kind](config)


def tokenizer_to_dict(tokenizer: miditok.MusicTokenizer) -> dict[str, Any]:
    """The JSON-serialisable parameters that :func:`tokenizer_from_dict` restores exactly."""
    return json.loads(json.dumps(tokenizer.to_dict()))


def tokenizer_from_dict(params: dict[str, Any]) -> miditok.MusicTokenizer:
    """Rebuild a tokenizer saved by :func:`tokenizer_to_dict` (e.g. from a checkpoint)."""
    name = params.get("tokenization")
    tokenizer_class = getattr(miditok, str(name), None)
    if tokenizer_class is None or not isinstance(tokenizer_class, type):
        raise ConfigError(f"saved tokenizer names an unknown miditok tokenization {name!r}")
    # miditok restores a saved tokenizer only from a JSON file (its loader converts the
    # serialised keys back), so go through one rather than re-implementing that conversion.
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "tokenizer.json"
        path.write_text(json.dumps(params))
        return tokenizer_class(params=path)


def special_token_id(tokenizer: miditok.MusicTokenizer, name: str) -> int:
    """Id of a special token: ``"PAD"``, ``"BOS"``, ``"EOS"`` or ``"MASK"``."""
    return tokenizer.vocab[f"{name}_None"]


def encode_score(tokenizer: miditok.MusicTokenizer, score: symusic.Score) -> list[int]:
    """Token ids of a whole score (every track in one stream), without BOS/EOS.

    Raises:
        MidiError: the score has no notes left after miditok's preprocessing (e.g. all
            pitches outside the tokenizer's range).
    """
    ids = list(tokenizer.encode(score).ids)
    if not any(tokenizer[i].startswith(("Pitch_", "PitchDrum_")) for i in ids):
        raise MidiError("the MIDI holds no notes the tokenizer can represent")
    return ids


def decode_ids(tokenizer: miditok.MusicTokenizer, ids: list[int] | np.ndarray) -> symusic.Score:
    """The score of a token sequence; special tokens are skipped (miditok's decoder is lenient).

    The score's time division is ``tokenizer.time_division``; one track per program.
    """
    special = set(tokenizer.special_tokens_ids)
    kept = [int(i) for i in ids if int(i) not in special]
    return tokenizer.decode(kept)


def token_types(tokenizer: miditok.MusicTokenizer) -> list[str]:
    """Type of every token id (``"Bar"``, ``"Position"``, ``"Program"``, ``"Pitch"``, ...)."""
    return [tokenizer[i].split("_")[0] for i in range(len(tokenizer))]


def token_values(tokenizer: miditok.MusicTokenizer, token_type: str) -> dict[int, int]:
    """Integer value of every token of an integer-valued type, by token id.

    For example ``token_values(tokenizer, "Pitch")`` maps each Pitch token id to its MIDI
    pitch, and ``token_values(tokenizer, "Program")`` each Program token to its program
    (-1 for drums).
    """
    prefix = f"{token_type}_"
    return {i: int(tokenizer[i][len(prefix) :]) for i in range(len(tokenizer)) if tokenizer[i].startswith(prefix)}


# Token types that carry no music; a generated sequence never contains them.
SPECIAL_TYPES = ("PAD", "BOS", "EOS", "MASK")
# Types of the conditioning tokens appended after a tokenizer's vocabulary (see ConditionTokens).
CONDITION_TYPES = ("Style", "Voices", "Infill", "FillBars")
# Infilling sentinels (bar-level fill-in-the-middle, prefix-suffix-middle order): after each one
# a new stream of bars begins.
INFILL_SENTINELS = ("Prefix", "Suffix", "Middle")
INFILL_END = "End"


@dataclass(frozen=True)
class ConditionTokens:
    """Conditioning and infilling tokens appended after a miditok vocabulary (MuseNet-style).

    miditok's vocabulary is left untouched (a saved tokenizer restores exactly); these tokens
    take ids ``base_size, base_size + 1, ...`` in the order of :attr:`names`:

    - ``Style_any`` then ``Style_<name>`` for each style (``any``: unconditional sampling);
    - ``Voices_any`` then ``Voices_1`` .. ``Voices_<max_voices>``;
    - ``Infill_Prefix``, ``Infill_Suffix``, ``Infill_Middle``, ``Infill_End``: the sentinels of a
      bar-level fill-in-the-middle example ``BOS Style Voices Infill_Prefix <bars before>
      Infill_Suffix <bars after> Infill_Middle FillBars_n <n bars> Infill_End``;
    - ``FillBars_1`` .. ``FillBars_<max_fill_bars>``: how many bars the middle holds.

    Every sequence starts ``BOS Style_x Voices_y``.

    Args:
        base_size: the tokenizer's vocabulary size.
        styles: style names (without ``any``).
        max_voices: largest voice count with its own token.
        max_fill_bars: most bars one infilled middle may hold.
    """

    base_size: int
    styles: tuple[str, ...]
    max_voices: int = 8
    max_fill_bars: int = 16

    @property
    def names(self) -> list[str]:
        return [
            *(f"Style_{name}" for name in ("any", *self.styles)),
            "Voices_any",
            *(f"Voices_{count}" for count in range(1, self.max_voices + 1)),
            *(f"Infill_{name}" for name in (*INFILL_SENTINELS, INFILL_END)),
            *(f"FillBars_{count}" for count in range(1, self.max_fill_bars + 1)),
        ]

    @property
    def vocab_size(self) -> int:
        """Size of the whole vocabulary: the tokenizer's plus these tokens."""
        return self.base_size + len(self.names)

    def id(self, name: str) -> int:
        """Id of a condition token such as ``"Style_bach"`` or ``"Infill_Middle"``.

        Raises:
            ConfigError: no such token (e.g. a style the model was not trained on).
        """
        try:
            return self.base_size + self.names.index(name)
        except ValueError:
            raise ConfigError(f"no condition token {name!r}") from None

    def name(self, token: int) -> str:
        """Name of a condition token id (``token >= base_size``)."""
        return self.names[token - self.base_size]

    def style_id(self, style: str | None) -> int:
        """``Style_<style>`` (None: ``Style_any``).

        Raises:
            ConfigError: a style this vocabulary does not have.
        """
        style = style or "any"
        if style != "any" and style not in self.styles:
            raise ConfigError(f"style {style!r} is unknown; choose one of {['any', *self.styles]}")
        return self.id(f"Style_{style}")

    def voices_id(self, voices: int | None) -> int:
        """``Voices_<voices>`` (None: ``Voices_any``); counts above ``max_voices`` take the last.

        Raises:
            ConfigError: a count below 1.
        """
        if voices is None:
            return self.id("Voices_any")
        if voices < 1:
            raise ConfigError(f"voices must be at least 1, got {voices}")
        return self.id(f"Voices_{min(voices, self.max_voices)}")

    def fill_bars_id(self, bars: int) -> int:
        """``FillBars_<bars>``.

        Raises:
            ConfigError: outside 1..max_fill_bars.
        """
        if not 1 <= bars <= self.max_fill_bars:
            raise ConfigError(f"one infilled span holds 1 to {self.max_fill_bars} bars, got {bars}")
        return self.id(f"FillBars_{bars}")

    def types(self) -> list[str]:
        """Token type of each condition token (``"Style"``, ``"Voices"``, ``"Infill"``, ``"FillBars"``)."""
        return [name.split("_")[0] for name in self.names]

    def to_dict(self) -> dict[str, Any]:
        """JSON-able settings that :meth:`from_dict` restores (stored in a checkpoint's artifacts)."""
        return {
            "base_size": self.base_size,
            "styles": list(self.styles),
            "max_voices": self.max_voices,
            "max_fill_bars": self.max_fill_bars,
        }

    @classmethod
    def from_dict(cls, params: dict[str, Any]) -> ConditionTokens:
        return cls(int(params["base_size"]), tuple(params["styles"]), int(params["max_voices"]),
                   int(params["max_fill_bars"]))  # fmt: skip


# Types after which a note is still incomplete (its Duration has not come yet).
NOTE_OPENING_TYPES = ("Program", "Pitch", "PitchDrum", "Velocity")


@dataclass
class GrammarState:
    """Where a sequence stands in the token grammar (see :class:`TokenGrammar`).

    Attributes:
        last_type: type of the last token, None before the first one.
        program: program of the note being written (-1 for drums), None outside a note.
        position: REMI position of the last Position token in this bar, -1 after a Bar.
        positions_per_bar: REMI positions in the current bar (from its time signature).
        beats_per_bar: TSD beats per bar (numerator of the time signature).
        beats: TSD beats elapsed in the current bar.
        bars: bars completed so far (a REMI Bar token completes the bar before it, if any).
        notes: notes completed so far (Duration tokens).
        in_bar: a REMI Bar token has been seen (the next one completes a bar).
    """

    last_type: str | None = None
    program: int | None = None
    position: int = -1
    positions_per_bar: int = 32
    beats_per_bar: int = 4
    beats: float = 0.0
    bars: int = 0
    notes: int = 0
    in_bar: bool = False

    @property
    def inside_note(self) -> bool:
        return self.last_type in NOTE_OPENING_TYPES


class TokenGrammar:
    """The well-formed token sequences of a REMI or TSD tokenizer with programs, as masks.

    Token-type transitions come from miditok's own ``tokens_types_graph`` (e.g. REMI:
    ``Bar TimeSig Position Program Pitch [Velocity] Duration ...``). On top of it: a Program is
    followed by a drum pitch only for drums; REMI positions strictly increase within a bar and
    stay inside it; special tokens never appear; Program tokens can be limited to ``programs``.
    A sequence sampled under these masks always decodes to the notes it spells.

    Args:
        tokenizer: a tokenizer from :func:`create_tokenizer` (REMI or TSD, with programs).
        programs: programs allowed in Program tokens (None: all of the tokenizer's).
        conditions: the condition tokens appended to the vocabulary, if any: masks then cover
            the whole vocabulary and never allow them (prompts and controls place them).
    """

    def __init__(
        self,
        tokenizer: miditok.MusicTokenizer,
        programs: Sequence[int] | None = None,
        conditions: ConditionTokens | None = None,
    ) -> None:
        self.types = token_types(tokenizer) + (conditions.types() if conditions is not None else [])
        self.conditions = conditions
        self.vocab_size = len(self.types)
        self.is_remi = "Bar" in self.types
        self.type_masks = {kind: torch.tensor([t == kind for t in self.types]) for kind in set(self.types)}
        empty = torch.zeros(self.vocab_size, dtype=torch.bool)
        self.follow = {}
        for kind, successors in tokenizer.tokens_types_graph.items():
            if kind in SPECIAL_TYPES:
                continue
            mask = empty.clone()
            for successor in successors:
                if successor in self.type_masks and successor not in SPECIAL_TYPES:
                    mask |= self.type_masks[successor]
            self.follow[kind] = mask
        start_types = ("Bar",) if self.is_remi else ("TimeSig", "TimeShift", "Program")
        self.start = empty.clone()
        for kind in start_types:
            self.start |= self.type_masks.get(kind, empty)

        self.program_of = token_values(tokenizer, "Program")
        wanted = set(self.program_of.values()) if programs is None else set(programs)
        self.program_allowed = ~self.type_masks["Program"] | torch.tensor(
            [self.program_of.get(i) in wanted for i in range(self.vocab_size)]
        )
        self.position_of = token_values(tokenizer, "Position")
        position_values = torch.full((self.vocab_size,), -1, dtype=torch.long)
        for token, value in self.position_of.items():
            position_values[token] = value
        self.position_values = position_values
        self.positions_per_beat = tokenizer.config.max_num_pos_per_beat
        self.time_signature_of = {
            i: tuple(int(v) for v in tokenizer[i].split("_")[1].split("/"))
            for i in range(self.vocab_size)
            if self.types[i] == "TimeSig"
        }
        self.beats_of_shift = {i: _beats(tokenizer[i]) for i in range(self.vocab_size) if self.types[i] == "TimeShift"}
        self.bos_id = special_token_id(tokenizer, "BOS")
        # Masks depend on a few state fields only; sampling asks for the same ones again and again.
        self._allowed_cache: dict[tuple, torch.Tensor] = {}

    def initial_state(self) -> GrammarState:
        """State before the first token (4/4 until a time signature says otherwise)."""
        return GrammarState(positions_per_bar=4 * self.positions_per_beat)

    def allowed(self, state: GrammarState) -> torch.Tensor:
        """BoolTensor ``[vocab]`` of the tokens that may follow ``state`` (shared: do not modify)."""
        key = (
            state.last_type,
            state.last_type == "Program" and state.program == -1,
            state.position if self.is_remi else 0,
            state.positions_per_bar if self.is_remi else 0,
        )
        mask = self._allowed_cache.get(key)
        if mask is None:
            mask = self._allowed_cache[key] = self._compute_allowed(state)
        return mask

    def _compute_allowed(self, state: GrammarState) -> torch.Tensor:
        if state.last_type is None:
            mask = self.start.clone()
        elif state.last_type == "Program":
            mask = self.type_masks["PitchDrum" if state.program == -1 else "Pitch"].clone()
        else:
            mask = self.follow[state.last_type].clone()
        if self.is_remi:
            later = (self.position_values > state.position) & (self.position_values < state.positions_per_bar)
            mask &= ~self.type_masks["Position"] | later
        mask &= self.program_allowed
        return mask

    def advance(self, state: GrammarState, token: int) -> None:
        """Update ``state`` in place with the next ``token`` (special tokens: only BOS resets)."""
        kind = self.types[token]
        if kind in SPECIAL_TYPES:
            if token == self.bos_id:
                state.__dict__.update(self.initial_state().__dict__)
            return
        if kind in CONDITION_TYPES:
            # Conditions say nothing about time; after an infilling sentinel a new stream of
            # bars begins (the bars before, after, or in the middle of the gap).
            assert self.conditions is not None, "condition types come with conditions"
            sentinel = self.conditions.name(token).split("_", 1)[1]
            if kind == "Infill" and sentinel in INFILL_SENTINELS:
                state.__dict__.update(self.initial_state().__dict__)
            return
        if kind == "Bar":
            state.bars += int(state.in_bar)
            state.in_bar = True
            state.position = -1
        elif kind == "Position":
            state.position = self.position_of[token]
        elif kind == "TimeSig":
            numerator, _ = self.time_signature_of[token]
            state.positions_per_bar = numerator * self.positions_per_beat
            state.beats_per_bar = numerator
            state.beats = 0.0
        elif kind == "TimeShift":
            state.beats += self.beats_of_shift[token]
            while state.beats >= state.beats_per_bar:
                state.beats -= state.beats_per_bar
                state.bars += 1
        elif kind == "Program":
            state.program = self.program_of[token]
        elif kind == "Duration":
            state.notes += 1
            state.program = None
        state.last_type = kind

    def state_after(self, tokens: Sequence[int]) -> GrammarState:
        """The state after a whole sequence (e.g. a primer)."""
        state = self.initial_state()
        for token in tokens:
            self.advance(state, int(token))
        return state


def _beats(token: str) -> float:
    """Beats of a miditok time value such as ``TimeShift_1.4.8`` (1 + 4/8 beats)."""
    whole, part, resolution = (int(v) for v in token.split("_")[1].split("."))
    return whole + part / resolution


def bar_token_starts(ids: Sequence[int] | np.ndarray, bar_id: int) -> np.ndarray:
    """Indices of the ``Bar`` tokens of a REMI sequence: where each bar's tokens begin (int64 ``[bars]``)."""
    return np.flatnonzero(np.asarray(ids) == bar_id).astype(np.int64)
