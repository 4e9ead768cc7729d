"""music21's whole bundled corpus as MIDI, each piece labelled with a style and a voice count.

Conversion runs once into ``<cache>/music21/`` (one MIDI file per piece) with a progress bar; a
``manifest.json`` lists every converted piece (``id``, ``style``, ``voices``, ``file``,
``collection``, ``title``) and the skipped ones with the reason. It is written after every
source file, so an interrupted conversion resumes where it stopped. Pieces that fail to convert
are skipped with one summary line at the end; music21's own warnings are silenced.

A piece's parts become tracks, highest (by mean pitch) first, with the programs of its style
(:mod:`timbre.data.styles`). Repeats are expanded where music21 can; a pickup bar is padded to a
whole bar so that REMI's bar lines fall where the score's do.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import signal
import threading
import warnings
from collections import Counter, defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import symusic

from timbre.data.styles import EXCLUDED_PATHS, EXCLUDED_SUFFIXES, STYLE_NAMES, style_named, style_of_collection
from timbre.errors import ConfigError, DatasetError, MidiError
from timbre.io.files import atomic_write

TICKS_PER_QUARTER = 480
VELOCITY = 90  # music21's own MIDI velocity: the corpus has (almost) no dynamics
CORPUS_FOLDER = "music21"
MANIFEST = "manifest.json"
# Bump when the conversion changes, so that an old cache is rebuilt rather than mixed in.
CONVERSION_VERSION = 1

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class CorpusPiece:
    """One converted piece.

    Attributes:
        id: ``<corpus path>`` or ``<corpus path>#<number>`` for a tune inside an ABC file.
        style: its style name.
        voices: tracks with notes (parts beyond the style's programs merged into the lowest).
        file: the MIDI file, relative to the corpus cache folder.
        collection: the music21 corpus folder.
        title: the piece's title, when the corpus gives one.
    """

    id: str
    style: str
    voices: int
    file: str
    collection: str
    title: str = ""


@dataclass(frozen=True)
class SourceFile:
    """A corpus file: ``path`` relative to music21's corpus folder, and its collection."""

    path: str
    collection: str


def corpus_sources(styles: Sequence[str] | None = None) -> list[SourceFile]:
    """The corpus files of ``styles`` (default: all), sorted by path.

    Read from the corpus folder itself (music21's metadata cache is much slower to walk). Of two
    encodings of one work (``x.krn`` beside ``x.mxl``) only the MusicXML is kept.
    """
    from music21 import corpus

    wanted = set(styles or STYLE_NAMES)
    relative = []
    for full in corpus.getCorePaths():
        path = str(full).replace("\\", "/").split("/music21/corpus/", 1)[-1]
        style = style_of_collection(path.split("/")[0])
        if style is None or style.name not in wanted or "/" not in path:
            continue
        if path.endswith(EXCLUDED_SUFFIXES) or any(path.startswith(excluded) for excluded in EXCLUDED_PATHS):
            continue
        relative.append(path)
    stems = {path.rsplit(".", 1)[0] for path in relative if path.endswith((".mxl", ".xml", ".musicxml"))}
    return [
        SourceFile(path, path.split("/")[0])
        for path in sorted(relative)
        if not (path.endswith(".krn") and path.rsplit(".", 1)[0] in stems)
    ]


# music21's repeat expansion never returns on a few ABC tunes (e.g. Aird's "Yanky Doodle"): past
# this many seconds a piece keeps its repeats as written; past PIECE_SECONDS it is skipped.
REPEAT_EXPANSION_SECONDS = 20
PIECE_SECONDS = 120


@contextlib.contextmanager
def _time_limit(seconds: int) -> Iterator[None]:
    """Raise TimeoutError in the block after ``seconds`` (SIGALRM: main thread on POSIX only;
    elsewhere there is no limit)."""
    if not hasattr(signal, "SIGALRM") or threading.current_thread() is not threading.main_thread():
        yield
        return

    def expire(signum: int, frame: Any) -> None:
        raise TimeoutError(f"took longer than {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    remaining = signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
        if remaining:  # an outer limit keeps running
            signal.alarm(remaining)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence music21: its warnings, its logging and what it prints to stderr."""
    with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")
        yield


def _parse_source(source: SourceFile) -> list[tuple[str, Any]]:
    """``[(piece id, music21 score)]`` of a corpus file: one parse, every tune of an ABC opus."""
    from music21 import corpus, stream

    parsed = corpus.parse(source.path, forceSource=True)
    if isinstance(parsed, stream.Opus):
        works = []
        for index, score in enumerate(parsed.scores):
            number = score.metadata.number if score.metadata is not None and score.metadata.number else index + 1
            works.append((f"{source.path}#{number}", score))
        return works
    return [(source.path, parsed)]


def music21_to_score(work: Any, programs: Sequence[int]) -> symusic.Score:
    """A music21 score as a symusic score: one track per part, highest part first.

    Args:
        work: a music21 ``Score`` (or a single ``Part``).
        programs: General MIDI programs of the voices, highest first; extra parts take the last.

    Returns:
        A score at :data:`TICKS_PER_QUARTER`, velocity :data:`VELOCITY`, tracks with notes only,
        one per distinct program (parts sharing a program are merged).

    Raises:
        MidiError: the work has no pitched notes.
    """
    from music21 import bar, meter, repeat, spanner

    # Expansion deep-copies the whole score: only worth it where there is something to expand
    # (most of Palestrina and Bach has no repeat); the parse is ours, so ties are then stripped
    # in place rather than on another copy. Both give the same notes as before in about a quarter
    # less time.
    if work.recurse().getElementsByClass((bar.Repeat, repeat.RepeatMark, spanner.RepeatBracket)).first() is not None:
        try:
            with _time_limit(REPEAT_EXPANSION_SECONDS):
                work = work.expandRepeats()
        except Exception:  # noqa: BLE001 - badly formed (or endless) repeats: keep the score as written
            pass
    parts = list(work.parts) if hasattr(work, "parts") and len(work.parts) else [work]
    first_measure = parts[0].getElementsByClass("Measure").first()
    pickup = float(first_measure.paddingLeft) if first_measure is not None else 0.0

    def ticks(offset: float) -> int:
        return round((float(offset) + pickup) * TICKS_PER_QUARTER)

    score = symusic.Score(TICKS_PER_QUARTER)
    previous = None
    for signature in parts[0].flatten().getElementsByClass(meter.TimeSignature):
        numerator_denominator = (signature.numerator, signature.denominator)
        if numerator_denominator == previous:
            continue
        previous = numerator_denominator
        # The opening signature stays at tick 0 so the padded pickup bar has a meter too.
        time = 0 if signature.offset == 0 else ticks(signature.offset)
        score.time_signatures.append(symusic.TimeSignature(time, *numerator_denominator))

    voices = []
    for part in parts:
        notes = []
        part.stripTies(inPlace=True)
        for element in part.flatten().notes:
            duration = ticks(element.offset + element.quarterLength) - ticks(element.offset)
            # Grace notes have no duration of their own; chord symbols (ABC accompaniment
            # names) are labels, not notes of the part.
            if duration <= 0 or "Harmony" in element.classes:
                continue
            for pitch in getattr(element, "pitches", ()):
                notes.append(symusic.Note(ticks(element.offset), duration, pitch.midi, VELOCITY))
        if notes:
            voices.append(notes)
    if not voices:
        raise MidiError("no pitched notes")
    voices.sort(key=lambda notes: -float(np.mean([note.pitch for note in notes])))
    tracks: dict[int, symusic.Track] = {}
    for rank, notes in enumerate(voices):
        program = programs[min(rank, len(programs) - 1)]
        if program not in tracks:
            tracks[program] = symusic.Track(name=f"voice {len(tracks) + 1}", program=program, is_drum=False)
        for note in notes:
            tracks[program].notes.append(note)
    for track in tracks.values():
        track.notes.sort(key=lambda note: (note.time, note.pitch))
    score.tracks = list(tracks.values())
    return score


def _piece_file(piece_id: str) -> str:
    return piece_id.replace("/", "__").replace("#", "-") + ".mid"


def corpus_folder(cache_dir: str | Path | None = None) -> Path:
    """``<cache>/music21``: the converted corpus (default cache: :func:`timbre.constants.cache_dir`)."""
    from timbre.constants import cache_dir as default_cache_dir

    return Path(cache_dir or default_cache_dir()) / CORPUS_FOLDER


def _read_manifest(folder: Path) -> dict[str, Any]:
    """The manifest: ``pieces`` (rows of :class:`CorpusPiece`), ``skipped`` ({id: reason}) and
    ``done_sources`` (files converted completely; a limited run may convert part of a file)."""
    path = folder / MANIFEST
    if path.exists():
        manifest = json.loads(path.read_text())
        if manifest.get("version") == CONVERSION_VERSION:
            manifest.setdefault("done_sources", [])
            return manifest
    return {"version": CONVERSION_VERSION, "pieces": [], "skipped": {}, "done_sources": []}


def _source_of(piece_id: str) -> str:
    return piece_id.split("#", 1)[0]


@dataclass(frozen=True)
class _ConvertedWork:
    """One work of a source file after conversion: its MIDI bytes, or why it was skipped."""

    piece_id: str
    midi: bytes | None
    voices: int
    title: str
    error: str


def _style_name(source: SourceFile) -> str:
    style = style_of_collection(source.collection)
    assert style is not None, "corpus_sources keeps styled collections only"
    return style.name


ConversionTask = tuple[SourceFile, int | None, frozenset[str]]  # source, room (None: all), ids done


def _convert_source(task: ConversionTask) -> tuple[SourceFile, int, list[_ConvertedWork]]:
    """Parse one corpus file and convert its works not yet attempted (at most ``room`` of them).

    Runs in a worker process when converting in parallel: it returns bytes and writes nothing,
    so that only the parent touches the cache folder and the manifest.

    Returns:
        ``(source, number of works in the file, converted works in corpus order)``.
    """
    source, room, known = task
    programs = style_named(_style_name(source)).programs
    converted = []
    with _quiet():
        try:
            works = _parse_source(source)
        except Exception as error:  # noqa: BLE001 - music21 raises many kinds on malformed files
            works = [(source.path, error)]
        for piece_id, work in works[:room]:
            if piece_id in known:
                continue
            try:
                if isinstance(work, Exception):
                    raise work
                with _time_limit(PIECE_SECONDS):
                    score = music21_to_score(work, programs)
            except Exception as error:  # noqa: BLE001 - one bad piece must not stop the corpus
                converted.append(_ConvertedWork(piece_id, None, 0, "", f"{type(error).__name__}: {error}"[:300]))
                continue
            title = str(work.metadata.title or "") if getattr(work, "metadata", None) is not None else ""
            converted.append(_ConvertedWork(piece_id, score.dumps_midi(), len(score.tracks), title, ""))
    return source, len(works), converted


def build_music21_corpus(
    cache_dir: str | Path | None = None,
    styles: Sequence[str] | None = None,
    limit_per_style: int | None = None,
    progress: bool = True,
    workers: int = 1,
) -> list[CorpusPiece]:
    """Convert the corpus once (resuming an interrupted conversion) and return its pieces.

    Args:
        cache_dir: cache root; files go to ``<cache_dir>/music21``.
        styles: convert and return only these styles (default: all of :data:`STYLE_NAMES`).
        limit_per_style: only the first N pieces of each style, in corpus order (tests, quick runs).
        progress: show a progress bar over the source files.
        workers: processes parsing corpus files at once (music21 is pure Python: one per core).
            The result and the manifest do not depend on it.

    Raises:
        ConfigError: an unknown style, or ``workers`` < 1.
        DatasetError: nothing could be converted.
    """
    unknown = sorted(set(styles or ()) - set(STYLE_NAMES))
    if unknown:
        raise ConfigError(f"unknown styles {unknown}; the corpus has {list(STYLE_NAMES)}")
    if workers < 1:
        raise ConfigError(f"workers must be at least 1, got {workers}")
    folder = corpus_folder(cache_dir)
    folder.mkdir(parents=True, exist_ok=True)
    manifest = _read_manifest(folder)
    complete = set(manifest["done_sources"])
    # Ids converted (or skipped) so far per source file, in conversion order.
    attempted: dict[str, list[str]] = defaultdict(list)
    for piece_id in [row["id"] for row in manifest["pieces"]] + list(manifest["skipped"]):
        attempted[_source_of(piece_id)].append(piece_id)
    sources = corpus_sources(styles)
    skipped_now = 0

    def record(source: SourceFile, room: int | None, work_count: int, converted: list[_ConvertedWork]) -> None:
        """Write a source's converted works and the manifest (in the parent process only)."""
        nonlocal skipped_now
        style_name = _style_name(source)
        for work in converted:
            attempted[source.path].append(work.piece_id)
            if work.midi is None:
                manifest["skipped"][work.piece_id] = work.error
                skipped_now += 1
                continue
            file = _piece_file(work.piece_id)
            with atomic_write(folder / file) as handle:
                handle.write(work.midi)
            piece = CorpusPiece(work.piece_id, style_name, work.voices, file, source.collection, work.title)
            manifest["pieces"].append(asdict(piece))
        if room is None or work_count <= room:
            manifest["done_sources"].append(source.path)
            complete.add(source.path)
        with atomic_write(folder / MANIFEST, "w") as handle:
            json.dump(manifest, handle, indent=0)

    from tqdm.auto import tqdm

    bar = tqdm(total=len(sources), desc="converting music21 corpus", unit="file", disable=not progress)
    in_parallel = limit_per_style is None and workers > 1
    if in_parallel:
        import multiprocessing

        tasks = [(source, None, frozenset(attempted[source.path])) for source in sources if source.path not in complete]
        bar.update(len(sources) - len(tasks))
        # imap returns results in corpus order, so the manifest is the same as a serial run's.
        with multiprocessing.get_context("spawn").Pool(workers) as pool:
            for source, work_count, converted in pool.imap(_convert_source, tasks):
                record(source, None, work_count, converted)
                bar.update(1)

    # Serially, the sources not converted above: with a limit, a source's room depends on what
    # the sources before it gave. The same pass picks the pieces to return.
    wanted: list[str] = []
    chosen_per_style: Counter[str] = Counter()
    for source in sources:
        if not in_parallel:
            bar.update(1)
        room = None if limit_per_style is None else limit_per_style - chosen_per_style[_style_name(source)]
        if room is not None and room <= 0:
            continue
        known = attempted[source.path]
        if source.path not in complete and (room is None or len(known) < room):
            record(source, room, *_convert_source((source, room, frozenset(known)))[1:])
        chosen = known[:room]
        wanted += chosen
        chosen_per_style[_style_name(source)] += len(chosen)
    bar.close()
    if skipped_now:
        logger.warning(
            "music21 corpus: %d pieces could not be converted and were skipped (reasons in %s)",
            skipped_now,
            folder / MANIFEST,
        )
    rows = {row["id"]: row for row in manifest["pieces"]}
    pieces = [CorpusPiece(**rows[piece_id]) for piece_id in wanted if piece_id in rows]
    if not pieces:
        raise DatasetError(f"{folder}: no piece of styles {list(styles or STYLE_NAMES)} could be converted")
    return pieces


def pieces_by_style(pieces: Sequence[CorpusPiece]) -> dict[str, list[CorpusPiece]]:
    """The pieces grouped by style, in :data:`STYLE_NAMES` order."""
    grouped: dict[str, list[CorpusPiece]] = {name: [] for name in STYLE_NAMES}
    for piece in pieces:
        grouped[piece.style].append(piece)
    return {name: group for name, group in grouped.items() if group}


def style_programs(styles: Sequence[str] | None = None) -> dict[str, list[int]]:
    """``{style: programs of its voices, highest first}`` (recorded with the tokenizer)."""
    return {name: list(style_named(name).programs) for name in (styles or STYLE_NAMES)}


def write_archive(archive: str | Path, cache_dir: str | Path | None = None) -> Path:
    """Pack the converted corpus (MIDI files and manifest) into one ``.tar.xz``, atomically.

    The conversion takes CPU-hours; the archive carries it to another machine or a later session
    (``--from-archive``), a few MB for the whole corpus.

    Raises:
        DatasetError: nothing has been converted into the cache yet.
    """
    import tarfile

    folder = corpus_folder(cache_dir)
    if not (folder / MANIFEST).exists():
        raise DatasetError(f"{folder}: no converted corpus to archive (no {MANIFEST})")
    archive = Path(archive)
    with atomic_write(archive) as handle, tarfile.open(fileobj=handle, mode="w:xz") as packed:
        for path in sorted(folder.iterdir()):
            if path.suffix == ".mid" or path.name == MANIFEST:
                packed.add(path, arcname=path.name)
    return archive


def read_archive(archive: str | Path, cache_dir: str | Path | None = None) -> int:
    """Unpack an archive of :func:`write_archive` into the cache, where the cache has less.

    A cache that already lists every piece the archive does is left as it is; otherwise the
    archive replaces its manifest and adds its files. Returns the pieces the cache now lists.

    Raises:
        DatasetError: the archive is missing, unreadable, or of another conversion version.
    """
    import tarfile

    archive = Path(archive)
    folder = corpus_folder(cache_dir)
    try:
        with tarfile.open(archive, mode="r:*") as packed:
            member = packed.extractfile(MANIFEST)
            if member is None:
                raise DatasetError(f"{archive}: no {MANIFEST} in the archive")
            manifest = json.loads(member.read())
            if manifest.get("version") != CONVERSION_VERSION:
                raise DatasetError(
                    f"{archive}: conversion version {manifest.get('version')}, this timbre converts version "
                    f"{CONVERSION_VERSION}; convert the corpus again"
                )
            present = {row["id"] for row in _read_manifest(folder)["pieces"]} if folder.exists() else set()
            if {row["id"] for row in manifest["pieces"]} <= present:
                return len(present)
            folder.mkdir(parents=True, exist_ok=True)
            names = [name for name in packed.getnames() if name != MANIFEST]
            packed.extractall(folder, members=[packed.getmember(name) for name in names], filter="data")
    except (OSError, tarfile.TarError, KeyError, ValueError) as error:
        # tarfile lists every compression it tried, one per line: the first line says enough.
        reason = (str(error).splitlines() or [type(error).__name__])[0]
        raise DatasetError(f"{archive}: not a readable corpus archive ({reason})") from None
    # The manifest last, atomically: an interrupted unpack leaves the old cache consistent.
    with atomic_write(folder / MANIFEST, "w") as handle:
        json.dump(manifest, handle, indent=0)
    return len(manifest["pieces"])


def main(argv: Sequence[str] | None = None) -> None:
    """Convert the corpus ahead of training, printing a summary per style.

    ``python -m timbre.data.music21_corpus [STYLE ...] [--workers N] [--from-archive F] [--archive F]``
    (default: every style). ``--workers`` converts N files at once; separate processes must not
    share a cache folder, since each rewrites the manifest. An unknown style ends in one line and
    exit status 2; an unreadable archive in one line and exit status 1.
    """
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m timbre.data.music21_corpus",
        description="Convert music21's bundled corpus to MIDI once (resumable), labelled by style.",
    )
    parser.add_argument("styles", nargs="*", metavar="STYLE", help=f"styles to convert (default: all of {STYLE_NAMES})")
    parser.add_argument("--workers", type=int, default=1, help="processes converting at once (one per core)")
    parser.add_argument("--from-archive", metavar="FILE", help="first unpack a converted corpus (--archive's output)")
    parser.add_argument("--archive", metavar="FILE", help="then pack the converted corpus into FILE (.tar.xz)")
    arguments = parser.parse_args(argv)
    if arguments.workers < 1:
        parser.error(f"--workers must be at least 1, got {arguments.workers}")
    unknown = sorted(set(arguments.styles) - set(STYLE_NAMES))
    if unknown:
        parser.error(f"unknown styles {unknown}; the corpus has {list(STYLE_NAMES)}")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    styles = arguments.styles or None
    try:
        if arguments.from_archive:
            print(f"{read_archive(arguments.from_archive)} pieces in {corpus_folder()}")
        pieces = build_music21_corpus(styles=styles, workers=arguments.workers)
        if arguments.archive:
            print(f"wrote {write_archive(arguments.archive)}")
    except (DatasetError, OSError) as error:
        parser.exit(1, f"error: {error}\n")
    counts = Counter(piece.style for piece in pieces)
    voices: dict[str, Counter[int]] = defaultdict(Counter)
    for piece in pieces:
        voices[piece.style][piece.voices] += 1
    for name in styles or STYLE_NAMES:
        print(f"{name:12s} {counts[name]:6d} pieces  voices {dict(sorted(voices[name].items()))}")


if __name__ == "__main__":
    main()
