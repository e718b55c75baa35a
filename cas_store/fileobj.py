"""File objects returned by ``CASFileSystem.open``.

:class:`WriteFile` cuts what is written into chunks with the store's :class:`Chunker`,
hashes each and hands it to a :class:`ChunkSink` as it completes; ``close()`` commits.
:class:`ReadFile` reads a local (cached) copy and checks its digest whenever the whole
content passes through it in order. :class:`SeekableReader` holds what every reader
shares: position, seek and tell, ``read`` into one buffer.
"""

from __future__ import annotations

import concurrent.futures
import functools
import io
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import BinaryIO, Protocol

from cas_store.chunking import Chunker
from cas_store.errors import IntegrityError
from cas_store.format import Chunk
from cas_store.hashing import Hasher, new_hasher


class ChunkSink(Protocol):
    """Where a :class:`WriteFile` sends what it cuts (the writer of one file)."""

    def add(self, chunk: memoryview, digest: str, hashed: bool = True) -> None:
        """A complete chunk and its digest. Copy what you keep: the buffer is reused.

        ``hashed=False``: the digest was not computed from these bytes but taken from a chunk
        run (the content up to the chunk's end matched the run's prefix digest); check it
        before storing the bytes anywhere under it, so that a damaged run cannot store them
        under another digest."""

    def commit(self, size: int, digest: str, chunks: list[Chunk], inline: bytes | None) -> None:
        """The file is complete: publish it (``inline`` holds a small file's bytes)."""

    def abort(self) -> None:
        """The file will not be published: stop its uploads."""

    def flush(self) -> None:
        """Wait until every chunk added so far is durable; raise the first upload failure."""


@dataclass(frozen=True)
class RunChunk:
    """A chunk of a file written before: its size, its digest, and the digest of the file's
    content from its start to the chunk's end (the prefix digest)."""

    size: int
    digest: str
    prefix: str


class ChunkRuns(Protocol):
    """The chunk runs of files written before (see :mod:`cas_store.runs`)."""

    def lookup(self, first: Chunk) -> Sequence[RunChunk] | None:
        """The run of a file that started with ``first``, if one is known (first chunk included)."""

    def record(self, chunks: Sequence[Chunk], prefixes: Sequence[str]) -> None:
        """Keep the run of a file just published (best effort)."""


class SeekableReader(io.BufferedIOBase):
    """A read-only, seekable file of ``size`` bytes; subclasses implement :meth:`_read_into`."""

    def __init__(self, path: str, size: int) -> None:
        super().__init__()
        self.path = path
        self.mode = "rb"
        self.size = size
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_SET:
            pos = offset
        elif whence == io.SEEK_CUR:
            pos = self._pos + offset
        elif whence == io.SEEK_END:
            pos = self.size + offset
        else:
            raise ValueError(f"invalid whence ({whence})")
        if pos < 0:
            raise OSError(22, "negative seek position")
        self._pos = pos
        return pos

    def _ensure_open(self) -> None:
        if self.closed:
            raise ValueError("I/O operation on closed file")

    def expect_full_read(self) -> None:
        """A hint: everything from the position on is about to be read (fetch it all now)."""

    def _read_into(self, view: memoryview) -> int:
        """Fill ``view`` from the current position; return the bytes read (0 at the end)."""
        raise NotImplementedError

    def _read_direct(self, n: int) -> bytes | None:
        """``n`` bytes from the current position in one underlying read, if one can give
        them (the file's own ``read`` allocates without zeroing); else None."""
        return None

    def _fill(self, view: memoryview) -> int:
        """Fill ``view`` as far as the content goes; return the bytes read."""
        got = 0
        while got < len(view):
            n = self._read_into(view[got:])
            if not n:
                break
            got += n
        return got

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        self._ensure_open()
        with memoryview(buffer) as raw, raw.cast("B") as view:
            return self._fill(view[: max(0, self.size - self._pos)])

    def read(self, size: int | None = -1) -> bytes:
        self._ensure_open()
        remaining = max(self.size - self._pos, 0)
        n = remaining if size is None or size < 0 else min(size, remaining)
        if n == 0:
            return b""
        direct = self._read_direct(n)
        if direct is not None:
            return direct
        # One buffer, filled in place, handed out without a copy: BytesIO.getvalue() returns
        # its own bytes object when nothing else holds a view of it (CPython).
        out = io.BytesIO()
        out.seek(n - 1)
        out.write(b"\0")
        with out.getbuffer() as view:
            got = self._fill(view)
        if got < n:
            out.truncate(got)
        return out.getvalue()

    def read1(self, size: int = -1) -> bytes:
        return self.read(size)


