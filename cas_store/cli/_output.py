"""Sizes in and out, JSON, progress bars: the CLI's presentation, apart from its commands."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import re
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import click

from cas_store.chunking import ChunkerSpec
from cas_store.errors import CASStoreError
from cas_store.maintenance import Progress
from cas_store.maintenance.lifecycle import NEW_CHUNKER_DEFAULTS, new_chunker
from cas_store.safety import check_grace
from cas_store.sizes import format_size

_UNITS = {
    "": 1,
    "b": 1,
    "k": 2**10,
    "ki": 2**10,
    "kib": 2**10,
    "kb": 10**3,
    "m": 2**20,
    "mi": 2**20,
    "mib": 2**20,
    "mb": 10**6,
    "g": 2**30,
    "gi": 2**30,
    "gib": 2**30,
    "gb": 10**9,
    "t": 2**40,
    "ti": 2**40,
    "tib": 2**40,
    "tb": 10**12,
}
#: Progress phases counted in bytes (the others count items).
_BYTE_PHASES = {"downloading blobs"}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*([a-zA-Z]*)\s*$")


def parse_size(text: str) -> int:
    """Bytes of ``10GiB``, ``500M``, ``1.5 G``, ``2GB``, ``4096``: ``K``/``M``/``G``/``T``
    alone or with ``i``/``iB`` are powers of 1024, with ``B`` (``KB``, ``MB``...) of 1000."""
    match = _SIZE.match(text)
    unit = _UNITS.get(match.group(2).lower()) if match else None
    if match is None or unit is None:
        raise ValueError(f"{text!r} is not a size; write e.g. 10GiB, 500M, 2GB or 4096 (bytes)")
    return int(float(match.group(1)) * unit)


if TYPE_CHECKING:
    _IntParam = click.ParamType[int]
else:  # generic at run time only in newer clicks
    _IntParam = click.ParamType


class SizeType(_IntParam):
    name = "SIZE"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int):
            return value
        try:
            return parse_size(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


_DURATION = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*(s|m|h|d|w|)\s*$")
_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_duration(text: str) -> float:
    """Seconds of ``24h``, ``90m``, ``2s``, ``7d``, ``1w`` or ``3600``."""
    match = _DURATION.match(text.lower())
    if match is None:
        raise ValueError(f"{text!r} is not a duration; write e.g. 24h, 90m, 7d, 2s or 3600 (seconds)")
    return float(match.group(1)) * _SECONDS[match.group(2)]


def format_duration(seconds: float) -> str:
    """``1d``, ``5h45m``, ``15m``, ``2s``, ``0.479s``: whole units down to seconds."""
    if seconds < 60 and seconds != int(seconds):
        return f"{seconds:.3g}s"
    rest, parts = round(seconds), []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if rest >= size:
            parts.append(f"{rest // size}{unit}")
            rest %= size
    return "".join(parts) or "0s"


if TYPE_CHECKING:
    _FloatParam = click.ParamType[float]
else:
    _FloatParam = click.ParamType


class DurationType(_FloatParam):
    """A grace period: a duration of at least :data:`~cas_store.safety.MIN_GC_GRACE`."""

    name = "DURATION"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float:
        if isinstance(value, int | float):
            return float(value)
        try:
            seconds = parse_duration(str(value))
            check_grace(seconds)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)
        return seconds


#: What ``--chunker`` takes (for its help and its errors).
CHUNKER_SYNTAX = "fastcdc2020[:min=SIZE,avg=SIZE,max=SIZE,normalization=N] (each optional) or fixed[:SIZE]"
#: ``--chunker``'s short names of the marker's parameters.
_CHUNKER_PARAMS = {"min": "min_size", "avg": "avg_size", "max": "max_size"}
#: Parameters that are counts, not sizes.
_COUNT_PARAMS = {"normalization"}


def parse_chunker(text: str) -> ChunkerSpec:
    """The chunker of ``--chunker``: ``NAME`` (its default parameters), ``NAME:PARAM=VALUE,...``
    (the others at their defaults; ``min``/``avg``/``max`` short for ``min_size``...), or for a
    chunker of one parameter ``NAME:VALUE`` (``fixed:8MiB``). Sizes as :func:`parse_size`.
    Checked by building it from the registry (:func:`~cas_store.maintenance.lifecycle.new_chunker`);
    :class:`ValueError` says what is allowed. The spec returned has every parameter."""
    name, colon, rest = text.partition(":")
    name = name.strip().lower()
    defaults = NEW_CHUNKER_DEFAULTS.get(name, {})
    params: dict[str, int] = {}
    try:
        if colon:
            items = [item.strip() for item in rest.split(",")]
            if not all(items):
                raise ValueError(f"{text!r} has an empty parameter")
            for item in items:
                key, equals, value = (part.strip() for part in item.partition("="))
                if not equals:
                    if len(items) > 1 or len(defaults) != 1:
                        raise ValueError(f"{item!r} is not PARAM=VALUE")
                    key, value = next(iter(defaults)), key
                key = _CHUNKER_PARAMS.get(key.lower(), key.lower())
                if key in params:
                    raise ValueError(f"{key} is given twice")
                if defaults and key not in defaults:
                    raise ValueError(f"chunker {name} has no parameter {key!r}")
                if key in _COUNT_PARAMS:
                    if not re.fullmatch(r"[0-9]+", value):
                        raise ValueError(f"{key} must be a whole number, not {value!r}")
                    params[key] = int(value)
                else:
                    params[key] = parse_size(value)
        return new_chunker(name, params)
    except ValueError as exc:
        raise ValueError(f"{exc}; a chunker is {CHUNKER_SYNTAX}") from exc


if TYPE_CHECKING:
    _ChunkerParam = click.ParamType[ChunkerSpec]
else:
    _ChunkerParam = click.ParamType


class ChunkerType(_ChunkerParam):
    """A new store's chunker, as :func:`parse_chunker` reads it."""

    name = "CHUNKER"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> ChunkerSpec:
        if isinstance(value, ChunkerSpec):
            return value
        try:
            return parse_chunker(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)
        except ImportError as exc:  # not a usage error: this machine cannot cut that way
            raise CASStoreError(f"cannot create a store with the chunker {value!r}: {exc}") from exc


