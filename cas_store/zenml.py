"""The ZenML artifact store flavor ``s3cas``: ZenML's S3 artifact store, content-addressed.

Register it with::

    zenml artifact-store flavor register cas_store.zenml.S3CASArtifactStoreFlavor
    zenml artifact-store register my_store --flavor=s3cas --path=s3cas://my-bucket/zenml

:class:`S3CASArtifactStore` is a thin adapter: every ``BaseArtifactStore`` method
delegates to :class:`cas_store.CASFileSystem`, the way ZenML's own S3 flavor
(``zenml.integrations.s3``) delegates to s3fs, and credentials are resolved the same
way (service connector, then ``authentication_secret``, then explicit keys, then boto's
environment/profile chain). ``docs/zenml.md`` lists every intended difference.

Rules this module follows because ZenML (0.98.0) depends on them:

* no ``from __future__ import annotations``, and path parameters annotated exactly
  ``PathType``: ZenML finds path arguments by comparing the *evaluated* annotation with
  ``PathType`` and silently skips its path checks otherwise;
* importing it registers ``s3cas://`` as a remote scheme (see :mod:`cas_store.zenml_scheme`);
* ``IS_IMMUTABLE_FILESYSTEM = True``: ZenML then writes step logs as new small files
  instead of appending to one file (an append would rewrite the whole object here);
* no configuration field is named ``secret``, ``env``, ``label``, ``connector`` or
  ``flavor``: the ZenML CLI claims those option names for itself.
"""

import dataclasses
import logging
import re
from collections.abc import Callable, Iterable
from typing import Any, ClassVar, cast

from pydantic import Field, field_validator, model_validator
from zenml.artifact_stores import BaseArtifactStore, BaseArtifactStoreConfig, BaseArtifactStoreFlavor
from zenml.artifact_stores.base_artifact_store import PathType
from zenml.io.fileio import convert_to_str
from zenml.models import ServiceConnectorRequirements
from zenml.secret.schemas import AWSSecretSchema
from zenml.stack.authentication_mixin import AuthenticationConfigMixin, AuthenticationMixin
from zenml.utils.networking_utils import replace_localhost_with_internal_hostname
from zenml.utils.secret_utils import SecretField

from cas_store.config import StoreConfig
from cas_store.errors import (
    BucketNotFoundError,
    CredentialsError,
    IncompatibleStoreError,
    InvalidPathError,
    StoreOfflineError,
)
from cas_store.filesystem import CASFileSystem
from cas_store.layout import Root
from cas_store.sizes import format_size
from cas_store.writer import WriteReport
from cas_store.zenml_scheme import SCHEME, register_scheme

__all__ = [
    "FLAVOR_NAME",
    "S3CASArtifactStore",
    "S3CASArtifactStoreConfig",
    "S3CASArtifactStoreFlavor",
]

log = logging.getLogger(__name__)
#: The per-file savings lines (``log_writes``), at INFO: ZenML shows INFO in step logs.
write_log = logging.getLogger(f"{__name__}.writes")

#: cas_store's failures whose message says what the user must do: ZenML logs a failed step
#: with its traceback, and pages of traceback (aiohttp, botocore, ZenML) would bury that line.
ONE_LINE_ERRORS: tuple[type[BaseException], ...] = (
    StoreOfflineError,
    CredentialsError,
    BucketNotFoundError,
    IncompatibleStoreError,
    InvalidPathError,
)
#: The ZenML loggers that log a failed step (or its logs' upload, or a dashboard read) with
#: ``logger.exception``.
STEP_FAILURE_LOGGERS = (
    "zenml.orchestrators.local.local_orchestrator",
    "zenml.orchestrators.step_launcher",
    "zenml.orchestrators.step_runner",
    "zenml.log_stores.artifact.artifact_log_exporter",  # step logs that cannot be stored
    "zenml.zen_server.utils",  # the server's "API error" log, e.g. a visualization read with S3 down
)