#: Handed-out pieces at least this large are hashed on a background thread, overlapping the
#: next read; smaller ones inline, where a hand-off would cost more.
BACKGROUND_MIN = 256 * 1024


@functools.cache
def _background_pool() -> concurrent.futures.ThreadPoolExecutor:
    """One thread for every reader of the process: work of one reader runs in its order.

    xxhash releases the GIL, so the hashing of one piece overlaps the reading of the next.
    """
    return concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="cas_store-verify")


def _update(hasher: Hasher, data: bytes | memoryview) -> None:
    hasher.update(data)


def in_background(job: Callable[[], object]) -> concurrent.futures.Future[object]:
    """Run ``job`` on the readers' background thread, after what is queued there."""
    return _background_pool().submit(job)


def wait_background() -> None:
    """Wait until every job queued on the readers' background thread so far has run."""
    in_background(lambda: None).result()


class ReadFile(SeekableReader):
    """A seekable reader over a local copy of a file's content.

    Hashes what it hands out while reads run in order from the start; at the end
    of the content it compares with the recorded digest. A mismatch found by a
    single whole-content ``read()`` is repaired transparently through ``refetch``
    (which must return a fresh, verified handle); found later, it discards the
    cached copy through ``on_corrupt`` and raises :class:`IntegrityError`.

    Pieces returned by ``read`` are immutable, so they are hashed on a background
    thread while the caller reads on; the verdict still comes with the read that
    reaches the end. ``on_verified`` is called when the content matched its digest.
    """

    def __init__(
        self,
        path: str,
        handle: BinaryIO,
        size: int,
        algorithm: str,
        digest: str,
        refetch: Callable[[], BinaryIO],
        on_corrupt: Callable[[], None],
        verify: bool = True,
        on_verified: Callable[[], object] | None = None,
    ) -> None:
        super().__init__(path, size)
        self._handle = handle
        self._algorithm = algorithm
        self._digest = digest
        self._refetch = refetch
        self._on_corrupt = on_corrupt
        self._hasher: Hasher | None = new_hasher(algorithm) if verify else None
        self._hashed = 0  # bytes [0, _hashed) went (or are queued to go) through the hasher
        self._whole = False  # the read in progress started at 0 and covers everything
        self._on_verified = on_verified
        self._pending: list[concurrent.futures.Future[object]] = []  # background jobs not settled

    def _read_into(self, view: memoryview) -> int:
        self._handle.seek(self._pos)
        n = int(self._handle.readinto(view))  # type: ignore[attr-defined]
        self._handed_out(view[:n], owned=False)
        return n

    def _read_direct(self, n: int) -> bytes | None:
        self._handle.seek(self._pos)
        data = self._handle.read(n)  # a chunked reader fills one buffer across its chunks
        if len(data) < n:
            raise IntegrityError(f"the cached copy of {self.path} is shorter than its entry says")
        self._handed_out(data, owned=True)
        return data

    def _handed_out(self, data: bytes | memoryview, owned: bool) -> None:
        """Account for ``data``, just read at the position: hash it, check at the end.

        ``owned``: nobody can change ``data`` any more (bytes handed out), so it may be
        hashed later, in the background; a caller's buffer is hashed now.
        """
        n = len(data)
        hasher = self._hasher
        if hasher is not None and self._pos == self._hashed and n:
            if owned and n >= BACKGROUND_MIN:
                self._later(functools.partial(_update, hasher, data))
            else:
                self._settle()  # after what is queued: the hasher takes bytes in order
                hasher.update(data)
            self._hashed += n
        self._pos += n
        if self._pos >= self.size and not self._check():
            self._on_corrupt()
            if not self._whole:
                raise IntegrityError(
                    f"the cached copy of {self.path} was corrupt (digest mismatch); it has "
                    "been discarded: open the file again to read it from S3"
                )
            raise _Refetch

    def _later(self, job: Callable[[], object]) -> None:
        """Run ``job`` on the background thread, after the jobs queued before it."""
        self._pending = [f for f in self._pending if not f.done() or f.exception() is not None]
        self._pending.append(_background_pool().submit(job))

    def _settle(self) -> None:
        """Wait for the background jobs; raise the first failure."""
        pending, self._pending = self._pending, []
        for future in pending:
            future.result()

    def _check(self) -> bool:
        """True if the content was fully hashed and matches (or was not fully hashed yet)."""
        if self._hasher is None or self._hashed < self.size:
            return True
        self._settle()
        ok = self._hashed == self.size and self._hasher.hexdigest() == self._digest
        self._hasher = None  # checked once
        if ok and self._on_verified is not None:
            self._on_verified()
        return ok

    def read(self, size: int | None = -1) -> bytes:
        self._ensure_open()
        self._whole = self._pos == 0 and (size is None or size < 0 or size >= self.size)
        if self._whole and isinstance(self._handle, SeekableReader):
            self._handle.expect_full_read()
        try:
            if self._whole and self._hasher is not None and self._hashed == 0:
                data = self._read_verified_in_parallel()
                if data is not None:
                    return data
            return super().read(size)
        except _Refetch:
            pass
        finally:
            self._whole = False
        # Nothing was handed out yet: replace the bad copy and answer from a fresh one.
        self._handle.close()
        self._handle = self._refetch()
        self._pos = self._hashed = 0
        self._hasher = new_hasher(self._algorithm)
        try:
            return super().read(self.size)
        except IntegrityError as exc:
            raise IntegrityError(
                f"{self.path} does not match its digest even as fetched afresh from S3: the "
                "stored content or its manifest entry is corrupt; write the file again"
            ) from exc

    def _read_verified_in_parallel(self) -> bytes | None:
        """A whole read of one local file: hash the file on the background thread, with
        positional reads of its descriptor, while this one reads it (a cached file does not
        change: it was renamed into place, and a modified one fails the cache's fingerprint
        check)."""
        try:
            fd = self._handle.fileno()
        except (AttributeError, OSError, io.UnsupportedOperation):
            return None
        if self.size < BACKGROUND_MIN:
            return None
        hasher = self._hasher
        assert hasher is not None
        self._later(lambda: hash_fd(hasher, fd, self.size))
        self._hashed = self.size  # queued
        self._handle.seek(0)
        data = self._handle.read(self.size)
        self._pos = len(data)
        if len(data) < self.size:
            self._settle()
            raise IntegrityError(f"the cached copy of {self.path} is shorter than its entry says")
        if not self._check():
            self._on_corrupt()
            raise _Refetch
        return data

    def close(self) -> None:
        if not self.closed:
            try:
                self._settle()
            finally:
                self._handle.close()
        super().close()


