"""ZenML's view of a store: registered ``s3cas`` artifact stores, pipeline runs and their
artifacts, and what a run added to the bucket. The library behind ``cas-store
--zenml-store``, ``stats --zenml-run`` and ``prefetch --zenml-run/--zenml-artifact``.

ZenML is imported lazily, by the functions that ask it something: ``import cas_store`` and
``import cas_store.maintenance`` never import it (``tests/unit/test_layering.py``). Without
the ``zenml`` extra those functions raise :class:`ZenMLLookupError`.

* :func:`zenml_artifact_store` -- the connection, credentials, cache settings and root of
  a registered artifact store of flavor ``s3cas``, resolved exactly as the flavor resolves
  them (service connector, authentication secret, explicit keys, boto's chain).
* :func:`zenml_run`, :func:`zenml_artifact` -- the output artifact versions of a pipeline
  run; one artifact version by name and version.
* :func:`run_usage` -- per artifact of a run: logical bytes, and the bytes the run added
  to the bucket (definition: :class:`RunUsage`). Needs no ZenML: it takes the artifacts.

Credentials pass through :meth:`ZenMLArtifactStore.filesystem_options` only; nothing here
prints, logs or puts them into a ``repr`` or an error message (docs/design.md, O6).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

from cas_store.errors import CASStoreError, InvalidPathError
from cas_store.layout import Root
from cas_store.maintenance._common import Progress, iter_records, require_store
from cas_store.manifest import Listed
from cas_store.store import Store

__all__ = [
    "ArtifactUsage",
    "RunUsage",
    "ZenMLArtifact",
    "ZenMLArtifactStore",
    "ZenMLLookupError",
    "ZenMLRun",
    "artifact_store_of",
    "import_zenml",
    "run_usage",
    "split_by_store",
    "zenml_artifact",
    "zenml_artifact_store",
    "zenml_run",
]

#: The flavor these functions read (``cas_store.zenml.FLAVOR_NAME``, without importing it).
FLAVOR = "s3cas"
_CREDENTIALS = ("aws_access_key_id", "aws_secret_access_key", "aws_session_token")
#: A blob: (algorithm, digest).
_Key = tuple[str, str]


class ZenMLLookupError(CASStoreError, LookupError):
    """ZenML is not installed, or does not know the artifact store, run or artifact asked
    for, or the artifact store is not of flavor ``s3cas``."""


# -- ZenML itself ------------------------------------------------------------------------


def import_zenml(console: bool = True) -> ModuleType:
    """``import zenml``, or :class:`ZenMLLookupError` saying how to install it.

    ``console=False`` detaches the handler ZenML's import puts on the *root* logger, which
    prints every log record of the process (ZenML's and everyone else's) on stdout: for
    command-line tools whose stdout is their result.
    """
    try:
        import zenml
    except ImportError as exc:
        raise ZenMLLookupError(
            f"this needs ZenML, which cannot be imported ({exc}): install cas_store with its "
            "zenml extra (pip install 'cas_store[zenml]')"
        ) from exc
    if not console:
        root = logging.getLogger()
        for handler in list(root.handlers):
            if type(handler).__name__ == "ZenMLConsoleHandler":
                root.removeHandler(handler)
        logging.captureWarnings(False)
    return zenml


@contextmanager
def _asking(what: str, unknown: str | None = None) -> Iterator[None]:
    """ZenML's failures (unknown names, an unreachable server, ...) as one
    :class:`ZenMLLookupError` naming what was asked (``unknown``: the message for a
    ``KeyError``, ZenML's "not found")."""
    try:
        yield
    except ZenMLLookupError:
        raise
    except KeyError as exc:
        raise ZenMLLookupError(unknown or f"ZenML knows no {what}") from exc
    except Exception as exc:
        raise ZenMLLookupError(f"ZenML could not look up {what}: {_describe(exc)}") from exc


def _describe(exc: Exception) -> str:
    """One line about ``exc``. A pydantic validation error is told without the values it
    rejected: they may be credentials (a secret's or a configuration's keys)."""
    errors = getattr(exc, "errors", None)
    if type(exc).__name__ == "ValidationError" and callable(errors):
        try:
            found = errors(include_input=False, include_url=False)
            return "; ".join(f"{'.'.join(map(str, e['loc'])) or 'value'}: {e['msg']}" for e in found)
        except Exception:
            return type(exc).__name__
    return " ".join(str(exc).split()) or type(exc).__name__


def _client() -> Any:
    import_zenml()
    from zenml.client import Client

    return Client()


# -- artifact stores ---------------------------------------------------------------------


@dataclass(frozen=True)
class ZenMLArtifactStore:
    """A registered artifact store of flavor ``s3cas``: its name, id and store root (its
    ``path``), and the settings its file system is built with. Its ``repr`` shows no
    settings (they may hold credentials)."""

    name: str
    id: str
    root: str
    _component: Any = field(repr=False, compare=False)

    def store_options(self) -> dict[str, Any]:
        """The cas_store settings of the registration (cache, tuning; no credentials)."""
        return dict(self._component.config.store_options())

    def filesystem_options(
        self,
        *,
        endpoint_url: str | None = None,
        default_endpoint_url: str | None = None,
        profile: str | None = None,
        cache_dir: str | None = None,
    ) -> dict[str, Any]:
        """:class:`~cas_store.CASFileSystem` keyword arguments (``root`` included), as the
        artifact store builds them: credentials resolved now (connector, authentication
        secret, explicit keys; none: boto's chain), ``client_kwargs``, ``config_kwargs``,
        ``s3_additional_kwargs``, cache and tuning settings. Never print the result.

        Overrides: ``endpoint_url`` replaces the registered endpoint; ``default_endpoint_url``
        applies only if the registration names none; ``profile`` replaces the resolved
        credentials by that AWS profile; ``cache_dir`` replaces the cache directory.
        """
        what = f"the credentials of artifact store {self.name!r}"
        with _asking(what, f"ZenML could not find {what}: check its authentication_secret or connector"):
            options: dict[str, Any] = dict(self._component._build_filesystem_kwargs())
        client_kwargs = dict(options.get("client_kwargs") or {})
        if endpoint_url:
            client_kwargs["endpoint_url"] = endpoint_url
        elif default_endpoint_url and not client_kwargs.get("endpoint_url"):
            client_kwargs["endpoint_url"] = default_endpoint_url
        options["client_kwargs"] = client_kwargs
        if profile:
            options["profile"] = profile
            options.update(dict.fromkeys(_CREDENTIALS))
        if cache_dir:
            options["cache_dir"] = cache_dir
        return options


def zenml_artifact_store(name_or_id: str) -> ZenMLArtifactStore:
    """The registered artifact store ``name_or_id`` (exact name, or id), which must be of
    flavor ``s3cas``; else :class:`ZenMLLookupError`.

    The component is built from the installed :mod:`cas_store.zenml` (not from the flavor's
    registered source), so no ZenML source root is needed.
    """
    client = _client()
    from zenml.enums import StackComponentType

    with _asking(f"artifact store {name_or_id!r} (zenml artifact-store list shows the registered ones)"):
        model = client.get_stack_component(
            StackComponentType.ARTIFACT_STORE, name_id_or_prefix=name_or_id, allow_name_prefix_match=False
        )
    if model.flavor_name != FLAVOR:
        raise ZenMLLookupError(
            f"ZenML artifact store {model.name!r} has the flavor {model.flavor_name!r}, not {FLAVOR!r}: "
            f"cas-store reads {FLAVOR} stores only"
        )
    from cas_store.zenml import S3CASArtifactStore, S3CASArtifactStoreConfig, S3CASArtifactStoreFlavor

    with _asking(f"the configuration of artifact store {model.name!r}"):
        component = S3CASArtifactStore(
            name=model.name,
            id=model.id,
            config=S3CASArtifactStoreConfig(**model.configuration),
            flavor=model.flavor_name,
            type=model.type,
            user=model.user_id,
            created=model.created,
            updated=model.updated,
            environment=model.environment,
            secrets=model.secrets,
            labels=model.labels,
            connector_requirements=S3CASArtifactStoreFlavor().service_connector_requirements,
            connector=model.connector.id if model.connector else None,
            connector_resource_id=model.connector_resource_id,
        )
    return ZenMLArtifactStore(model.name, str(model.id), Root.parse(component.config.path).uri, component)


# -- runs and artifacts ------------------------------------------------------------------


@dataclass(frozen=True)
class ZenMLArtifact:
    """One artifact version, as ZenML records it."""

    name: str
    version: str
    uri: str
    id: str
    artifact_store_id: str | None
    #: The step that output it (in a run); "" when looked up by name.
    step: str = ""
    #: False for a cached step's output: an earlier run wrote it.
    produced: bool = True

    @property
    def label(self) -> str:
        return f"{self.name}:{self.version}"


@dataclass(frozen=True)
class ZenMLRun:
    """A pipeline run and the output artifact versions of its steps, in step order."""

    name: str
    id: str
    artifacts: tuple[ZenMLArtifact, ...]


def _artifact(version: Any, step: str = "", produced: bool = True) -> ZenMLArtifact:
    store_id = version.artifact_store_id
    return ZenMLArtifact(
        name=str(version.name),
        version=str(version.version),
        uri=str(version.uri),
        id=str(version.id),
        artifact_store_id=str(store_id) if store_id is not None else None,
        step=step,
        produced=produced,
    )


def zenml_run(name_or_id: str) -> ZenMLRun:
    """The pipeline run ``name_or_id`` (exact name, or id) and every output artifact
    version of its steps, a cached step's outputs (``produced=False``) included."""
    client = _client()
    with _asking(f"pipeline run {name_or_id!r} (zenml pipeline runs list shows them)"):
        run = client.get_pipeline_run(name_or_id, allow_name_prefix_match=False)
    with _asking(f"the steps of pipeline run {run.name!r}"):
        artifacts = [
            _artifact(version, step=step_name, produced=version.producer_pipeline_run_id == run.id)
            for step_name, step in run.steps.items()
            for versions in step.outputs.values()
            for version in versions
        ]
    return ZenMLRun(str(run.name), str(run.id), tuple(artifacts))


def zenml_artifact(spec: str) -> ZenMLArtifact:
    """The artifact version ``NAME:VERSION``, ``NAME`` (its latest version) or an artifact
    version id."""
    name, sep, version = spec.rpartition(":")
    if not sep or not name:
        name, version = spec, ""
    client = _client()
    shown = f"artifact {name!r}" + (f" with version {version!r}" if version else "")
    with _asking(f"{shown} (zenml artifact list shows them)"):
        return _artifact(client.get_artifact_version(name, version=version or None))


def split_by_store(
    root: Root | str, artifacts: Iterable[ZenMLArtifact]
) -> tuple[list[tuple[ZenMLArtifact, str]], list[ZenMLArtifact]]:
    """(artifacts whose uri lies below ``root``, each with its path relative to the root;
    the others)."""
    root = Root.parse(root) if isinstance(root, str) else root
    inside: list[tuple[ZenMLArtifact, str]] = []
    outside: list[ZenMLArtifact] = []
    for artifact in artifacts:
        rel = ""
        if artifact.uri.startswith("s3cas://"):
            try:
                rel = root.relative(artifact.uri)
            except InvalidPathError:
                rel = ""
        if rel:
            inside.append((artifact, rel))
        else:
            outside.append(artifact)
    return inside, outside


def artifact_store_of(artifacts: Sequence[ZenMLArtifact], what: str) -> ZenMLArtifactStore:
    """The one ``s3cas`` artifact store that holds ``artifacts`` (``what``: how to name them
    in an error), from their ``artifact_store_id``."""
    ids = sorted({a.artifact_store_id for a in artifacts if a.artifact_store_id})
    stores: list[ZenMLArtifactStore] = []
    others: list[str] = []
    for store_id in ids:
        try:
            stores.append(zenml_artifact_store(store_id))
        except ZenMLLookupError as exc:
            others.append(str(exc))
    if len(stores) == 1:
        return stores[0]
    if not stores:
        found = f": {'; '.join(others)}" if others else ""
        raise ZenMLLookupError(f"{what} are in no {FLAVOR} artifact store{found}")
    names = ", ".join(repr(s.name) for s in stores)
    raise ZenMLLookupError(
        f"{what} are in several {FLAVOR} artifact stores ({names}): choose one with --zenml-store"
    )


# -- what a run added --------------------------------------------------------------------


@dataclass
class ArtifactUsage:
    """One artifact version of a run in one store. Sizes are in bytes."""

    name: str
    version: str
    uri: str
    id: str
    step: str
    #: False: a cached step's output, written by an earlier run (it adds nothing).
    produced: bool
    #: The files at or below ``uri`` and the sum of their sizes.
    files: int = 0
    logical_bytes: int = 0
    #: Its distinct blobs' bytes plus its inline bytes: what the bucket holds for it.
    stored_bytes: int = 0
    #: What the run added for it (see :class:`RunUsage`), and how many of those are blobs.
    added_bytes: int = 0
    added_blobs: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "uri": self.uri,
            "id": self.id,
            "step": self.step,
            "produced": self.produced,
            "files": self.files,
            "logical_bytes": self.logical_bytes,
            "stored_bytes": self.stored_bytes,
            "added_bytes": self.added_bytes,
            "added_blobs": self.added_blobs,
        }


