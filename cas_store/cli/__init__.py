"""``cas-store``: inspect, verify and prefetch stores, and manage the local cache.

A thin layer over :mod:`cas_store.maintenance`: each command parses its arguments, calls
one library function and prints the result (``--json``: one JSON object on stdout).
Exit codes: 0 success; 1 problems found (``verify`` found damage, ``prefetch`` could not
cache every file); 2 usage errors; 3 the operation failed (a cas_store error, or a path
that does not exist), with ``cas-store: error: <message>`` on stderr.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import click

from cas_store import __version__
from cas_store.cli._output import (
    ChunkerType,
    DurationType,
    SizeType,
    emit_json,
    format_duration,
    progress_bars,
    table,
    with_bytes,
)
from cas_store.errors import CASStoreError
from cas_store.sizes import format_size

if TYPE_CHECKING:
    from cas_store.cache import LocalCache
    from cas_store.chunking import ChunkerSpec
    from cas_store.filesystem import CASFileSystem
    from cas_store.maintenance import StoreInfo, VerifyReport
    from cas_store.maintenance.zenml_runs import RunUsage, ZenMLArtifact, ZenMLArtifactStore
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
    #: ``--zenml-store``: a registered s3cas artifact store whose settings apply.
    zenml_store: str | None = None
    #: ``--endpoint-url`` came from ``$AWS_ENDPOINT_URL``: a registered endpoint wins over it.
    endpoint_from_env: bool = False
    verbose: int = 0
    _zenml: ZenMLArtifactStore | None = None
    _zenml_quiet: bool = False

    def zenml_ready(self) -> None:
        """Import ZenML for a lookup (a clear error without it), keeping its console
        handler off stdout (``-v``: its warnings on stderr)."""
        if self._zenml_quiet:
            return
        from cas_store.maintenance.zenml_runs import import_zenml

        import_zenml(console=False)
        self._zenml_quiet = True
        if self.verbose:
            handler = logging.StreamHandler()
            handler.setFormatter(logging.Formatter("cas-store: zenml: %(levelname)s: %(message)s"))
            handler.setLevel(logging.DEBUG if self.verbose > 1 else logging.WARNING)
            logging.getLogger("zenml").addHandler(handler)
            self.ctx.call_on_close(lambda: logging.getLogger("zenml").removeHandler(handler))

    def zenml(self) -> ZenMLArtifactStore | None:
        """The artifact store of ``--zenml-store`` (looked up once); None without it."""
        if self._zenml is None and self.zenml_store is not None:
            from cas_store.maintenance import zenml_artifact_store

            self.zenml_ready()
            self._zenml = zenml_artifact_store(self.zenml_store)
        return self._zenml

    def zenml_default(self, artifacts: list[ZenMLArtifact], what: str) -> ZenMLArtifactStore:
        """``--zenml-store``'s artifact store, or else the s3cas store that holds ``artifacts``."""
        found = self.zenml()
        if found is None:
            from cas_store.maintenance import artifact_store_of

            found = self._zenml = artifact_store_of(artifacts, what)
            self.zenml_store = found.name
        return found

    def url(self, path: str | None) -> str | None:
        """With ``--zenml-store``, a path without a scheme is relative to its root (empty or
        None: the root itself); otherwise ``path`` unchanged."""
        store = self.zenml()
        if store is None or (path is not None and "://" in path):
            return path
        rel = (path or "").strip("/")
        return f"{store.root}/{rel}" if rel else store.root

    def filesystem(self, root: str | None = None) -> CASFileSystem:
        """A file system with the global options; ``root``: exactly that store root."""
        from cas_store.filesystem import CASFileSystem

        options: dict[str, Any] = {}
        store = self.zenml()
        if store is not None:  # its settings, credentials included; explicit flags win
            options = store.filesystem_options(
                endpoint_url=None if self.endpoint_from_env else self.endpoint_url,
                default_endpoint_url=self.endpoint_url if self.endpoint_from_env else None,
                profile=self.profile,
                cache_dir=self.cache_dir,
            )
            options.pop("root", None)
        else:
            if self.endpoint_url:
                options["client_kwargs"] = {"endpoint_url": self.endpoint_url}
            if self.profile:
                options["profile"] = self.profile
            if self.cache_dir:
                options["cache_dir"] = self.cache_dir
        options["skip_instance_cache"] = True
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

        settings: dict[str, Any] = {}
        store = self.zenml()
        if store is not None:
            cache_fields = ("cache_dir", "cache_size", "cache_eviction_policy")
            settings = {k: v for k, v in store.store_options().items() if k in cache_fields}
        if self.cache_dir:
            settings["cache_dir"] = self.cache_dir
        config = StoreConfig(**settings)
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
@click.option(
    "--zenml-store",
    metavar="NAME",
    help="Take the endpoint, credentials, cache settings and root from the registered ZenML "
    "artifact store NAME (flavor s3cas); --endpoint-url, --profile and --cache-dir still win. "
    "Needs the zenml extra.",
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
    zenml_store: str | None,
    as_json: bool,
    verbose: int,
) -> None:
    """Inspect, verify and prefetch cas_store stores, and manage the local cache.

    ROOT is a store root (s3cas://BUCKET/PREFIX); URL is any path, whose store is found
    from the format markers above it. With --zenml-store, stats and prefetch also take
    them relative to that artifact store's root. Exit codes: 0 ok, 1 problems found, 2 usage
    error, 3 the operation failed.
    """
    _quiet_logging(ctx, verbose)
    from_env = ctx.get_parameter_source("endpoint_url") == click.core.ParameterSource.ENVIRONMENT
    ctx.obj = _Options(ctx, endpoint_url, profile, cache_dir, as_json, zenml_store, from_env, verbose)