class OneLineStepErrors(logging.Filter):
    """Drop the traceback from ZenML's step-failure records caused by :data:`ONE_LINE_ERRORS`.

    The record's message and the exception's own line stay: ``Step x failed: <what to do>``.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, ONE_LINE_ERRORS):
            record.msg = f"{record.getMessage().rstrip('.')}: {exc}"
            record.args = None
            record.exc_info = None
            record.exc_text = None
        return True


def _install_step_error_filter() -> None:
    for name in STEP_FAILURE_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, OneLineStepErrors) for f in logger.filters):
            logger.addFilter(OneLineStepErrors())


_install_step_error_filter()

FLAVOR_NAME = "s3cas"

register_scheme()

ZENML_ENTRY_TTL = 60.0

_DEFAULTS: dict[str, Any] = {f.name: f.default for f in dataclasses.fields(StoreConfig)}

#: StoreConfig fields given to CASFileSystem from the same-named config field.
STORE_OPTION_FIELDS = (
    "profile",
    "cache_dir",
    "cache_size",
    "cache_eviction_policy",
    "hash_algorithm",
    "inline_threshold",
    "chunk_size",
    "chunker",
    "compression",
    "max_concurrency",
    "connect_timeout",
    "read_timeout",
    "offline_timeout",
    "max_attempts",
    "offline_retry_after",
    "blob_memo_ttl",
    "entry_ttl",
    "verify_reads",
    "read_ahead",
    "gc_grace",
)
#: StoreConfig fields the artifact store fills in itself (credentials are resolved at
#: runtime from a connector, a secret or the config; the S3 kwargs may gain a region).
RESOLVED_FIELDS = (
    "aws_access_key_id",
    "aws_secret_access_key",
    "aws_session_token",
    "client_kwargs",
    "config_kwargs",
    "s3_additional_kwargs",
)


class S3CASArtifactStoreConfig(BaseArtifactStoreConfig, AuthenticationConfigMixin):
    """Configuration of the ``s3cas`` artifact store.

    ``path`` is the store root, ``s3cas://<bucket>/<prefix>`` (prefix optional): blobs, manifest and the
    format marker live under ``s3://<bucket>/<prefix>/``, which must be empty or already
    hold a cas_store store. From the CLI, pass dictionaries as JSON strings::

        zenml artifact-store register my_store --flavor=s3cas --path=s3cas://my-bucket/zenml \\
            --client_kwargs='{"endpoint_url": "http://minio:9000"}'
    """

    SUPPORTED_SCHEMES: ClassVar[set[str]] = {SCHEME}
    IS_IMMUTABLE_FILESYSTEM: ClassVar[bool] = True

    # -- credentials, as in ZenML's S3 flavor (its key/secret/token, renamed: the ZenML
    # CLI reserves --secret) ------------------------------------------------------------
    aws_access_key_id: str | None = SecretField(
        default=None,
        description="AWS access key ID. If not set, credentials come from a service connector, "
        "the authentication secret, or boto's environment/profile chain.",
    )
    aws_secret_access_key: str | None = SecretField(
        default=None,
        description="AWS secret access key (with aws_access_key_id).",
    )
    aws_session_token: str | None = SecretField(
        default=None,
        description="AWS session token for temporary credentials.",
    )
    profile: str | None = Field(
        default=None,
        description="AWS profile from the AWS config files, instead of AWS_PROFILE.",
    )
    client_kwargs: dict[str, Any] | None = Field(
        default=None,
        description="Keyword arguments for the S3 client, e.g. "
        "{'endpoint_url': 'http://minio:9000'} for an S3-compatible server.",
    )
    config_kwargs: dict[str, Any] | None = Field(
        default=None,
        description="Keyword arguments for botocore's client Config, e.g. "
        "{'request_checksum_calculation': 'when_required'}.",
    )
    s3_additional_kwargs: dict[str, Any] | None = Field(
        default=None,
        description="Extra parameters for S3 requests, e.g. {'ServerSideEncryption': 'AES256'}.",
    )
    bucket: str | None = Field(
        default=None,
        description="Derived from path (read-only): the bucket a service connector "
        "(resource type s3-bucket) must give access to.",
    )
    # -- cas_store settings (cas_store.StoreConfig; defaults are its defaults) -----------
    cache_dir: str | None = Field(
        default=None,
        description="Local cache directory. Default: $CAS_STORE_CACHE_DIR, else "
        "$XDG_CACHE_HOME/cas_store, else ~/.cache/cas_store (resolved on each machine).",
    )
    cache_size: int = Field(default=_DEFAULTS["cache_size"], description="Cache size limit in bytes.")
    cache_eviction_policy: str = Field(
        default=_DEFAULTS["cache_eviction_policy"],
        description="least-recently-stored, least-recently-used, least-frequently-used or none.",
    )
    hash_algorithm: str | None = Field(
        default=None,
        description="Hash algorithm of a new store (xxh128 by default; sha256 or blake3 for "
        "buckets shared with untrusted writers). An existing store's marker decides.",
    )
    inline_threshold: int = Field(
        default=_DEFAULTS["inline_threshold"],
        description="Files up to this many bytes are stored inside their manifest entry.",
    )
    chunk_size: int | None = Field(
        default=_DEFAULTS["chunk_size"],
        description="For a new store: fixed chunks (blobs) of this many bytes instead of "
        "content-defined ones. None: the store's chunker. An existing store's marker decides.",
    )
    chunker: str | None = Field(
        default=_DEFAULTS["chunker"],
        description="For a new store: 'fastcdc2020' (content-defined chunks of about 2 MiB, the "
        "default unless chunk_size is given) or 'fixed' (chunk_size, else 8 MiB). An existing "
        "store keeps its chunker; naming another is an error.",
    )
    compression: str | None = Field(
        default=_DEFAULTS["compression"],
        description="For a new store: 'zstd' (the default: each chunk stored as a zstd frame "
        "where that saves 1/8 of it), 'zstd:<level>', or 'none' (every blob raw, a format 2 "
        "store that cas_store 0.2 reads too). An existing store keeps its compression; naming "
        "another is an error.",
    )
    max_concurrency: int = Field(
        default=_DEFAULTS["max_concurrency"], description="Concurrent S3 requests per transfer."
    )
    connect_timeout: float = Field(
        default=_DEFAULTS["connect_timeout"], description="S3 connect timeout in seconds."
    )
    read_timeout: float = Field(default=_DEFAULTS["read_timeout"], description="S3 read timeout in seconds.")
    offline_timeout: float = Field(
        default=_DEFAULTS["offline_timeout"],
        description="Seconds a request, retries included, may wait for S3's answer before S3 "
        "counts as unreachable (uploads get one more second per 128 KiB).",
    )
    max_attempts: int = Field(default=_DEFAULTS["max_attempts"], description="Attempts per S3 request.")
    offline_retry_after: float = Field(
        default=_DEFAULTS["offline_retry_after"],
        description="After S3 was unreachable, serve from the cache and fail fast for this many "
        "seconds before trying S3 again.",
    )
    blob_memo_ttl: float = Field(
        default=_DEFAULTS["blob_memo_ttl"],
        description="Seconds a blob known to be in the bucket is trusted without asking S3.",
    )
    read_ahead: str = Field(
        default=_DEFAULTS["read_ahead"],
        description="How reads of uncached files fetch chunks: 'auto' (what a read covers, more "
        "while reading sequentially, everything for a whole read), 'none' or 'all' (at open).",
    )
    gc_grace: float = Field(
        default=_DEFAULTS["gc_grace"],
        description="For a new store: the garbage-collection grace period in seconds (unreferenced "
        "content is freed at the earliest this long after it was quarantined); recorded in the "
        "store's marker when the store is created. An existing store's marker decides.",
    )
    verify_reads: bool = Field(
        default=_DEFAULTS["verify_reads"],
        description="Check the whole-file digest on full reads of cached content (a file cached "
        "as one: on its first full read in each process).",
    )
    # ZenML writes every artifact to a new path and never rewrites it, so a confirmed entry
    # can be trusted for a while: warm artifact loads then make no S3 request at all.
    entry_ttl: float = Field(
        default=ZENML_ENTRY_TTL,
        description="Seconds an entry S3 confirmed is trusted for reads without asking S3 again "
        "(another machine's overwrite or delete of the same path shows after at most this long).",
    )

    log_writes: bool = Field(
        default=True,
        description="Log one line per file a step writes: its size and the bytes it added to the "
        "bucket (what was already stored cost nothing), in the step's logs.",
    )

    @model_validator(mode="before")
    @classmethod
    def _derive_bucket(cls, data: Any) -> Any:
        """``bucket`` is always the bucket of ``path`` (also after ``path`` changes)."""
        if isinstance(data, dict) and isinstance(data.get("path"), str):
            path = data["path"].strip("'\"`")
            if path.startswith(SCHEME):
                data = {**data, "bucket": Root.parse(path).bucket}
        return data

    @field_validator("client_kwargs")
    @classmethod
    def _validate_client_kwargs(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        """As in ZenML's S3 flavor: the endpoint must be an http(s) URL; inside a ZenML
        container, ``localhost`` becomes the Docker/K3D host's internal name."""
        if value is None:
            return value
        if value.get("endpoint_url"):
            url = str(value["endpoint_url"]).rstrip("/")
            scheme = re.search("^([a-z0-9]+://)", url)
            if scheme is None or scheme.group() not in ("https://", "http://"):
                raise ValueError(
                    f"Invalid URL for endpoint url: {url}. Should be in the form "
                    "https://hostname[:port] or http://hostname[:port]."
                )
            value = {**value, "endpoint_url": replace_localhost_with_internal_hostname(url)}
        return value

    @model_validator(mode="after")
    def _validate_store_settings(self) -> "S3CASArtifactStoreConfig":
        """Check the cas_store settings now (at registration), not at the first write."""
        Root.parse(self.path)
        StoreConfig(**self.store_options())
        # Credentials may be secret references ({{secret.key}}), resolved only when read:
        # look at the raw values, never through the resolving attribute access.
        raw = self.__dict__
        if (raw.get("aws_access_key_id") is None) != (raw.get("aws_secret_access_key") is None):
            raise ValueError("give both aws_access_key_id and aws_secret_access_key, or neither")
        return self

    def store_options(self) -> dict[str, Any]:
        """The cas_store settings of this config, as CASFileSystem keyword arguments."""
        return {name: getattr(self, name) for name in STORE_OPTION_FIELDS}