@dataclass
class RunUsage:
    """What a pipeline run's artifacts hold in one store, and what the run added to it.

    **Added bytes.** The *run's artifact directories* are the uris of the artifact versions
    the run produced (a cached step's outputs are not the run's). An entry's *time* is its
    LastModified in the bucket's manifest listing, in whole seconds. A blob is *added by
    the run* when an entry in the run's artifact directories names it and every entry
    outside those directories that names it is younger than the oldest such entry of the
    run (a tie counts as older: never claimed). That is: the run referenced it first.
    ``added_bytes`` is the sum of those blobs' sizes, each blob once, plus the inline bytes
    of the run's entries (inline content lives in the entry the run wrote; it is never
    shared). An added blob named by several artifacts of the run is counted for the one
    whose entry naming it is oldest (on a tie: the first in order), so the artifacts'
    ``added_bytes`` sum to the run's.

    Consequences: a second run of an identical pipeline adds only its inline bytes (every
    blob was referenced first by the earlier run), and the first run's numbers do not
    change when later runs reuse its blobs. Entries removed since are not seen: a blob
    left unreferenced by a removal counts as added by the next run that names it again,
    though that run uploaded nothing. A blob uploaded by a write that failed before it
    published its entry is not named by any entry and counts for no run.
    """

    run: str
    run_id: str
    root: str
    artifacts: list[ArtifactUsage] = field(default_factory=list)
    #: Artifact versions of the run that lie in other stores (not counted).
    other_stores: list[ZenMLArtifact] = field(default_factory=list)
    #: Distinct over the run's artifacts: a blob two artifacts share is counted once.
    stored_bytes: int = 0
    #: Entries that could not be decoded (path -> message); not counted.
    unreadable: dict[str, str] = field(default_factory=dict)

    @property
    def files(self) -> int:
        return sum(a.files for a in self.artifacts)

    @property
    def logical_bytes(self) -> int:
        return sum(a.logical_bytes for a in self.artifacts)

    @property
    def added_bytes(self) -> int:
        return sum(a.added_bytes for a in self.artifacts)

    @property
    def added_blobs(self) -> int:
        return sum(a.added_blobs for a in self.artifacts)

    def to_dict(self) -> dict[str, Any]:
        return {
            "run": {"name": self.run, "id": self.run_id},
            "root": self.root,
            "artifacts": [a.to_dict() for a in self.artifacts],
            "total": {
                "artifacts": len(self.artifacts),
                "files": self.files,
                "logical_bytes": self.logical_bytes,
                "stored_bytes": self.stored_bytes,
                "added_bytes": self.added_bytes,
                "added_blobs": self.added_blobs,
            },
            "other_stores": [{"name": a.name, "version": a.version, "uri": a.uri} for a in self.other_stores],
            "unreadable": self.unreadable,
        }