_pass = click.make_pass_decorator(_Options)


# -- stats, ls, du -----------------------------------------------------------------------


@main.command(short_help="What a store holds: bytes, blobs, deduplication, reclaimable.")
@click.argument("root", required=False)
@click.option(
    "--zenml-run",
    metavar="RUN",
    help="Per output artifact of the ZenML pipeline run RUN (name or id): its logical bytes and "
    "the bytes the run added to the bucket.",
)
@_pass
def stats(opts: _Options, root: str | None, zenml_run: str | None) -> None:
    """What the store at ROOT holds: entries, bytes, blobs, deduplication, reclaimable space.

    With --zenml-store, ROOT may be omitted (the artifact store's root) or relative to it.
    With --zenml-run RUN, per output artifact of that run in the store: files, logical,
    stored and added bytes (blobs the run referenced first, and its inline content:
    docs/cli.md#zenml); without --zenml-store, the run's s3cas artifact store is used.
    """
    from cas_store.maintenance import usage

    if zenml_run is not None:
        _run_stats(opts, root, zenml_run)
        return
    if root is None and opts.zenml_store is None:
        raise click.UsageError("give ROOT, or --zenml-store NAME for the root of that artifact store")
    store = opts.filesystem(opts.url(root)).store()
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
        ("deduplicated", f"{with_bytes(result.deduplicated_bytes)}: the distinct content, uncompressed"),
        ("stored", f"{with_bytes(result.stored_bytes)}: blobs (compressed where it paid) and inline content"),
        ("dedup ratio", f"{result.dedup_ratio:.2f} (logical / deduplicated)"),
        ("compression", f"{result.compression_ratio:.2f} (deduplicated / what the bucket holds for it)"),
        (
            "reclaimable",
            f"{with_bytes(result.reclaimable_bytes)} in {result.unreferenced_blobs:,} unreferenced "
            "blobs (cas-store gc frees those older than the store's gc grace)",
        ),
        (
            "in quarantine",
            f"{with_bytes(result.quarantine_bytes)} in {result.quarantine_blobs:,} copies "
            "(freed by the next collection that is due)",
        ),
    ]
    if result.missing_blobs:
        rows.append(("missing", f"{result.missing_blobs:,} blobs named by entries: run cas-store verify"))
    if result.unreadable:
        rows.append(("unreadable", f"{len(result.unreadable):,} entries: run cas-store verify"))
    table(rows)


def _run_stats(opts: _Options, root: str | None, run_name: str) -> None:
    from cas_store.maintenance import run_usage, zenml_run

    opts.zenml_ready()
    run = zenml_run(run_name)
    opts.zenml_default(list(run.artifacts), f"the artifacts of pipeline run {run.name!r}")
    store = opts.filesystem(opts.url(root)).store()
    with opts.progress() as progress:
        result = run_usage(store, run, progress)
    if opts.as_json:
        emit_json(result.to_dict())
    else:
        _run_table(result)