def hash_fd(hasher: Hasher, fd: int, size: int, piece: int = 2**20) -> None:
    """Feed bytes ``[0, size)`` of the file ``fd`` to ``hasher`` (positional reads)."""
    buffer = bytearray(min(piece, max(size, 1)))
    view = memoryview(buffer)
    offset = 0
    while offset < size:
        n = os.preadv(fd, [view[: min(len(view), size - offset)]], offset)
        if n == 0:
            break
        hasher.update(view[:n])
        offset += n


class _Refetch(Exception):
    """Internal: a whole read found the cached copy corrupt before handing anything out."""


class WriteFile(io.BufferedIOBase):
    """A file being written, cut into chunks as the bytes arrive.

    Each complete chunk is hashed and handed to ``sink.add`` at once (the writer then
    drops it if known, or caches and uploads it in the background), so that memory stays
    bounded and uploads overlap with the producer. ``close()`` hands the whole-file digest
    and the chunk list (or, for a small file, its bytes) to ``sink.commit``. Leaving a
    ``with`` block by an exception, or :meth:`discard`, calls ``sink.abort`` instead:
    nothing is published.

    Following a run (``runs``): once the first chunk is cut, a file written before that
    started with the same chunk is looked up. While the content goes on as that file's
    did, its next chunk is taken as it is: the chunker is not run and the chunk is not
    hashed, because the digest of the content from the start to the chunk's end (one
    update of the whole-file hash, which is computed anyway) equals that file's prefix
    digest there. Equal prefixes mean equal content up to that boundary, and a chunker's
    boundary depends only on the bytes before it, so the chunk is the one the chunker would
    cut (the run's last chunk, cut by that file's end, is left to the chunker). At the first
    difference the chunker takes over from the last boundary.
    """

    def __init__(
        self,
        path: str,
        algorithm: str,
        chunker: Chunker,
        inline_threshold: int,
        sink: ChunkSink,
        runs: ChunkRuns | None = None,
    ) -> None:
        super().__init__()
        self.path = path
        self.mode = "wb"
        self._algorithm = algorithm
        self._chunker = chunker
        self._inline_threshold = inline_threshold
        self._sink = sink
        self._runs = runs
        self._whole: Hasher = new_hasher(algorithm)  # over the chunks emitted so far
        # One reused buffer, grown on need up to the chunker's largest chunk: fresh multi-MiB
        # allocations per chunk fragment the heap (glibc's adaptive mmap threshold) and grow
        # RSS with file size, and a small file never pays for a whole chunk.
        self._buffer = bytearray()
        self._filled = 0
        self._chunks: list[Chunk] = []
        self._prefixes: list[str] = []  # the whole-file digest at the end of each chunk
        self._follow: Sequence[RunChunk] | None = None  # the run being followed
        self._next = 0  # its chunk expected next
        self._size = 0
        self._open = True
        self._failed: BaseException | None = None  # a write() that raised poisons the file

    def writable(self) -> bool:
        return True

    def write(self, data: bytes | bytearray | memoryview) -> int:  # type: ignore[override]
        if not self._open:
            raise ValueError("I/O operation on closed file")
        if self._failed is not None:
            raise OSError(f"an earlier write to {self.path} failed; discard the file") from self._failed
        try:
            return self._write(data)
        except BaseException as exc:
            # Part of ``data`` may be hashed but not stored: this content can never be published.
            self._failed = exc
            raise

    def _write(self, data: bytes | bytearray | memoryview) -> int:
        view = memoryview(data).cast("B")
        n = len(view)
        self._size += n
        limit = self._chunker.max_size
        while view:
            if not self._filled:
                view = self._from_view(view)  # straight from the caller's buffer: no copy
                if not view:
                    break
            if self._follow is not None:
                # Only the chunk that straddles two writes is copied; the rest of the view is
                # taken in place once the buffer is empty again.
                size = self._expected().size
                if self._filled >= size:
                    self._drain(final=False)
                    continue
                take = min(size - self._filled, len(view))
            else:
                take = min(limit - self._filled, len(view))
            needed = self._filled + take
            if needed > len(self._buffer):
                size = min(limit, max(2 * len(self._buffer), needed))
                self._buffer.extend(bytes(size - len(self._buffer)))
            self._buffer[self._filled : needed] = view[:take]
            self._filled = needed
            view = view[take:]
            if self._filled == limit or (self._follow is not None and self._filled >= self._expected().size):
                self._drain(final=False)
        return n

    def _expected(self) -> RunChunk:
        assert self._follow is not None
        return self._follow[self._next]

    def _from_view(self, view: memoryview) -> memoryview:
        """Emit the chunks that lie whole in ``view`` (the buffer being empty); the rest."""
        limit = self._chunker.max_size
        while view:
            if self._follow is not None:
                size = self._expected().size
                if len(view) < size:
                    break
                if self._take(view[:size]):
                    view = view[size:]
                continue  # taken, or the chunker takes over
            if len(view) < limit:
                break
            cut = self._chunker.cut(view, final=False)
            assert cut is not None  # a chunker decides within max_size bytes
            self._emit(view[:cut], final=False)
            view = view[cut:]
        return view

    def _drain(self, final: bool) -> None:
        """Emit every chunk that can be decided from the buffer; keep the rest at its start."""
        start = 0
        with memoryview(self._buffer) as whole:
            while start < self._filled:
                if self._follow is not None:
                    size = self._expected().size
                    if self._filled - start >= size:
                        with whole[start : start + size] as chunk:
                            if self._take(chunk):
                                start += size
                        continue
                    if not final:
                        break
                    self._follow = None  # the file ends within the chunk: the chunker's call
                cut = self._chunker.cut(whole[start : self._filled], final=final)
                if cut is None:
                    break
                with whole[start : start + cut] as chunk:
                    self._emit(chunk, final)  # the sink copies what it keeps: the buffer is reused
                start += cut
        if start:
            self._buffer[: self._filled - start] = self._buffer[start : self._filled]
            self._filled -= start

    def _emit(self, chunk: memoryview, final: bool) -> None:
        """A chunk the chunker cut: hash it, hand it on, and after the first look for a run."""
        hasher = new_hasher(self._algorithm)
        hasher.update(chunk)
        digest = hasher.hexdigest()
        self._whole.update(chunk)
        self._add(chunk, digest, self._whole.hexdigest())
        if len(self._chunks) == 1 and not final and self._runs is not None:
            run = self._runs.lookup(self._chunks[0])
            first = run[0] if run else None
            if (
                run is not None
                and len(run) > 2
                and first is not None
                and (first.size, first.digest)
                == (
                    len(chunk),
                    digest,
                )
            ):
                self._follow, self._next = run, 1

    def _take(self, chunk: memoryview) -> bool:
        """The run's next chunk, if ``chunk`` is it: the content up to its end must hash to the
        run's prefix digest there. Else stop following (False)."""
        expected = self._expected()
        ahead = self._whole.copy()
        ahead.update(chunk)
        prefix = ahead.hexdigest()
        if prefix != expected.prefix:
            self._follow = None
            return False
        self._whole = ahead
        self._add(chunk, expected.digest, prefix, hashed=False)
        self._next += 1
        if self._next >= len(self._follow or ()) - 1:
            self._follow = None  # the run's last chunk was cut by its file's end
        return True

    def _add(self, chunk: memoryview, digest: str, prefix: str, hashed: bool = True) -> None:
        self._chunks.append(Chunk(digest, len(chunk)))
        self._prefixes.append(prefix)
        self._sink.add(chunk, digest, hashed)

    def tell(self) -> int:
        return self._size

    def flush(self) -> None:
        """Wait until the chunks cut so far are durable in the bucket (the bytes after the last
        chunk boundary are kept until more arrive or the file is closed); raise an upload's
        failure now rather than at close."""
        if self._open and self._failed is None:
            try:
                self._sink.flush()
            except BaseException as exc:
                self._failed = exc  # its uploads were stopped: the file cannot be published
                raise

    def discard(self) -> None:
        """Drop everything written so far; nothing is published."""
        if self._open:
            self._open = False
            self._buffer, self._filled = bytearray(), 0
            self._sink.abort()
        super().close()

    def close(self) -> None:
        if not self._open:
            super().close()
            return
        self._open = False
        try:
            if self._failed is not None:
                raise OSError(
                    f"an earlier write to {self.path} failed, so nothing was published"
                ) from self._failed
            if not self._chunks and self._size <= self._inline_threshold:
                inline = bytes(self._buffer[: self._filled])
                self._whole.update(inline)
                self._sink.commit(self._size, self._whole.hexdigest(), [], inline)
            else:
                self._drain(final=True)
                self._sink.commit(self._size, self._whole.hexdigest(), self._chunks, None)
                if self._runs is not None and len(self._chunks) > 2:
                    self._runs.record(self._chunks, self._prefixes)
        except BaseException:
            self._sink.abort()
            raise
        finally:
            self._buffer, self._filled = bytearray(), 0
            super().close()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is not None:
            self.discard()
        else:
            self.close()

    def __del__(self) -> None:
        # Never publish from the garbage collector: a file dropped without close() was not finished.
        if getattr(self, "_open", False):
            self.discard()


class TextWriteFile(io.TextIOWrapper):
    """Text-mode writer whose ``with`` block publishes nothing when left by an exception.

    ``io.TextIOWrapper.__exit__`` would close, and so publish, the partial content.
    """

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is not None and isinstance(self.buffer, WriteFile):
            self.buffer.discard()
        else:
            self.close()