def with_bytes(n: int) -> str:
    """``3.0 MiB (3,145,728 bytes)``."""
    return f"{format_size(n)} ({n:,} bytes)" if n >= 1024 else format_size(n)


def _default(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return value.isoformat()
    if isinstance(value, bytes):
        return None
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def emit_json(doc: dict[str, Any]) -> None:
    """The one JSON object a command prints on stdout with ``--json``."""
    click.echo(json.dumps(doc, indent=2, default=_default))


def table(rows: list[tuple[str, str]]) -> None:
    """Aligned ``label  value`` lines on stdout."""
    width = max((len(label) for label, _ in rows), default=0)
    for label, value in rows:
        click.echo(f"{label.ljust(width)}  {value}")


@contextlib.contextmanager
def progress_bars(enabled: bool) -> Iterator[Progress | None]:
    """A :data:`~cas_store.maintenance.Progress` drawing rich bars on stderr, if ``enabled``
    and stderr is a terminal; else None (no output at all)."""
    if not enabled or not sys.stderr.isatty():
        yield None
        return
    from rich.console import Console
    from rich.progress import BarColumn, SpinnerColumn, TextColumn, TimeElapsedColumn
    from rich.progress import Progress as Bars

    bars = Bars(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.fields[amount]}"),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        transient=True,
    )
    tasks: dict[str, Any] = {}

    def update(phase: str, done: int, total: int | None) -> None:
        shown = format_size if phase in _BYTE_PHASES else (lambda n: f"{n:,}")
        amount = shown(done) if total is None else f"{shown(done)} / {shown(total)}"
        if phase not in tasks:
            tasks[phase] = bars.add_task(phase, total=total, amount=amount)
        bars.update(tasks[phase], completed=done, total=total, amount=amount)

    with bars:
        yield update
