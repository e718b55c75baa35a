"""Byte counts for people: one format for the command line, the ZenML flavor's logs and the demo."""

from __future__ import annotations

__all__ = ["format_size"]


def format_size(n: int) -> str:
    """``512 B``, ``1.5 KiB``, ``3.0 MiB``: binary units, one decimal."""
    if n < 1024:
        return f"{n} B"
    value = float(n)
    for unit in ("KiB", "MiB", "GiB", "TiB", "PiB"):
        value /= 1024
        if value < 1024 or unit == "PiB":
            break
    return f"{value:.1f} {unit}"
