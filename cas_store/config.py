"""All settings of a store in one place, shared by the filesystem, the CLI and the ZenML flavor."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from cas_store.compression import parse_compression
from cas_store.format import MAX_CHUNK_SIZE, MIN_CHUNK_SIZE
from cas_store.hashing import check_algorithm
from cas_store.safety import DEFAULT_GC_GRACE, check_grace

KiB = 2**10
MiB = 2**20
GiB = 2**30

CHUNKER_CHOICES = ("fastcdc2020", "fixed")
READ_AHEAD_POLICIES = ("auto", "none", "all")
EVICTION_POLICIES = ("least-recently-stored", "least-recently-used", "least-frequently-used", "none")


def default_cache_dir() -> Path:
    """``$CAS_STORE_CACHE_DIR``, else ``$XDG_CACHE_HOME/cas_store``, else ``~/.cache/cas_store``."""
    explicit = os.environ.get("CAS_STORE_CACHE_DIR")
    if explicit:
        return Path(explicit)
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg) if xdg else Path.home() / ".cache"
    return base / "cas_store"


@dataclass(frozen=True)
class StoreConfig:
    """Connection, cache and tuning settings.

    Credentials are optional: without them boto's usual chain applies (environment
    variables, ``AWS_PROFILE``/``profile``, config files, instance metadata). They are
    kept out of ``repr`` and never written anywhere.
    """

    # Credentials (optional; boto's env/profile chain otherwise).
    aws_access_key_id: str | None = field(default=None, repr=False)
    aws_secret_access_key: str | None = field(default=None, repr=False)
    aws_session_token: str | None = field(default=None, repr=False)
    profile: str | None = None
    # Passed through to s3fs / botocore, as in ZenML's S3 flavor.
    client_kwargs: Mapping[str, Any] = field(default_factory=dict)
    config_kwargs: Mapping[str, Any] = field(default_factory=dict)
    s3_additional_kwargs: Mapping[str, Any] = field(default_factory=dict)
    # Local cache.
    cache_dir: str | os.PathLike[str] | None = None
    cache_size: int = 32 * GiB
    cache_eviction_policy: str = "least-recently-stored"
    # Format choices for a new store; an existing store's marker decides otherwise.
    hash_algorithm: str | None = None
    inline_threshold: int = 16 * KiB
    # Files are stored as chunks of this many bytes, each its own blob, cut at fixed offsets
    # (None: the store's chunker; for a new store, see ``chunker``). In-flight upload memory
    # is about 2 x the upload budget (max_concurrency x max(average chunk, 4 MiB); botocore
    # holds a copy of each body) plus one chunk: writing 256 MiB, whatever the file size,
    # measured 58-63 MiB with 3 x 8 MiB fixed chunks and 46 MiB with the default
    # content-defined ones (2026-12-02).
    chunk_size: int | None = None
    # How a new store cuts files: "fastcdc2020" (content-defined chunks of 512 KiB to 8 MiB,
    # about 2.2 MiB on average: an insertion or edit changes only the chunks around it) or
    # "fixed" (chunk_size, else 8 MiB). None: fixed if chunk_size is given, else fastcdc2020.
    # An existing store keeps the chunker it was created with; naming another is an error.
    chunker: str | None = None
    # How a new store stores chunks: "zstd" (level 1: each chunk is kept as a zstd frame when
    # that saves at least 1/8 of it, else raw), "zstd:<level>", or "none" (every blob raw,
    # bucket format version 2, readable by cas_store releases before 0.3). None: zstd for a
    # new store. An existing store keeps its marker's settings; naming others is an error.
    compression: str | None = None
    max_concurrency: int = 3
    connect_timeout: float = 3.0
    # Bounds how long a server that stops sending mid-answer (a large body) can stall a call.
    read_timeout: float = 20.0
    # How long a request, retries included, may wait for the server's answer before S3
    # counts as unreachable (the circuit breaker below opens). It catches what timeouts per
    # attempt do not bound: an endpoint that accepts connections but never answers, and an
    # upload into a connection nobody reads. Uploads get one more second per 128 KiB of body
    # (a slow uplink is not an outage); a download's body, once it started, read_timeout.
    offline_timeout: float = 4.0
    # botocore attempts per request (standard retry mode). Kept low so that an unreachable
    # S3 is detected within about a second; throttling is also retried by s3fs.
    max_attempts: int = 2
    # After S3 was found unreachable, fail fast for this long before trying again.
    offline_retry_after: float = 15.0
    # How long an entry S3 confirmed is trusted for reads without asking S3 again. 0 (default):
    # every open/info asks S3, so another machine's overwrite or delete is seen at once. Raise
    # it for write-once paths (ZenML artifacts) to make warm reads free of network requests.
    entry_ttl: float = 0.0
    # Check the whole-file digest when cached content is read from start to end (catches bit
    # rot that keeps size and mtime): always for content read from several chunk files; for
    # a file cached as one (a small file, or the whole-file copy of one read whole before),
    # on its first full read in each process, then trusted while its fingerprint holds.
    # Content is always verified when it enters the cache, and modified cache files are
    # always caught. False: never checked again.
    verify_reads: bool = True
    # How reads fetch the chunks of a file not in the local cache: "auto" fetches what a read
    # covers, reads ahead while access is sequential (1, 2, 4, up to 8 chunks) and fetches
    # every chunk at once for a whole read; "none" only what reads cover; "all" everything at
    # open. Opening a file fetches nothing with "auto" and "none".
    read_ahead: str = "auto"
    # How long "this blob is in the bucket" is trusted without asking again (on a version 2
    # store also at most the marker's validity V, docs/gc.md rule W2).
    blob_memo_ttl: float = 3600.0
    # For a new store: the garbage-collection grace period in seconds, from which every
    # duration of the collection protocol derives (docs/gc.md section 2). Recorded in the
    # marker when the store is created; for an existing store the marker's value is used.
    gc_grace: float = DEFAULT_GC_GRACE

    def __post_init__(self) -> None:
        if self.hash_algorithm is not None:
            check_algorithm(self.hash_algorithm)
        if self.read_ahead not in READ_AHEAD_POLICIES:
            raise ValueError(
                f"read_ahead must be one of {', '.join(READ_AHEAD_POLICIES)}, not {self.read_ahead!r}"
            )
        if self.cache_eviction_policy not in EVICTION_POLICIES:
            raise ValueError(
                f"cache_eviction_policy must be one of {', '.join(EVICTION_POLICIES)}, "
                f"not {self.cache_eviction_policy!r}"
            )
        if self.chunk_size is not None and not (MIN_CHUNK_SIZE <= self.chunk_size <= MAX_CHUNK_SIZE):
            raise ValueError("chunk_size must be between 1 MiB and 5 GiB (S3's largest single PUT)")
        if self.chunker is not None and self.chunker not in CHUNKER_CHOICES:
            raise ValueError(f"chunker must be one of {', '.join(CHUNKER_CHOICES)}, not {self.chunker!r}")
        if self.chunker == "fastcdc2020" and self.chunk_size is not None:
            raise ValueError(
                "chunk_size sets fixed chunks: give it with chunker 'fixed' or none, not fastcdc2020"
            )
        if self.compression is not None:
            parse_compression(self.compression)
        if self.inline_threshold < 0 or self.inline_threshold > 1 * MiB:
            raise ValueError("inline_threshold must be between 0 and 1 MiB")
        check_grace(self.gc_grace)
        if self.entry_ttl < 0:
            raise ValueError("entry_ttl must be >= 0 seconds")
        if self.offline_timeout <= 0:
            raise ValueError("offline_timeout must be > 0 seconds")
        for name in ("cache_size", "max_concurrency", "max_attempts"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        if (self.aws_access_key_id is None) != (self.aws_secret_access_key is None):
            raise ValueError("give both aws_access_key_id and aws_secret_access_key, or neither")

    @property
    def resolved_cache_dir(self) -> Path:
        return Path(self.cache_dir) if self.cache_dir is not None else default_cache_dir()

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> StoreConfig:
        """Build from fsspec storage options, accepting s3fs's names (``key``, ``secret``, ``token``)."""
        aliases = {
            "key": "aws_access_key_id",
            "secret": "aws_secret_access_key",
            "token": "aws_session_token",
        }
        known = {f.name for f in fields(cls)}
        kwargs: dict[str, Any] = {}
        for given, value in options.items():
            name = aliases.get(given, given)
            if name not in known:
                raise TypeError(
                    f"unknown cas_store option {name!r}; known options: {', '.join(sorted(known))}"
                )
            kwargs[name] = value
        return cls(**kwargs)