def _run_table(result: RunUsage) -> None:
    click.echo(f"run    {result.run} ({result.run_id})")
    click.echo(f"store  {result.root}")
    rows = [("artifact", "version", "step", "files", "logical", "stored", "added")]
    for a in result.artifacts:
        version = a.version if a.produced else f"{a.version} (cached)"
        sizes = (format_size(a.logical_bytes), format_size(a.stored_bytes), format_size(a.added_bytes))
        rows.append((a.name, version, a.step, f"{a.files:,}", *sizes))
    rows.append(
        (
            "total",
            "",
            "",
            f"{result.files:,}",
            format_size(result.logical_bytes),
            format_size(result.stored_bytes),
            format_size(result.added_bytes),
        )
    )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        left = "  ".join(cell.ljust(w) for cell, w in zip(row[:3], widths, strict=False))
        right = "  ".join(cell.rjust(w) for cell, w in zip(row[3:], widths[3:], strict=True))
        click.echo(f"{left}  {right}")
    click.echo(
        f"added: {with_bytes(result.added_bytes)}, {result.added_blobs:,} blobs this run referenced "
        "first and its inline files"
    )
    if result.other_stores:
        names = ", ".join(a.label for a in result.other_stores)
        click.echo(f"not in this store: {len(result.other_stores):,} artifacts ({names})")
    if result.unreadable:
        click.echo(f"unreadable: {len(result.unreadable):,} entries: run cas-store verify")


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
                "deduplicated",
                f"{with_bytes(result.deduplicated_bytes)} in {result.chunks:,} distinct chunks and "
                "inline files",
            ),
            ("stored", f"{with_bytes(result.stored_bytes)}: those chunks as the bucket holds them"),
            ("dedup ratio", f"{result.dedup_ratio:.2f} (logical / deduplicated)"),
            ("compression", f"{result.compression_ratio:.2f} (deduplicated / stored)"),
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
        if report.quarantined:
            click.echo(
                f"{report.quarantined:,} blobs are in the collector's quarantine (read from there; "
                "the next due collection restores them)"
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
@click.argument("urls", nargs=-1, metavar="[URL...]")
@click.option(
    "--zenml-run",
    "zenml_runs",
    multiple=True,
    metavar="RUN",
    help="Also every output artifact of the ZenML pipeline run RUN (name or id). Repeatable.",
)
@click.option(
    "--zenml-artifact",
    "zenml_artifacts",
    multiple=True,
    metavar="NAME[:VERSION]",
    help="Also the ZenML artifact NAME at VERSION (default: its latest version). Repeatable.",
)
@_pass
def prefetch(
    opts: _Options, urls: tuple[str, ...], zenml_runs: tuple[str, ...], zenml_artifacts: tuple[str, ...]
) -> None:
    """Download the files at URL... (directories: every file below) into the local cache, so
    that they read locally, also with S3 unreachable. Exit code 1 if some could not be cached.

    With --zenml-store, URL may be relative to the artifact store's root. --zenml-run and
    --zenml-artifact add ZenML artifacts (without --zenml-store: from their s3cas store),
    which then load with S3 unreachable."""
    from cas_store.maintenance import prefetch as run_prefetch

    if not (urls or zenml_runs or zenml_artifacts):
        raise click.UsageError("give URL..., --zenml-run RUN or --zenml-artifact NAME[:VERSION]")
    artifacts, elsewhere = _zenml_targets(opts, zenml_runs, zenml_artifacts)
    targets = [str(opts.url(u)) for u in urls] + [a.uri for a in artifacts]
    fs = opts.filesystem()
    with opts.progress() as progress:
        report = run_prefetch(fs, targets, progress)
    if opts.as_json:
        doc = report.to_dict()
        if zenml_runs or zenml_artifacts:
            doc["artifacts"] = [{"name": a.name, "version": a.version, "uri": a.uri} for a in artifacts]
            doc["other_stores"] = [{"name": a.name, "version": a.version, "uri": a.uri} for a in elsewhere]
        emit_json(doc)
    else:
        if artifacts:
            click.echo(f"ZenML artifacts: {', '.join(a.label for a in artifacts)}")
        if elsewhere:
            names = ", ".join(a.label for a in elsewhere)
            click.echo(f"  not in {opts.url(None)}, skipped: {names}")
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


def _zenml_targets(
    opts: _Options, runs: tuple[str, ...], specs: tuple[str, ...]
) -> tuple[list[ZenMLArtifact], list[ZenMLArtifact]]:
    """The ZenML artifacts ``prefetch`` was asked for: (those in the store, once each; the
    runs' artifacts in other stores). An artifact named by --zenml-artifact must be in it."""
    if not runs and not specs:
        return [], []
    from cas_store.maintenance import ZenMLLookupError, split_by_store, zenml_artifact, zenml_run

    opts.zenml_ready()
    found = [zenml_run(r) for r in runs]
    named = [zenml_artifact(s) for s in specs]
    wanted = [a for run in found for a in run.artifacts] + named
    store = opts.zenml_default(wanted, "the artifacts asked for")
    inside, outside = split_by_store(store.root, wanted)
    for a in named:
        if a in outside:
            raise ZenMLLookupError(f"ZenML artifact {a.label} is not in {store.root}: its uri is {a.uri}")
    for run in found:
        if not any(a in run.artifacts for a, _ in inside):
            raise ZenMLLookupError(f"pipeline run {run.name!r} has no output artifacts in {store.root}")
    unique = {a.id: a for a, _ in inside}
    return list(unique.values()), outside


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


# -- init, upgrade, gc -------------------------------------------------------------------


def _store_rows(info: StoreInfo) -> list[tuple[str, str]]:
    rows = [
        ("store", info.root),
        ("format", f"version {info.version}"),
        ("store id", info.store_id or "(none: format 1)"),
        ("hash", info.hash_algorithm),
        ("chunker", f"{info.chunker['name']} {info.chunker['params']}"),
    ]
    if info.version >= 2:
        comp = info.compression
        rows.append(
            (
                "compress",
                "none: every blob raw"
                if comp is None
                else f"zstd level {comp['level']}, where it saves at least {comp['min_saving']:.1%}",
            )
        )
    if info.gc is not None:
        gc = info.gc
        rows.append(
            (
                "gc grace",
                f"{format_duration(gc['grace'])} (quarantine delay {format_duration(gc['delta'])}, "
                f"writers re-check proofs older than {format_duration(gc['validity'] - gc['publish'])})",
            )
        )
    return rows


@main.command(short_help="Create a store, choosing its gc grace period and chunker.")
@click.argument("root")
@click.option(
    "--gc-grace",
    type=DurationType(),
    help="Grace period of garbage collection, e.g. 24h (default), 7d, or 2s for a test store. "
    "Fixed for the store's life.",
)
@click.option(
    "--chunker",
    type=ChunkerType(),
    help="How the store cuts files: fastcdc2020 (the default: "
    "min=512KiB,avg=2MiB,max=8MiB,normalization=2), fastcdc2020:PARAM=VALUE,... for other values "
    "of some, fixed (8MiB chunks) or fixed:SIZE; e.g. fixed:4MiB, "
    "fastcdc2020:min=256KiB,avg=1MiB,max=4MiB. Fixed for the store's life.",
)
@click.option(
    "--compression",
    metavar="zstd|zstd:LEVEL|none",
    help="How the store keeps chunks: zstd (the default: level 1, each chunk compressed where "
    "that saves at least 1/8, bucket format 3), zstd:LEVEL, or none (every blob raw, bucket "
    "format 2, readable by cas_store before 0.3). Fixed for the store's life.",
)
@_pass
def init(
    opts: _Options, root: str, gc_grace: float | None, chunker: ChunkerSpec | None, compression: str | None
) -> None:
    """Create a store (bucket format 3, or 2 without compression) at ROOT, an empty prefix,
    with the grace period, chunker and compression asked for. On an existing store with the
    same settings, reports it; with other settings, fails (they never change)."""
    from cas_store.compression import parse_compression
    from cas_store.maintenance import init_store

    if compression is not None:
        try:
            parse_compression(compression)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--compression") from exc
    info = init_store(opts.filesystem(root).store(), gc_grace, chunker, compression)
    if opts.as_json:
        emit_json(info.to_dict())
        return
    click.echo("created the store:" if info.created else "already a store (nothing changed):")
    table(_store_rows(info))


@main.command(short_help="Convert a format-1 store to format 2 (needed before gc).")
@click.argument("root")
@click.option("--gc-grace", type=DurationType(), help="Grace period of garbage collection (default 24h).")
@_pass
def upgrade(opts: _Options, root: str, gc_grace: float | None) -> None:
    """Rewrite the marker of the format-1 store at ROOT as format 2: same hash and chunker,
    a new store id and the collection durations. Files are not touched."""
    from cas_store.maintenance import upgrade_store

    info = upgrade_store(opts.filesystem(root).store(), gc_grace)
    if opts.as_json:
        emit_json(info.to_dict())
        return
    if not info.created:
        click.echo("already at format 2 (nothing changed):")
        table(_store_rows(info))
        return
    click.echo("upgraded to format 2:")
    table(_store_rows(info))
    assert info.gc is not None
    click.echo(
        "\nProcesses that opened this store before the upgrade still write as format 1, without the "
        "rules that make collection safe. `cas-store gc` waits "
        f"{format_duration(info.gc['delta'])} before its first collection unless you pass "
        "--no-v1-writers once every such process has exited."
    )


def _when(ts: float | None) -> str:
    if ts is None:
        return "when re-driven"
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


@main.command(short_help="Free the space no file uses (a dry run unless --yes).")
@click.argument("root")
@click.option("--yes", is_flag=True, help="Act: quarantine unreferenced blobs, free due ones.")
@click.option(
    "--break-lease", is_flag=True, help="Take the lease of a collector that crashed (it looks busy)."
)
@click.option(
    "--no-v1-writers",
    is_flag=True,
    help="Confirm that no process that opened the store as format 1 still runs (after upgrade).",
)
@_pass
def gc(opts: _Options, root: str, yes: bool, break_lease: bool, no_v1_writers: bool) -> None:
    """Collect the garbage of the store at ROOT: content no file names any more.

    Safe while other processes, on any machine, read and write the store. A collection moves
    unreferenced blobs older than the store's gc grace period to quarantine, and frees them
    at a later collection at least one grace period after; files written meanwhile that name
    them get them back. Without --yes, reports what it would do and changes nothing.
    Exit code 1 if a blob a file names was found nowhere (run cas-store verify).
    """
    from cas_store.maintenance import collect

    store = opts.filesystem(root).store()
    with opts.progress() as progress:
        report = collect(
            store,
            dry_run=not yes,
            progress=progress,
            break_lease=break_lease,
            v1_writers_gone=no_v1_writers,
        )
    if opts.as_json:
        emit_json(report.to_dict())
    else:
        grace = store.gc.grace if store.gc is not None else 0.0
        verb = ("would quarantine", "would free") if report.dry_run else ("quarantined", "freed")
        rows = [
            ("store", report.root),
            ("mode", "dry run: nothing changed (pass --yes to collect)" if report.dry_run else "collected"),
            (
                verb[0],
                f"{report.candidates:,} unreferenced blobs older than {format_duration(grace)}, "
                f"{with_bytes(report.candidate_bytes)}",
            ),
            (verb[1], f"{report.freed_blobs:,} quarantined blobs, {with_bytes(report.freed_bytes)}"),
        ]
        if not report.dry_run:
            rows.append(("restored", f"{report.restored_blobs:,} blobs that new files name"))
        if report.dry_run:
            rows.append(("reclaimable", with_bytes(report.reclaimable_bytes)))
        rows.append(("in quarantine", with_bytes(report.quarantine_bytes)))
        for status in report.pending:
            rows.append(
                (
                    "pending",
                    f"run {status.run}: {status.blobs:,} blobs, {format_size(status.bytes)}, "
                    f"freed by a collection after {_when(status.due_at)}",
                )
            )
        table(rows)
        for warning in report.warnings:
            click.echo(f"warning: {warning}", err=True)
        for key in report.lost:
            click.echo(f"lost: {key} is named by a file but in neither place", err=True)
    if report.lost:
        opts.ctx.exit(EXIT_PROBLEMS)
