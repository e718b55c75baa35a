"""``cas-store``: inspect, verify and prefetch stores, and manage the local cache.

A thin layer over :mod:`cas_store.maintenance`: each command parses its arguments, calls
one library function and prints the result (``--json``: one JSON object on stdout).
Exit codes: 0 success; 1 problems found (``verify`` found damage, ``prefetch`` could not
cache every file); 2 usage errors; 3 the operation failed (a cas_store error, or a path
that does not exist), with ``cas-store: error: <message>`` on stderr.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import click

from cas_store import __version__
from cas_store.cli._output import (
    SizeType,
    emit_json,
    format_size,
    progress_bars,
    table,
    with_bytes,
)
from cas_store.errors import CASStoreError

if TYPE_CHECKING:
    from cas_store.cache import LocalCache
    from cas_store.filesystem import CASFileSystem
    from cas_store.maintenance import VerifyReport
    from cas_store.store import Store

__all__ = ["EXIT_ERROR", "EXIT_PROBLEMS", "main"]

#: ``verify`` found damage; ``prefetch`` left files uncached.
EXIT_PROBLEMS = 1
#: The operation failed: a cas_store error or a missing path (click uses 2 for usage errors).
EXIT_ERROR = 3


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


class _Group(click.Group):
    """Turns the library's errors into one line on stderr and exit code 3."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (CASStoreError, FileNotFoundError, IsADirectoryError, NotADirectoryError) as exc:
            click.echo(f"cas-store: error: {_one_line(exc)}", err=True)
            ctx.exit(EXIT_ERROR)


@dataclass
class _Options:
    """The global options, and what the commands build from them (closed at exit)."""

    ctx: click.Context
    endpoint_url: str | None
    profile: str | None
    cache_dir: str | None
    as_json: bool

    def filesystem(self, root: str | None = None) -> CASFileSystem:
        """A file system with the global options; ``root``: exactly that store root."""
        from cas_store.filesystem import CASFileSystem

        options: dict[str, Any] = {"skip_instance_cache": True}
        if self.endpoint_url:
            options["client_kwargs"] = {"endpoint_url": self.endpoint_url}
        if self.profile:
            options["profile"] = self.profile
        if self.cache_dir:
            options["cache_dir"] = self.cache_dir
        fs = CASFileSystem(root=root, **options)

        def close() -> None:
            fs.s3.close()
            fs.cache.close()

        self.ctx.call_on_close(close)
        return fs

    def locate(self, url: str) -> tuple[CASFileSystem, Store, str]:
        """The store of ``url`` (found from its markers) and the path within it."""
        fs = self.filesystem()
        store, rel = fs.locate(url)
        return fs, store, rel

    def cache(self) -> LocalCache:
        """The local cache alone: no S3 connection."""
        from cas_store.cache import LocalCache
        from cas_store.config import StoreConfig

        config = StoreConfig(cache_dir=self.cache_dir)
        cache = LocalCache(config.resolved_cache_dir, config.cache_size, config.cache_eviction_policy)
        self.ctx.call_on_close(cache.close)
        return cache

    def progress(self) -> Any:
        return progress_bars(not self.as_json)


