"""File objects returned by ``CASFileSystem.open``.

:class:`WriteFile` cuts what is written into chunks, hashed and handed to the store as
they fill, and publishes on ``close()``; :class:`ReadFile` reads a local (cached) copy and checks its digest
whenever the whole content passes through it in order.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from types import TracebackType
from typing import BinaryIO

from cas_store.errors import IntegrityError
from cas_store.hashing import Hasher, new_hasher


class WriteFile(io.BufferedIOBase):
    """A file being written, cut into fixed-size chunks as the bytes arrive.

    Each complete chunk is hashed and handed to ``on_chunk`` at once (the store then
    drops it if known, or caches and uploads it in the background), so that memory stays
    bounded and uploads overlap with the producer. ``close()`` hands the whole-file digest
    and the chunk list (or, for a small file, its bytes) to ``on_close``, which publishes.
    Leaving a ``with`` block by an exception, or :meth:`discard`, calls ``on_discard``
    instead: nothing is published.
    """

    def __init__(
        self,
        path: str,
        algorithm: str,
        chunk_size: int,
        inline_threshold: int,
        on_chunk: Callable[[memoryview, str], None],
        on_close: Callable[[int, str, list[tuple[str, int]], bytes | None], object],
        on_discard: Callable[[], None],
    ) -> None:
        super().__init__()
        self.path = path
        self.mode = "wb"
        self._algorithm = algorithm
        self._chunk_size = chunk_size
        self._inline_threshold = inline_threshold
        self._on_chunk = on_chunk
        self._on_close = on_close
        self._on_discard = on_discard
        self._whole: Hasher = new_hasher(algorithm)
        # One reused chunk buffer, allocated on first need: fresh multi-MiB allocations per
        # chunk fragment the heap (glibc's adaptive mmap threshold) and grow RSS with file size.
        self._buffer = bytearray()
        self._filled = 0
        self._chunks: list[tuple[str, int]] = []
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
        self._whole.update(view)
        self._size += n
        chunk_size = self._chunk_size
        while view:
            if not self._filled and len(view) >= chunk_size:
                self._emit(view[:chunk_size])  # straight from the caller's buffer: no copy
                view = view[chunk_size:]
                continue
            take = min(chunk_size - self._filled, len(view))
            needed = self._filled + take
            if needed > len(self._buffer):
                # Grow by doubling up to one chunk: a small file never pays for a whole chunk,
                # and at full size the buffer is reused for every later chunk of the file.
                size = min(chunk_size, max(2 * len(self._buffer), needed))
                self._buffer.extend(bytes(size - len(self._buffer)))
            self._buffer[self._filled : self._filled + take] = view[:take]
            self._filled += take
            view = view[take:]
            if self._filled == chunk_size:
                self._emit_buffer()
        return n

    def _emit_buffer(self) -> None:
        with memoryview(self._buffer) as whole, whole[: self._filled] as chunk:
            self._emit(chunk)  # on_chunk copies what it keeps: the buffer is reused
        self._filled = 0

    def _emit(self, chunk: memoryview) -> None:
        hasher = new_hasher(self._algorithm)
        hasher.update(chunk)
        digest = hasher.hexdigest()
        self._chunks.append((digest, len(chunk)))
        self._on_chunk(chunk, digest)

    def tell(self) -> int:
        return self._size

    def discard(self) -> None:
        """Drop everything written so far; nothing is published."""
        if self._open:
            self._open = False
            self._buffer, self._filled = bytearray(), 0
            self._on_discard()
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
                self._on_close(self._size, self._whole.hexdigest(), [], bytes(self._buffer[: self._filled]))
            else:
                if self._filled:
                    self._emit_buffer()
                self._on_close(self._size, self._whole.hexdigest(), self._chunks, None)
        except BaseException:
            self._on_discard()
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


class ReadFile(io.BufferedIOBase):
    """A seekable reader over a local copy of a file's content.

    Hashes what it hands out while reads run in order from the start; at the end
    of the content it compares with the recorded digest. A mismatch found by a
    single whole-content ``read()`` is repaired transparently through ``refetch``
    (which must return a fresh, verified handle); found later, it discards the
    cached copy through ``on_corrupt`` and raises :class:`IntegrityError`.
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
    ) -> None:
        super().__init__()
        self.path = path
        self.mode = "rb"
        self.size = size
        self._handle = handle
        self._algorithm = algorithm
        self._digest = digest
        self._refetch = refetch
        self._on_corrupt = on_corrupt
        self._pos = 0
        self._hasher: Hasher | None = new_hasher(algorithm) if verify else None
        self._hashed = 0  # bytes [0, _hashed) went through the hasher

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

    def _read_at(self, n: int) -> bytes:
        self._handle.seek(self._pos)
        data = self._handle.read(n)
        if self._hasher is not None and self._pos == self._hashed and data:
            self._hasher.update(data)
            self._hashed += len(data)
        self._pos += len(data)
        return data

    def _check(self) -> bool:
        """True if the content was fully hashed and matches (or was not fully hashed yet)."""
        if self._hasher is None or self._hashed < self.size:
            return True
        ok = self._hashed == self.size and self._hasher.hexdigest() == self._digest
        self._hasher = None  # checked once
        return ok

    def read(self, size: int | None = -1) -> bytes:
        self._ensure_open()
        whole = self._pos == 0 and (size is None or size < 0 or size >= self.size)
        if size is None or size < 0:
            size = max(self.size - self._pos, 0)
        data = self._read_at(size)
        if self._pos >= self.size and not self._check():
            self._on_corrupt()
            if not whole:
                raise IntegrityError(
                    f"the cached copy of {self.path} was corrupt (digest mismatch); it has "
                    "been discarded: open the file again to read it from S3"
                )
            # Nothing was handed out yet: replace the bad copy and answer from a fresh one.
            self._handle.close()
            self._handle = self._refetch()
            self._pos = self._hashed = 0
            self._hasher = new_hasher(self._algorithm)
            data = self._read_at(self.size)
            if not self._check():
                raise IntegrityError(
                    f"{self.path} does not match its digest even as fetched afresh from S3: the "
                    "stored content or its manifest entry is corrupt; write the file again"
                )
        return data

    def read1(self, size: int = -1) -> bytes:
        return self.read(size)

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        data = self.read(len(memoryview(buffer).cast("B")))
        n = len(data)
        memoryview(buffer).cast("B")[:n] = data
        return n

    def _ensure_open(self) -> None:
        if self.closed:
            raise ValueError("I/O operation on closed file")

    def close(self) -> None:
        if not self.closed:
            self._handle.close()
        super().close()
