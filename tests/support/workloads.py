"""Generated contents and their second versions, for the deduplication goals of issue 9
(tests/unit/test_dedup.py) and the chunking benchmark (bench/chunking.py).

Every generator is a pure function of its arguments (numpy's PCG64 seeded, pyarrow's writers),
so a test and the benchmark see the same bytes on every machine.
"""

from __future__ import annotations

import io
import random
from typing import BinaryIO

import numpy as np

KiB = 2**10
MiB = 2**20


#: A content as the pieces it is written in, in order (views of a base content and patches):
#: a second version need not be copied out whole.
Pieces = list[bytes | memoryview]


def random_bytes(size: int, seed: int) -> bytes:
    """``size`` incompressible bytes: PCG64's raw output (numpy, stable across releases)."""
    words = np.random.default_rng(seed).bit_generator.random_raw(-(-size // 8))
    return words.tobytes()[:size]


def write_pieces(f: BinaryIO, pieces: Pieces, size: int) -> int:
    """Write ``pieces`` in order to ``f``, each in writes of at most ``size`` bytes (a second
    version's patches as writes of their own); return the bytes written."""
    total = 0
    for piece in pieces:
        view = memoryview(piece)
        for at in range(0, len(view), size):
            f.write(view[at : at + size])
        total += len(view)
    return total


def joined(pieces: Pieces) -> bytes:
    return b"".join(pieces)


def _offsets(size: int, count: int, seed: int, margin: int) -> list[int]:
    """``count`` sorted offsets in ``[margin, size - margin)``, spread over the whole content."""
    rng = np.random.default_rng(seed)
    band = (size - 2 * margin) // count
    return [margin + i * band + int(rng.integers(0, band - margin)) for i in range(count)]


def _patched(data: bytes, count: int, size: int, seed: int, overwrite: bool) -> Pieces:
    """``data`` with ``count`` runs of ``size`` random bytes spread over it, each overwriting
    the bytes at its offset or inserted there."""
    view, patch = memoryview(data), random_bytes(count * size, seed + 1000)
    pieces: Pieces = []
    last = 0
    for i, at in enumerate(_offsets(len(data), count, seed, size)):
        pieces += [view[last:at], patch[i * size : (i + 1) * size]]
        last = at + size if overwrite else at
    pieces.append(view[last:])
    return pieces


def scattered_overwrites(data: bytes, count: int = 10, size: int = 4 * KiB, seed: int = 1) -> Pieces:
    """``data`` with ``count`` runs of ``size`` random bytes overwritten, spread over the file (S2)."""
    return _patched(data, count, size, seed, overwrite=True)


def scattered_insertions(data: bytes, count: int = 10, size: int = 4 * KiB, seed: int = 1) -> Pieces:
    """``data`` with ``count`` runs of ``size`` random bytes inserted, spread over the file."""
    return _patched(data, count, size, seed, overwrite=False)


def inserted_near_start(data: bytes, at: int = 1000, size: int = 100, seed: int = 2) -> Pieces:
    """``data`` with ``size`` random bytes inserted at offset ``at`` (a header that grew: S2b)."""
    view = memoryview(data)
    return [view[:at], random_bytes(size, seed + 2000), view[at:]]


def _table(rows: int, seed: int):  # type: ignore[no-untyped-def]
    """A table of ``rows`` synthetic sensor readings; the first n rows never depend on ``rows``."""
    import pyarrow as pa

    ids = np.arange(rows, dtype=np.int64)
    # Per-row values from per-block generators, so that a longer table extends a shorter one.
    block = 1 << 16
    values = np.empty(rows), np.empty(rows, dtype=np.int64), np.empty(rows, dtype=np.int64)
    for start in range(0, rows, block):
        rng = np.random.default_rng([seed, start // block])
        n = min(block, rows - start)
        values[0][start : start + n] = rng.normal(20.0, 5.0, n).round(4)
        values[1][start : start + n] = rng.integers(0, 50, n)
        values[2][start : start + n] = rng.integers(0, 3600, n)
    sites = np.array([f"site-{i:02d}" for i in range(50)], dtype=object)
    return pa.table(
        {
            "id": ids,
            "ts": pa.array(1_767_225_600 + ids * 7 + values[2], type=pa.int64()).cast(pa.timestamp("s")),
            "site": pa.array(sites[values[1]]),
            "reading": values[0],
            "status": pa.array(np.where(values[0] > 30.0, "alert", "ok")),
        }
    )


def csv_versions(size: int, grow: float = 0.10, seed: int = 3) -> tuple[bytes, bytes]:
    """A CSV of a little more than ``size`` bytes, and the same file with ``grow`` more rows appended (S3).

    The second version is the whole table written again, header included; it starts with the
    first version's bytes, as a log or export that gained rows does.
    """
    import pyarrow.csv as pcsv

    bytes_per_row = 48  # measured on this generator: about 50 (so at least ``size`` bytes)
    rows = size // bytes_per_row
    table = _table(rows + int(rows * grow), seed)

    def write(t) -> bytes:  # type: ignore[no-untyped-def]
        out = io.BytesIO()
        pcsv.write_csv(t, out)
        return out.getvalue()

    first, second = write(table.slice(0, rows)), write(table)
    assert second.startswith(first)
    return first, second


def parquet_versions(
    size: int, grow: float = 0.10, seed: int = 4, row_group: int | None = None
) -> tuple[bytes, bytes]:
    """A Parquet file of about ``size`` bytes (pyarrow's defaults, or ``row_group`` rows per
    row group), and the same table with ``grow`` more rows written again."""
    import pyarrow.parquet as pq

    bytes_per_row = 16  # measured on this generator with pyarrow 26's defaults: about 16
    rows = size // bytes_per_row
    table = _table(rows + int(rows * grow), seed)

    def write(t) -> bytes:  # type: ignore[no-untyped-def]
        out = io.BytesIO()
        pq.write_table(t, out, row_group_size=row_group)
        return out.getvalue()

    return write(table.slice(0, rows)), write(table)


def compressible_csv(size: int, seed: int = 0) -> bytes:
    """A CSV of ``size`` bytes (numbers and a few words) that zstd level 1 compresses 2-4x."""
    rng = random.Random(seed)
    words = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta"]
    rows, total = [], 0
    while total < size:
        row = f"{total},{rng.randint(0, 10**6)},{rng.choice(words)},{rng.random():.6f}\n"
        rows.append(row)
        total += len(row)
    return "".join(rows).encode()[:size]
