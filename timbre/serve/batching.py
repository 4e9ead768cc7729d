"""Serving notes quickly: a decoder thread that batches concurrent requests, and an LRU cache.

The decoder runs in one thread of its own. A request does not wait for company: the thread takes
whatever requests are queued the moment it is free, up to ``max_batch``, and decodes those of the
same length in one :meth:`~timbre.TimbreModel.synthesize_batch` call. A lone note therefore starts
at once, and under load the notes that queued while the previous batch ran share the next pass
(on two CPU cores a batch of 8 costs about 6 single notes, see ``benchmarks/serve_latency.py``).
"""

from __future__ import annotations

import io
import queue
import threading
import time
from collections import OrderedDict
from collections.abc import Hashable
from concurrent.futures import Future
from dataclasses import dataclass, field

import numpy as np
import soundfile

from timbre.embedding import Embedding
from timbre.synthesizer import TimbreModel

DEFAULT_MAX_BATCH = 8


@dataclass
class NoteJob:
    """One note to decode and where its waveform ``[samples]`` goes."""

    embedding: Embedding
    pitch: int
    seconds: float
    velocity: int
    result: Future = field(default_factory=Future)


class NoteBatcher:
    """Decodes notes in a background thread, batching the requests that arrive while it is busy.

    The noise of the parallel decoder is drawn per batch row, so a note's noise component (not its
    harmonic part) depends on the row it lands in; the first row of a batch equals
    :meth:`~timbre.TimbreModel.synthesize` of the same note.

    Args:
        model: the model that synthesizes.
        max_batch: most notes decoded in one pass.
    """

    def __init__(self, model: TimbreModel, max_batch: int = DEFAULT_MAX_BATCH) -> None:
        self.model = model
        self.max_batch = max(1, int(max_batch))
        self.batch_sizes: list[int] = []  # of every decoder pass, for benchmarks and tests
        # CPU time of the decoder thread in its passes: unlike wall time, other processes on the
        # machine hardly change it.
        self.cpu_seconds = 0.0
        self._queue: queue.SimpleQueue[NoteJob | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="timbre-decoder", daemon=True)
        self._thread.start()

    def submit(self, embedding: Embedding, pitch: int, seconds: float, velocity: int) -> Future:
        """Queue a note; the future yields its waveform ``[round(seconds * rate)]`` float32."""
        job = NoteJob(embedding, pitch, seconds, velocity)
        self._queue.put(job)
        return job.result

    def warm_up(self, embedding: Embedding, pitch: int, seconds: float, velocity: int) -> None:
        """Decode one note and wait for it: the first pass of a fresh thread is many times slower
        than the next ones (allocations, kernel selection), and it should not be a player's first note."""
        self.submit(embedding, pitch, seconds, velocity).result()
        self.batch_sizes.clear()
        self.cpu_seconds = 0.0

    def close(self) -> None:
        """Stop the decoder thread after the queued notes."""
        self._queue.put(None)
        self._thread.join()

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            jobs = [first]
            stop = False
            while len(jobs) < self.max_batch:
                try:
                    job = self._queue.get_nowait()
                except queue.Empty:
                    break
                if job is None:
                    stop = True
                    break
                jobs.append(job)
            # synthesize_batch pads every row to the longest note: only equal lengths share a pass.
            by_length: dict[float, list[NoteJob]] = {}
            for job in jobs:
                by_length.setdefault(job.seconds, []).append(job)
            for group in by_length.values():
                self._decode(group)
            if stop:
                return

    def _decode(self, jobs: list[NoteJob]) -> None:
        self.batch_sizes.append(len(jobs))
        started = time.thread_time()
        try:
            audio = self.model.synthesize_batch(
                [job.embedding for job in jobs],
                pitches=[job.pitch for job in jobs],
                seconds=[job.seconds for job in jobs],
                velocities=[job.velocity for job in jobs],
            )
        except Exception as error:  # handed to every waiting request, which reports it
            for job in jobs:
                job.result.set_exception(error)
            return
        finally:
            self.cpu_seconds += time.thread_time() - started
        for job, row in zip(jobs, audio):
            job.result.set_result(row[: round(job.seconds * self.model.sample_rate)])


class LRUCache:
    """A thread-safe least-recently-used cache of byte strings, bounded by their total size.

    Args:
        max_bytes: total size of the values kept; the least recently used go first.
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = int(max_bytes)
        self.size = 0
        self.hits = 0
        self.misses = 0
        self._items: OrderedDict[Hashable, bytes] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._items)

    def get(self, key: Hashable) -> bytes | None:
        with self._lock:
            value = self._items.get(key)
            if value is None:
                self.misses += 1
                return None
            self._items.move_to_end(key)
            self.hits += 1
            return value

    def put(self, key: Hashable, value: bytes) -> None:
        if len(value) > self.max_bytes:
            return
        with self._lock:
            previous = self._items.pop(key, None)
            if previous is not None:
                self.size -= len(previous)
            self._items[key] = value
            self.size += len(value)
            while self.size > self.max_bytes:
                _, evicted = self._items.popitem(last=False)
                self.size -= len(evicted)


def wav_bytes(audio: np.ndarray, sample_rate: int) -> bytes:
    """A mono 16-bit PCM WAV file, in memory, of ``audio`` ``[samples]`` in [-1, 1]."""
    buffer = io.BytesIO()
    soundfile.write(buffer, np.clip(audio, -1.0, 1.0), sample_rate, subtype="PCM_16", format="WAV")
    return buffer.getvalue()