class S3CASArtifactStore(BaseArtifactStore, AuthenticationMixin):
    """Artifact store over :class:`~cas_store.CASFileSystem` (protocol ``s3cas``).

    Deduplicated (each distinct content is stored once per store root), locally cached,
    and readable offline from the cache. Thread-safe.
    """

    _filesystem: CASFileSystem | None = None

    @property
    def config(self) -> S3CASArtifactStoreConfig:
        """The config of this artifact store."""
        return cast(S3CASArtifactStoreConfig, self._config)

    # -- credentials and the file system ------------------------------------------------

    def get_credentials(self) -> tuple[str | None, str | None, str | None, str | None]:
        """(key, secret, token, region), resolved as ZenML's S3 flavor does.

        A linked service connector wins, then the authentication secret, then the keys
        in the configuration; all None means boto's environment/profile chain.
        """
        connector = self.get_connector()
        if connector:
            from botocore.client import BaseClient  # type: ignore[import-untyped,unused-ignore]

            client = connector.connect()
            if not isinstance(client, BaseClient):
                raise RuntimeError(
                    f"Expected a botocore.client.BaseClient while trying to "
                    f"use the linked connector, but got {type(client)}."
                )
            credentials = client.credentials
            return (
                credentials.access_key,
                credentials.secret_key,
                credentials.token,
                client.meta.region_name,
            )

        secret = self.get_typed_authentication_secret(expected_schema_type=AWSSecretSchema)
        if secret:
            return (
                secret.aws_access_key_id,
                secret.aws_secret_access_key,
                secret.aws_session_token,
                None,
            )
        return (
            self.config.aws_access_key_id,
            self.config.aws_secret_access_key,
            self.config.aws_session_token,
            None,
        )

    def _build_filesystem_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for :class:`CASFileSystem` (as the S3 flavor builds s3fs's)."""
        key, secret, token, region = self.get_credentials()
        # The connector's region, so that remote workloads find the bucket (as in the S3
        # flavor); explicit client_kwargs win.
        client_kwargs: dict[str, Any] = {}
        if region:
            client_kwargs["region_name"] = region
        if self.config.client_kwargs:
            client_kwargs.update(self.config.client_kwargs)
        return dict(
            root=self.config.path,
            aws_access_key_id=key,
            aws_secret_access_key=secret,
            aws_session_token=token,
            client_kwargs=client_kwargs,
            config_kwargs=self.config.config_kwargs or {},
            s3_additional_kwargs=self.config.s3_additional_kwargs or {},
            # One file system per component, released with it (as ZenMLS3Filesystem does).
            skip_instance_cache=True,
            **self.config.store_options(),
        )

    @property
    def filesystem(self) -> CASFileSystem:
        """The :class:`CASFileSystem` of this store; rebuilt when a connector's credentials expire."""
        if self._filesystem is not None and not self.connector_has_expired():
            return self._filesystem
        with self._filesystem_lock:
            if self._filesystem is not None and not self.connector_has_expired():
                return self._filesystem
            self._filesystem = CASFileSystem(**self._build_filesystem_kwargs())
            if self.config.log_writes:
                self._filesystem.on_written = self._log_write
            return self._filesystem

    def _log_write(self, report: WriteReport) -> None:
        """One line in the step's logs per file written: what deduplication saved."""
        root = self.config.path.rstrip("/")
        rel = report.path[len(root) + 1 :] if report.path.startswith(root + "/") else report.path
        # ZenML stores step logs in the artifact store, under logs/: a line per log file
        # would itself be logged, and stored, again.
        if rel.startswith("logs/"):
            return
        if report.size == 0:
            saved = ""
        elif report.inline:
            saved = " (a small file: stored whole each time)"
        elif report.added == 0:
            saved = " (all of it was stored already)"
        elif report.added >= report.size:
            saved = " (new content)"
        else:
            saved = f" ({1 - report.added / report.size:.0%} of it was stored already)"
        write_log.info(
            "cas_store: %s: %s written, %s added to the bucket%s",
            rel,
            format_size(report.size),
            format_size(report.added),
            saved,
        )

    def cleanup(self) -> None:
        """Release the S3 connections and the cache's database handles.

        Both reopen on the next use, so the store stays usable (ZenML calls this from
        the step-log exporter while the step's store may still be in use).
        """
        with self._filesystem_lock:
            if self._filesystem is not None:
                self._filesystem.close()

    # -- BaseArtifactStore --------------------------------------------------------------

    def open(self, path: PathType, mode: str = "r") -> Any:
        """Open a file: ``rb``/``wb`` and text ``r``/``w`` (files are immutable: no ``a``)."""
        return self.filesystem.open(path=path, mode=mode)

    def copyfile(self, src: PathType, dst: PathType, overwrite: bool = False) -> None:
        """Copy a file: publishes the same content under ``dst``; no bytes move."""
        if not overwrite and self.filesystem.exists(dst):
            raise FileExistsError(
                f"Unable to copy to destination '{convert_to_str(dst)}', "
                f"file already exists. Set `overwrite=True` to copy anyway."
            )
        self.filesystem.copy(path1=src, path2=dst)

    def exists(self, path: PathType) -> bool:
        """Whether a file or directory exists."""
        return self.filesystem.exists(path=path)

    def glob(self, pattern: PathType) -> list[PathType]:
        """Paths matching a glob pattern (``*``, ``?``, ``[...]``, ``**``), as full URIs."""
        return [_uri(path) for path in self.filesystem.glob(path=pattern)]

    def isdir(self, path: PathType) -> bool:
        """Whether a path is a directory (directories are implied by the files below them)."""
        return self.filesystem.isdir(path=path)

    def listdir(self, path: PathType) -> list[PathType]:
        """Names (basenames) of the files and directories in a directory.

        Raises FileNotFoundError for a missing directory.
        """
        base = self.filesystem._strip_protocol(convert_to_str(path))
        names: list[PathType] = []
        for listed in self.filesystem.ls(path, detail=False):  # names only: no entry GETs
            name = str(listed).rstrip("/")
            if name == base:  # the path is a file: it lists as itself, as in s3fs
                continue
            names.append(name[len(base) + 1 :] if name.startswith(base + "/") else name.rsplit("/", 1)[-1])
        return names

    def makedirs(self, path: PathType) -> None:
        """Nothing to create: directories are implied by their files, as in S3."""
        self.filesystem.makedirs(path=path, exist_ok=True)

    def mkdir(self, path: PathType) -> None:
        """Nothing to create: directories are implied by their files, as in S3."""
        self.filesystem.makedir(path=path)

    def remove(self, path: PathType) -> None:
        """Remove a file (its manifest entry; the content stays for garbage collection)."""
        self.filesystem.rm_file(path=path)

    def rename(self, src: PathType, dst: PathType, overwrite: bool = False) -> None:
        """Rename a file: publishes its entry under ``dst`` and removes ``src``; no bytes move."""
        if not overwrite and self.filesystem.exists(dst):
            raise FileExistsError(
                f"Unable to rename file to '{convert_to_str(dst)}', "
                f"file already exists. Set `overwrite=True` to rename anyway."
            )
        self.filesystem.rename(path1=src, path2=dst)

    def rmtree(self, path: PathType) -> None:
        """Remove a directory and everything below it."""
        self.filesystem.delete(path=path, recursive=True)

    def stat(self, path: PathType) -> dict[str, Any]:
        """fsspec info of a path: name, size, type, LastModified, algorithm, digest, inline."""
        return cast(dict[str, Any], self.filesystem.stat(path=path))

    def size(self, path: PathType) -> int:
        """Size of a file in bytes (0 for a directory, as in the S3 flavor)."""
        return int(self.filesystem.size(path=path) or 0)

    def walk(
        self,
        top: PathType,
        topdown: bool = True,
        onerror: Callable[..., None] | None = None,
    ) -> Iterable[tuple[PathType, list[PathType], list[PathType]]]:
        """Walk a directory tree like ``os.walk``, yielding full ``s3cas://`` directory URIs.

        Unlike the S3 flavor, ``topdown`` and ``onerror`` are honoured.
        """
        on_error: Any = onerror if onerror is not None else "omit"
        walk = self.filesystem.walk(path=top, topdown=topdown, on_error=on_error)
        for directory, subdirectories, files in walk:
            yield _uri(directory), subdirectories, files


def _uri(path: str) -> str:
    return path if path.startswith(SCHEME) else f"{SCHEME}{path}"


class S3CASArtifactStoreFlavor(BaseArtifactStoreFlavor):
    """The ``s3cas`` flavor: content-addressed, cached artifact storage on S3."""

    @property
    def name(self) -> str:
        """Name of the flavor."""
        return FLAVOR_NAME

    @property
    def display_name(self) -> str:
        """Display name of the flavor."""
        return "S3 (content-addressed, cached)"

    @property
    def service_connector_requirements(self) -> ServiceConnectorRequirements | None:
        """An AWS connector giving access to the bucket of ``path`` (the ``bucket`` field:
        the AWS connector accepts bucket names and ``s3://`` URIs, not ``s3cas://``)."""
        return ServiceConnectorRequirements(resource_type="s3-bucket", resource_id_attr="bucket")

    @property
    def docs_url(self) -> str | None:
        """A URL to point at docs explaining this flavor."""
        return None

    @property
    def sdk_docs_url(self) -> str | None:
        """A URL to point at SDK docs explaining this flavor."""
        return None

    @property
    def logo_url(self) -> str:
        """The S3 logo, as used by ZenML's S3 flavor."""
        return "https://public-flavor-logos.s3.eu-central-1.amazonaws.com/artifact_store/aws.png"

    @property
    def config_class(self) -> type[S3CASArtifactStoreConfig]:
        """The config class of the flavor."""
        return S3CASArtifactStoreConfig

    @property
    def implementation_class(self) -> type[S3CASArtifactStore]:
        """The implementation class of the flavor."""
        return S3CASArtifactStore