def _owner(rel: str, dirs: dict[str, int]) -> int | None:
    """The index of the artifact directory ``rel`` lies in (the deepest one), if any."""
    parts = rel.split("/")
    for end in range(len(parts), 0, -1):
        index = dirs.get("/".join(parts[:end]))
        if index is not None:
            return index
    return None


def run_usage(
    store: Store,
    run: ZenMLRun,
    progress: Progress | None = None,
) -> RunUsage:
    """:class:`RunUsage` of ``run``'s artifacts in ``store`` (those whose uri lies below its
    root; the others go into ``other_stores``).

    One listing of the manifest, and the entries the mirror does not hold at their listed
    ETag (as :func:`~cas_store.maintenance.usage`): every entry of the store is read, since
    any of them may name the run's blobs. Raises
    :class:`~cas_store.maintenance.StoreNotFoundError` if the root holds no store.
    """
    require_store(store)
    inside, outside = split_by_store(store.root, run.artifacts)
    result = RunUsage(run.name, run.id, store.root.uri, other_stores=outside)
    dirs: dict[str, int] = {}
    for index, (a, rel) in enumerate(inside):
        result.artifacts.append(ArtifactUsage(a.name, a.version, a.uri, a.id, a.step, a.produced))
        dirs.setdefault(rel, index)

    def unreadable(rel: str, exc: CASStoreError) -> None:
        result.unreadable[rel] = str(exc)

    listed = store.manifest.list_tree("")
    seconds = {item.rel: int(item.modified.timestamp()) for item in listed}
    owned: list[Listed] = []
    foreign: list[Listed] = []
    owner: dict[str, int] = {}
    for item in listed:
        found = _owner(item.rel, dirs)
        if found is None:
            foreign.append(item)
        else:
            owner[item.rel] = found
            owned.append(item)

    # The run's candidates: blob -> (time of the run's oldest entry naming it, artifact, size).
    first_in: dict[_Key, tuple[int, int, int]] = {}
    # Blob -> time of the oldest entry naming it outside the run's directories.
    first_out: dict[_Key, int] = {}
    run_blobs: dict[_Key, int] = {}
    artifact_blobs: list[dict[_Key, int]] = [{} for _ in result.artifacts]
    inline_bytes = 0
    for record in iter_records(store, owned, unreadable, _offset(progress, 0, len(listed))):
        index = owner[record.rel]
        usage, entry, when = result.artifacts[index], record.entry, seconds[record.rel]
        usage.files += 1
        usage.logical_bytes += entry.size
        if entry.inline is not None:
            usage.stored_bytes += entry.size
            inline_bytes += entry.size
            if usage.produced:
                usage.added_bytes += entry.size
        for chunk in entry.chunks:
            key = (entry.algorithm, chunk.digest)
            artifact_blobs[index][key] = chunk.stored_size
            run_blobs[key] = chunk.stored_size
            if not usage.produced:
                first_out[key] = min(when, first_out.get(key, when))
            elif key not in first_in or (when, index) < first_in[key][:2]:
                first_in[key] = (when, index, chunk.stored_size)
    for record in iter_records(store, foreign, unreadable, _offset(progress, len(owned), len(listed))):
        when = seconds[record.rel]
        for chunk in record.entry.chunks:
            key = (record.entry.algorithm, chunk.digest)
            if key in first_in:
                first_out[key] = min(when, first_out.get(key, when))
    for key, (when, index, size) in first_in.items():
        if when < first_out.get(key, when + 1):
            result.artifacts[index].added_bytes += size
            result.artifacts[index].added_blobs += 1
    for usage, blobs in zip(result.artifacts, artifact_blobs, strict=True):
        usage.stored_bytes += sum(blobs.values())
    result.stored_bytes = sum(run_blobs.values()) + inline_bytes
    return result


def _offset(progress: Progress | None, done: int, total: int) -> Progress | None:
    """``progress`` of one pass of entries, counted within all of them."""
    if progress is None:
        return None
    report: Callable[[str, int, int | None], None] = progress
    return lambda phase, n, _total: report(phase, done + n, total)
