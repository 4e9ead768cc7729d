"""Bar regeneration: rewrite chosen bars of any MIDI file, keeping every other bar note for note.

Method: bar-level fill-in-the-middle. A many-style composer is trained on examples
``BOS Style Voices Infill_Prefix <bars before> Infill_Suffix <bars after> Infill_Middle FillBars_n
<n bars> Infill_End`` (:mod:`timbre.data.style_corpus`), so it writes a gap knowing what comes
after it, not only before: a regenerated bar leads into the kept bar that follows. (Resampling a
left-to-right model with the later bars fixed would need rejection or search; FIM makes it one
sampling pass, and Bavarian et al. 2022 show FIM training costs left-to-right quality nearly
nothing.) Each regenerated bar keeps its original time signature (forced while sampling), so the
bars after it stay exactly where they were.

Kept bars are bit-identical because they are never re-encoded: the output is the input score
with the notes that start in regenerated bars removed and the sampled notes added, mapped back
to the input's tracks and ticks. Tokens only show the model the kept music. A note belongs to the
bar it starts in (a kept note held into a regenerated bar is kept whole). Bars named neither to
keep nor to regenerate are emptied (their notes are neither context nor output); by default every
bar that is not regenerated is kept. Drum tracks are left as they are: the composer writes no
drums.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
import symusic
import torch

from timbre.data.style_corpus import fit_context, infill_sequence
from timbre.errors import ConfigError, MidiError
from timbre.io.midi import load_score
from timbre.runtime import SEQUENTIAL_STEP_THREADS, threads
from timbre.symbolic.compose import LoadedComposer, _check_sampling, check_style_guidance
from timbre.symbolic.tokens import (
    ConditionTokens,
    TokenGrammar,
    bar_token_starts,
    decode_ids,
    encode_score,
)

# Token budget per regenerated bar before sampling is hurried to the end of the gap.
MAX_TOKENS_PER_BAR = 512


@dataclass
class BarGrid:
    """Bars of a score as the tokenizer reads them.

    Attributes:
        token_bars: token ids of each bar (starting with its ``Bar`` token).
        starts: start tick of each bar in the score's own ticks, plus the end of the last bar
            (``[bars + 1]``).
        time_signature_tokens: the ``TimeSig`` token id of each bar.
    """

    token_bars: list[list[int]]
    starts: list[int]
    time_signature_tokens: list[int]

    @property
    def count(self) -> int:
        return len(self.token_bars)


def bar_grid(composer: LoadedComposer, ids: Sequence[int], ticks_per_quarter: int) -> BarGrid:
    """Split REMI ``ids`` at their ``Bar`` tokens and place each bar in ticks.

    A bar lasts ``numerator * 4 / denominator`` quarter notes of its ``TimeSig`` token, so its
    ticks follow the tokenizer's reading of the meter (which is what the model sees).
    """
    tokenizer = composer.tokenizer
    bar_id = tokenizer.vocab["Bar_None"]
    indices = [*bar_token_starts(ids, bar_id).tolist(), len(ids)]
    token_bars = [list(ids[indices[i] : indices[i + 1]]) for i in range(len(indices) - 1)]
    starts, signatures = [0], []
    position = Fraction(0)
    for bar in token_bars:
        signature = next((t for t in bar if tokenizer[t].startswith("TimeSig_")), None)
        if signature is None:
            raise MidiError("a bar without a time signature token (tokenizer without TimeSig tokens?)")
        numerator, denominator = (int(v) for v in tokenizer[signature].split("_")[1].split("/"))
        position += Fraction(4 * numerator, denominator)
        starts.append(round(position * ticks_per_quarter))
        signatures.append(signature)
    return BarGrid(token_bars, starts, signatures)


def voice_assignment(score: symusic.Score, programs: Sequence[int]) -> dict[int, int]:
    """``{track index: model program}`` for the pitched tracks with notes (as :func:`fit_prime_to_voices`).

    Tracks whose programs all belong to ``programs`` keep them; otherwise tracks take the
    programs by register, highest mean pitch first, extra tracks the lowest voice.
    """
    pitched = [i for i, track in enumerate(score.tracks) if len(track.notes) and not track.is_drum]
    if {score.tracks[i].program for i in pitched} <= set(programs):
        return {i: score.tracks[i].program for i in pitched}
    ranked = sorted(pitched, key=lambda i: -float(np.mean([note.pitch for note in score.tracks[i].notes])))
    return {index: programs[min(rank, len(programs) - 1)] for rank, index in enumerate(ranked)}


def parse_bars(text: str, name: str) -> list[int]:
    """Bar numbers (1-based) of ``"1-4,9-12"``.

    Raises:
        ConfigError: naming ``name``, for text that is not such a list.
    """
    bars: list[int] = []
    for part in text.split(","):
        part = part.strip()
        try:
            first, _, last = part.partition("-")
            low, high = int(first), int(last or first)
        except ValueError:
            raise ConfigError(f"{name} {text!r}: expected bar numbers such as 1-4,9-12") from None
        if low < 1 or high < low:
            raise ConfigError(f"{name} {text!r}: bar ranges go from 1 upwards, low-high")
        bars += range(low, high + 1)
    return sorted(set(bars))


def _runs(bars: Sequence[int], longest: int) -> list[list[int]]:
    """Consecutive runs of sorted ``bars``, each cut to at most ``longest`` bars."""
    runs: list[list[int]] = []
    for bar in bars:
        if runs and bar == runs[-1][-1] + 1 and len(runs[-1]) < longest:
            runs[-1].append(bar)
        else:
            runs.append([bar])
    return runs


class InfillControl:
    """Grammar masks and stopping rule for sampling a gap of ``bars`` bars (a ``GenerationControl``).

    Each new bar opens with a ``Bar`` token and the original bar's ``TimeSig`` token (forced), no
    more than ``bars`` Bar tokens are allowed, and ``Infill_End`` only once all bars are open and
    the row is between notes. Once past ``budget`` tokens and between notes, a row may only open
    the next bar or end.
    """

    def __init__(
        self,
        grammar: TokenGrammar,
        conditions: ConditionTokens,
        rows: int,
        signatures: Sequence[int],
        budget: int,
    ) -> None:
        self.grammar, self.signatures, self.budget = grammar, list(signatures), budget
        self.end = conditions.id("Infill_End")
        self.states = [grammar.initial_state() for _ in range(rows)]
        self.opened = [0] * rows
        self.tokens: list[list[int]] = [[] for _ in range(rows)]
        self.done = [False] * rows
        size = grammar.vocab_size
        self.bar_mask = grammar.type_masks["Bar"]
        self.end_mask = torch.zeros(size, dtype=torch.bool)
        self.end_mask[self.end] = True
        self.signature_masks = {}
        for token in set(self.signatures):
            mask = torch.zeros(size, dtype=torch.bool)
            mask[token] = True
            self.signature_masks[token] = mask

    def allowed(self) -> torch.Tensor:
        return torch.stack([self._allowed(row) for row in range(len(self.states))])

    def _allowed(self, row: int) -> torch.Tensor:
        state = self.states[row]
        if self.done[row]:
            return self.end_mask
        if state.last_type == "Bar":  # the bar keeps its original meter, so later bars stay in place
            return self.signature_masks[self.signatures[self.opened[row] - 1]]
        all_open = self.opened[row] >= len(self.signatures)
        between_notes = state.last_type in ("Duration", "TimeSig")
        if len(self.tokens[row]) >= self.budget and between_notes:
            # Past the budget: no more notes, only the next bar or the end.
            return self.end_mask if all_open else self.bar_mask
        mask = self.grammar.allowed(state)
        if all_open:
            mask = mask & ~self.bar_mask
            if between_notes:
                mask = mask | self.end_mask
        return mask

    def update(self, tokens: torch.Tensor) -> None:
        for row, token in enumerate(tokens.tolist()):
            if self.done[row]:
                continue
            if token == self.end:
                self.done[row] = True
                continue
            self.tokens[row].append(token)
            if self.grammar.types[token] == "Bar":
                self.opened[row] += 1
            self.grammar.advance(self.states[row], token)

    def finished(self) -> bool:
        return all(self.done)


def regenerate_bars(
    composer: LoadedComposer,
    prime: str | Path | symusic.Score,
    regenerate: Sequence[int],
    keep: Sequence[int] | None = None,
    *,
    variations: int = 1,
    style: str | None = None,
    voices: int | None = None,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    seed: int = 0,
    style_guidance: float = 1.0,
) -> list[symusic.Score]:
    """Rewrite bars ``regenerate`` of ``prime``; every kept bar stays note for note.

    Args:
        composer: a many-style composer (trained with infilling examples).
        prime: the MIDI file (or score) to edit.
        regenerate: bar numbers (1-based) to rewrite.
        keep: bar numbers kept (default: every bar not regenerated); other bars are emptied.
        variations: alternatives to write, one score each.
        style, voices: conditions (None: any).
        temperature, top_k, top_p, seed, style_guidance: sampling, as in
            :func:`timbre.symbolic.compose.compose`.

    Returns:
        ``variations`` scores in the primer's ticks; notes of kept bars are the primer's own.

    Raises:
        ConfigError: a composer without infilling, bars outside the piece, overlapping bars.
        MidiError: naming the file, when it holds nothing the tokenizer can read.
    """
    _check_sampling(variations, 1, None, temperature, top_k, top_p)
    if composer.conditions is None:
        raise ConfigError(f"{composer.path}: this composer was trained without infilling and cannot regenerate bars")
    check_style_guidance(composer, style, style_guidance)
    conditions = composer.conditions
    name = str(prime) if isinstance(prime, (str, Path)) else "primer"
    score = load_score(prime) if isinstance(prime, (str, Path)) else prime
    programs = composer.voice_programs(style, voices) or composer.programs
    assignment = voice_assignment(score, programs)
    fitted = score.copy()
    for index, program in assignment.items():
        fitted.tracks[index].program = program
    fitted.tracks = [fitted.tracks[i] for i in sorted(assignment)]
    if not assignment:
        raise MidiError(f"{name}: the MIDI file holds no pitched notes to regenerate around")
    try:
        ids = encode_score(composer.tokenizer, fitted)
    except MidiError as error:
        raise MidiError(f"{name}: {error}") from None
    grid = bar_grid(composer, ids, score.ticks_per_quarter)
    regenerate = sorted(set(regenerate))
    if not regenerate:
        raise ConfigError("no bars to regenerate")
    outside = [bar for bar in regenerate if bar > grid.count]
    if outside:
        raise ConfigError(f"{name} has {grid.count} bars; cannot regenerate bar {outside[0]}")
    kept = set(range(1, grid.count + 1)) - set(regenerate) if keep is None else set(keep)
    overlap = kept & set(regenerate)
    if overlap:
        raise ConfigError(f"bar {min(overlap)} is both kept and regenerated")
    empty_bars = [[bar[0], grid.time_signature_tokens[i]] for i, bar in enumerate(grid.token_bars)]
    # Context of each variation: kept bars as written, regenerated ones as sampled so far.
    contexts = [
        [grid.token_bars[i] if i + 1 in kept else empty_bars[i] for i in range(grid.count)] for _ in range(variations)
    ]
    head = composer.head(style, voices)
    free_head = composer.head("any", voices) if style_guidance != 1.0 else None  # checked: a style to guide
    # Only the primer's own voices are written: the regenerated bars keep its instrumentation.
    grammar = TokenGrammar(composer.tokenizer, sorted(set(assignment.values())), conditions)
    generator = torch.Generator().manual_seed(seed)
    model = composer.sampler
    for run in _runs(regenerate, conditions.max_fill_bars):
        first, last = run[0] - 1, run[-1]
        budget = MAX_TOKENS_PER_BAR * len(run)
        room = model.max_context - len(head) - 5 - min(budget, model.max_context // 3)
        # One variation at a time: after the first run their contexts differ in length.
        for context in contexts:
            before, after = fit_context(context[:first], context[last:], max(room, 0))
            prompt = torch.tensor([infill_sequence(conditions, head, before, after, len(run))], dtype=torch.long)
            unconditional = (
                torch.tensor([infill_sequence(conditions, free_head, before, after, len(run))], dtype=torch.long)
                if free_head is not None
                else None
            )
            control = InfillControl(grammar, conditions, 1, grid.time_signature_tokens[first:last], budget)
            with threads(SEQUENTIAL_STEP_THREADS):
                model.generate(
                    prompt, budget + 8 * len(run) + 16, temperature=temperature, top_k=top_k, top_p=top_p,
                    generator=generator, control=control, unconditional=unconditional, guidance=style_guidance,
                )  # fmt: skip
            context[first:last] = _split_bars(control.tokens[0], composer, len(run), grid, first)
    return [_splice(score, composer, context, grid, kept, set(regenerate), assignment) for context in contexts]


def _split_bars(tokens: list[int], composer: LoadedComposer, count: int, grid: BarGrid, first: int) -> list[list[int]]:
    """The sampled gap as ``count`` bars (bars the sampler left unopened stay empty)."""
    bar_id = composer.tokenizer.vocab["Bar_None"]
    starts = [*bar_token_starts(tokens, bar_id).tolist(), len(tokens)]
    bars = [tokens[starts[i] : starts[i + 1]] for i in range(len(starts) - 1)]
    while len(bars) < count:
        bars.append([bar_id, grid.time_signature_tokens[first + len(bars)]])
    return bars[:count]


def _splice(
    score: symusic.Score,
    composer: LoadedComposer,
    bars: list[list[int]],
    grid: BarGrid,
    kept: set[int],
    regenerated: set[int],
    assignment: dict[int, int],
) -> symusic.Score:
    """The primer with the regenerated bars' notes swapped for the sampled ones."""
    result = score.copy()
    starts = np.asarray(grid.starts)

    def bar_of(tick: int) -> int:
        """1-based bar a tick falls in (ticks past the last bar belong to no bar: 0)."""
        index = int(np.searchsorted(starts, tick, side="right"))
        return index if index <= grid.count else 0

    for track in result.tracks:
        if track.is_drum:
            continue
        # Notes after the last bar (a trailing release) stay; notes in emptied or regenerated bars go.
        track.notes = [note for note in track.notes if bar_of(note.time) in kept or bar_of(note.time) == 0]
    track_of_program: dict[int, int] = {}
    for index, program in sorted(assignment.items()):
        track_of_program.setdefault(program, index)
    velocity = {index: int(np.median([note.velocity for note in score.tracks[index].notes])) for index in assignment}
    # Kept notes by (track, pitch): a new note may not overlap one (see _fit_around_kept).
    kept_by_pitch: dict[tuple[int, int], list[tuple[int, int]]] = {}
    for index in set(track_of_program.values()):
        for note in result.tracks[index].notes:
            kept_by_pitch.setdefault((index, note.pitch), []).append((note.time, note.time + note.duration))
    for bar in sorted(regenerated):
        decoded = decode_ids(composer.tokenizer, [*bars[bar - 1]])
        scale = Fraction(score.ticks_per_quarter, decoded.ticks_per_quarter)
        offset = grid.starts[bar - 1]
        for track in decoded.tracks:
            index = track_of_program[track.program]  # the grammar allowed the primer's voices only
            target = result.tracks[index]
            for note in track.notes:
                time = offset + round(note.time * scale)
                duration = _fit_around_kept(
                    time, max(1, round(note.duration * scale)), kept_by_pitch.get((index, note.pitch), [])
                )
                if duration:
                    target.notes.append(symusic.Note(time, duration, note.pitch, velocity.get(index, 90)))
    for index in set(track_of_program.values()):  # tracks that got new notes; the others stay as read
        result.tracks[index].notes.sort(key=lambda note: (note.time, note.pitch))
    return result