def _quiet_logging(ctx: click.Context, verbose: int) -> None:
    """While the command runs, cas_store's log records go to stderr only with ``-v``
    (warnings) or ``-vv`` (debug): an error is one line, without the warnings that led to it."""
    logger = logging.getLogger("cas_store")
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("cas-store: %(levelname)s: %(message)s"))
    handler.setLevel(logging.DEBUG if verbose > 1 else logging.WARNING if verbose else logging.CRITICAL + 1)
    level = logger.level
    logger.addHandler(handler)
    if verbose > 1:
        logger.setLevel(logging.DEBUG)

    def restore() -> None:
        logger.removeHandler(handler)
        logger.setLevel(level)

    ctx.call_on_close(restore)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--endpoint-url",
    envvar="AWS_ENDPOINT_URL",
    metavar="URL",
    help="S3 endpoint, e.g. http://127.0.0.1:9000 (default: $AWS_ENDPOINT_URL, else AWS).",
)
@click.option("--profile", metavar="NAME", help="AWS profile for credentials (default: boto's chain).")
@click.option(
    "--cache-dir",
    type=click.Path(file_okay=False),
    help="Local cache directory (default: $CAS_STORE_CACHE_DIR, else ~/.cache/cas_store).",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout.")
@click.option("-v", "--verbose", count=True, help="Show cas_store's warnings (-vv: debug messages).")
@click.version_option(__version__, prog_name="cas-store")
@click.pass_context
def main(
    ctx: click.Context,
    endpoint_url: str | None,
    profile: str | None,
    cache_dir: str | None,
    as_json: bool,
    verbose: int,
) -> None:
    """Inspect, verify and prefetch cas_store stores, and manage the local cache.

    ROOT is a store root (s3cas://BUCKET/PREFIX); URL is any path, whose store is found
    from the format markers above it. Exit codes: 0 ok, 1 problems found, 2 usage error,
    3 the operation failed.
    """
    _quiet_logging(ctx, verbose)
    ctx.obj = _Options(ctx, endpoint_url, profile, cache_dir, as_json)


_pass = click.make_pass_decorator(_Options)


# -- stats, ls, du -----------------------------------------------------------------------


@main.command(short_help="What a store holds: bytes, blobs, deduplication, reclaimable.")
@click.argument("root")
@_pass
def stats(opts: _Options, root: str) -> None:
    """What the store at ROOT holds: entries, bytes, blobs, deduplication, reclaimable space."""
    from cas_store.maintenance import usage

    store = opts.filesystem(root).store()
    with opts.progress() as progress:
        result = usage(store, progress)
    if opts.as_json:
        emit_json(result.to_dict())
        return
    rows = [
        ("store", result.root),
        ("entries", f"{result.entries:,} ({result.inline_entries:,} inline)"),
        ("logical", with_bytes(result.logical_bytes)),
        (
            "blobs",
            f"{result.blobs:,} ({result.referenced_blobs:,} referenced, "
            f"{result.unreferenced_blobs:,} unreferenced), {format_size(result.blob_bytes)}",
        ),
        ("stored", f"{with_bytes(result.stored_bytes)}: blobs and inline content"),
        ("dedup ratio", f"{result.dedup_ratio:.2f}"),
        (
            "reclaimable",
            f"{with_bytes(result.reclaimable_bytes)} in {result.unreferenced_blobs:,} unreferenced "
            "blobs (for the collector, which is not available yet)",
        ),
    ]
    if result.missing_blobs:
        rows.append(("missing", f"{result.missing_blobs:,} blobs named by entries: run cas-store verify"))
    if result.unreadable:
        rows.append(("unreadable", f"{len(result.unreadable):,} entries: run cas-store verify"))
    table(rows)


def _iso(value: Any) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if value is not None else ""


@main.command("ls")
@click.argument("url")
@click.option("-l", "long", is_flag=True, help="Sizes, times and digests too.")
@_pass
def ls_(opts: _Options, url: str, long: bool) -> None:
    """List the files and directories at URL (a file lists as itself)."""
    fs, store, rel = opts.locate(url)
    base = store.root.logical_path(rel)
    if long or opts.as_json:
        infos: list[dict[str, Any]] = fs.ls(url, detail=True)
    else:
        names, dirs = store.list_names(rel)
        infos = [{"name": store.root.logical_path(r), "type": "file"} for r in names]
        infos += [{"name": store.root.logical_path(d), "type": "directory"} for d in dirs]
        if not infos and rel:
            infos = [fs.info(url)]  # a file lists as itself; a missing path raises
        infos.sort(key=lambda i: i["name"])
    if opts.as_json:
        entries = [{**i, "name": f"s3cas://{i['name']}"} for i in infos]
        emit_json({"url": f"s3cas://{base}", "entries": entries})
        return

    def shown(info: dict[str, Any]) -> str:
        name = str(info["name"])
        name = name[len(base) + 1 :] if name.startswith(base + "/") else name.rsplit("/", 1)[-1]
        return name + "/" if info["type"] == "directory" else name

    for info in infos:
        if not long:
            click.echo(shown(info))
        elif info["type"] == "directory":
            click.echo(f"{'-':>14}  {'':19}  {'':40}  {shown(info)}")
        else:
            digest = f"{info['algorithm']}:{info['digest']}"
            click.echo(f"{info['size']:>14,}  {_iso(info.get('LastModified'))}  {digest:40}  {shown(info)}")


@main.command(short_help="Logical, stored and cached size of a file or directory.")
@click.argument("url")
@_pass
def du(opts: _Options, url: str) -> None:
    """Logical, stored and cached size of the file or directory at URL (offline: what the
    mirror holds)."""
    from cas_store.maintenance import usage_of

    _, store, rel = opts.locate(url)
    result = usage_of(store, rel)
    if opts.as_json:
        emit_json(result.to_dict())
        return
    table(
        [
            ("path", result.path),
            ("files", f"{result.files:,} ({result.inline_files:,} inline)"),
            ("logical", with_bytes(result.logical_bytes)),
            (
                "stored",
                f"{with_bytes(result.stored_bytes)} in {result.chunks:,} distinct chunks and inline files",
            ),
            ("dedup ratio", f"{result.dedup_ratio:.2f}"),
            (
                "cached",
                f"{result.cached_chunks:,} of {result.chunks:,} chunks, {with_bytes(result.cached_bytes)}",
            ),
        ]
    )


# -- verify ------------------------------------------------------------------------------


@main.command(short_help="Check that the blobs of every entry are in the bucket.")
@click.argument("root")
@click.option("--deep", is_flag=True, help="Also download every blob and check its hash.")
@click.option(
    "--sample",
    type=click.FloatRange(0, 100, min_open=True),
    metavar="PCT",
    help="With --deep: download only PCT percent of the blobs, chosen at random from --seed.",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of --sample's choice.")
@_pass
def verify(opts: _Options, root: str, deep: bool, sample: float | None, seed: int) -> None:
    """Check that every blob an entry of the store at ROOT names is in the bucket with its size
    (one listing), and with --deep its content. Exit code 1 if anything is wrong."""
    from cas_store.maintenance import verify as run_verify

    if sample is not None and not deep:
        raise click.UsageError("--sample selects the blobs --deep downloads: give --deep too")
    store = opts.filesystem(root).store()
    with opts.progress() as progress:
        report = run_verify(store, deep=deep, sample=sample, seed=seed, progress=progress)
    if opts.as_json:
        emit_json(report.to_dict())
    else:
        hashed = (
            f", {report.blobs_hashed:,} blobs hashed ({format_size(report.bytes_hashed)})" if deep else ""
        )
        click.echo(
            f"checked {report.root}: {report.entries:,} entries, {report.chunks:,} chunk references, "
            f"{report.blobs:,} blobs{hashed}"
        )
        for line in _problems(report):
            click.echo(line)
        click.echo("ok" if report.ok else "FAILED: the paths above cannot be read in full")
    if not report.ok:
        opts.ctx.exit(EXIT_PROBLEMS)


def _problems(report: VerifyReport) -> Iterator[str]:
    if report.missing:
        yield f"missing blobs ({len(report.missing):,} paths cannot be read):"
        for rel, digests in report.missing.items():
            yield f"  {rel}: {', '.join(digests)}"
    if report.corrupt:
        yield f"corrupt blobs ({len(report.corrupt):,}):"
        for digest, bad in report.corrupt.items():
            yield f"  {digest} ({bad.reason}), used by: {', '.join(bad.paths)}"
    if report.bad_inline:
        yield f"inline content not matching its digest ({len(report.bad_inline):,} paths):"
        yield from (f"  {rel}" for rel in report.bad_inline)
    if report.unreadable:
        yield f"unreadable entries ({len(report.unreadable):,}):"
        yield from (f"  {rel}: {_one_line(Exception(msg))}" for rel, msg in report.unreadable.items())


# -- prefetch ----------------------------------------------------------------------------


@main.command(short_help="Download files into the local cache, for fast and offline reads.")
@click.argument("urls", nargs=-1, required=True, metavar="URL...")
@_pass
def prefetch(opts: _Options, urls: tuple[str, ...]) -> None:
    """Download the files at URL... (directories: every file below) into the local cache, so
    that they read locally, also with S3 unreachable. Exit code 1 if some could not be cached."""
    from cas_store.maintenance import prefetch as run_prefetch

    fs = opts.filesystem()
    with opts.progress() as progress:
        report = run_prefetch(fs, urls, progress)
    if opts.as_json:
        emit_json(report.to_dict())
    else:
        click.echo(
            f"{report.files:,} files ({report.inline_files:,} inline), {report.chunks:,} chunks: "
            f"{report.downloaded_chunks:,} downloaded ({format_size(report.downloaded_bytes)}), "
            f"{report.cached_chunks:,} already cached ({format_size(report.cached_bytes)})"
        )
        for path, message in report.failed.items():
            click.echo(f"  failed: {path}: {_one_line(Exception(message))}")
        if report.uncached_chunks:
            click.echo(
                f"  {report.uncached_chunks:,} chunks did not stay in the cache (too small? see "
                "cas-store cache info): those files still need S3"
            )
    if not report.ok:
        opts.ctx.exit(EXIT_PROBLEMS)


# -- cache -------------------------------------------------------------------------------


@main.group(short_help="The local cache: info, prune, clear.")
def cache() -> None:
    """The local cache of this machine (shared by every store): info, prune, clear."""


@cache.command("info")
@_pass
def cache_info_(opts: _Options) -> None:
    """Where the cache is, what it holds, its size limit and eviction policy."""
    from cas_store.maintenance import cache_info

    info = cache_info(opts.cache())
    if opts.as_json:
        emit_json(info.to_dict())
        return
    table(
        [
            ("directory", info.directory),
            ("blobs", f"{info.blobs:,}, {with_bytes(info.blob_bytes)}"),
            ("size", f"{with_bytes(info.size_bytes)}: blobs and their database"),
            ("size limit", f"{with_bytes(info.size_limit)}: this process's cache_size"),
            ("eviction", info.eviction_policy),
            ("mirror", f"{format_size(info.mirror_bytes)}: entries seen here, kept by prune and clear"),
        ]
    )


@cache.command("prune")
@click.option("--to", "to", type=SizeType(), required=True, help="Target size, e.g. 10GiB, 500M.")
@_pass
def cache_prune(opts: _Options, to: int) -> None:
    """Evict blobs (by the cache's eviction policy) until the cache is at most --to."""
    from cas_store.maintenance import prune_cache

    result = prune_cache(opts.cache(), to)
    if opts.as_json:
        emit_json(result.to_dict())
        return
    click.echo(
        f"removed {result.removed_blobs:,} blobs: {format_size(result.size_before)} -> "
        f"{format_size(result.size_after)}"
    )


@cache.command("clear")
@_pass
def cache_clear(opts: _Options) -> None:
    """Remove every cached blob (the mirror of entries is kept)."""
    from cas_store.maintenance import clear_cache

    removed = clear_cache(opts.cache())
    if opts.as_json:
        emit_json({"removed_blobs": removed})
        return
    click.echo(f"removed {removed:,} blobs")