def _fit_around_kept(time: int, duration: int, kept: Sequence[tuple[int, int]]) -> int:
    """The duration a new note may have beside the kept notes of its track and pitch (``(start,
    end)`` ticks), or 0 to drop it.

    One MIDI channel cannot sound a pitch twice: written to a file, a note struck while another of
    its pitch sounds ends that one, and a note held over another's onset takes its end. So a new
    note struck while a kept one sounds is dropped, and one held into a kept note's onset is cut
    there; the kept notes come back from the file exactly as they were.
    """
    for start, end in kept:
        if start <= time < end:
            return 0
        if time < start < time + duration:
            duration = start - time
    return duration


def kept_notes(
    score: symusic.Score, bars: Sequence[int], starts: Sequence[int]
) -> list[list[tuple[int, int, int, int]]]:
    """Per track, ``(time, duration, pitch, velocity)`` of the notes starting in ``bars`` (1-based).

    What must be identical before and after a regeneration (tests, evaluation).
    """
    wanted = set(bars)
    boundaries = np.asarray(starts)
    result = []
    for track in score.tracks:
        rows = []
        for note in track.notes:
            bar = int(np.searchsorted(boundaries, note.time, side="right"))
            if bar in wanted and bar < len(boundaries):
                rows.append((note.time, note.duration, note.pitch, note.velocity))
        result.append(sorted(rows))  # the order of simultaneous notes in a file carries no music
    return result
