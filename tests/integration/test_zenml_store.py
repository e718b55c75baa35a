"""The ZenML flavor ``s3cas`` without a ZenML database: config, ZenML's path mechanism,
credentials, behaviour against moto, and a differential test against ZenML's own S3 flavor."""

from __future__ import annotations
import __future__

import inspect
import random
import re
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest
from zenml import constants as zenml_constants
from zenml.artifact_stores.base_artifact_store import BaseArtifactStore, PathType, _sanitize_paths
from zenml.exceptions import ArtifactStoreInterfaceError
from zenml.io.filesystem_registry import default_filesystem_registry
from zenml.secret.schemas import AWSSecretSchema
from zenml.utils import io_utils, secret_utils

import cas_store.zenml as cas_zenml
from cas_store import StoreConfig, StoreOfflineError
from cas_store.zenml import (
    RESOLVED_FIELDS,
    STORE_OPTION_FIELDS,
    S3CASArtifactStore,
    S3CASArtifactStoreConfig,
    S3CASArtifactStoreFlavor,
)
from tests.support.clients import boto3_client, make_bucket
from tests.support.moto import MotoServer
from tests.support.requests import RequestLog
from tests.support.zenml import bucket_objects, make_component, zenml_environ

ROOT_PREFIX = "zenml"
StoreFactory = Callable[..., S3CASArtifactStore]


# -- fixtures --------------------------------------------------------------------------------


@pytest.fixture
def zbucket(moto: MotoServer) -> str:
    name = f"z-{uuid.uuid4().hex[:12]}"
    make_bucket(moto.endpoint_url, name, moto.access_key, moto.secret_key)
    return name


def _config(server: MotoServer, bucket: str, **overrides: Any) -> S3CASArtifactStoreConfig:
    options: dict[str, Any] = {
        "path": f"s3cas://{bucket}/{ROOT_PREFIX}",
        "aws_access_key_id": server.access_key,
        "aws_secret_access_key": server.secret_key,
        "client_kwargs": {"endpoint_url": server.endpoint_url},
    }
    options.update(overrides)
    return S3CASArtifactStoreConfig(**{k: v for k, v in options.items() if v is not None})


@pytest.fixture
def make_store(moto: MotoServer, zbucket: str, tmp_path: Path) -> StoreFactory:
    def factory(**overrides: Any) -> S3CASArtifactStore:
        store: S3CASArtifactStore = make_component(
            S3CASArtifactStore,
            _config(moto, zbucket, **{"cache_dir": str(tmp_path / "cache"), **overrides}),
            "s3cas",
        )
        return store

    return factory


@pytest.fixture
def store(make_store: StoreFactory) -> S3CASArtifactStore:
    return make_store()


@pytest.fixture
def root(zbucket: str) -> str:
    return f"s3cas://{zbucket}/{ROOT_PREFIX}"


def _access_keys(log: RequestLog) -> set[str]:
    """The access key IDs that signed the recorded requests."""
    keys = set()
    for req in log.requests:
        match = re.search(r"Credential=([^/]+)/\d+/([^/]+)/", req.headers.get("authorization", ""))
        if match:
            keys.add(match.group(1))
    return keys


def _regions(log: RequestLog) -> set[str]:
    return {
        m.group(1)
        for req in log.requests
        if (m := re.search(r"Credential=[^/]+/\d+/([^/]+)/", req.headers.get("authorization", "")))
    }


# -- ZenML's path mechanism -----------------------------------------------------------------


def test_zenml_treats_s3cas_as_remote_through_remote_fs_prefix(
    store: S3CASArtifactStore, root: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Fails if ZenML changes how it tells remote paths from local ones.

    cas_store appends ``s3cas://`` to ``zenml.constants.REMOTE_FS_PREFIX``. This checks
    that the list is there, that ZenML's remote check reads that very list, that it
    decides the artifact-store bounds check, and that the file system registry routes
    the scheme. If ZenML moves to another mechanism, one of these breaks.
    """
    assert isinstance(zenml_constants.REMOTE_FS_PREFIX, list)
    assert "s3cas://" in zenml_constants.REMOTE_FS_PREFIX
    assert io_utils.is_remote(f"{root}/x")
    assert re.match(rb"^([a-z0-9]+://)", b"s3cas://b/x"), "ZenML's scheme pattern must match s3cas://"
    fs_class = default_filesystem_registry.get_filesystem_for_path(f"{root}/x")
    assert fs_class.__name__ == "S3CASArtifactStore"

    # In bounds: passes ZenML's check. Out of bounds: ZenML's own error.
    assert store.exists(f"{root}/x") is False
    with pytest.raises(FileNotFoundError, match="outside of artifact store bounds"):
        store.exists(root.rsplit("/", 1)[0] + "/elsewhere/x")

    # Without the registration ZenML takes s3cas:// for a local path and rejects it:
    # this is what the registration is for, and how we know ZenML still uses the list.
    monkeypatch.setattr(
        zenml_constants, "REMOTE_FS_PREFIX", [p for p in zenml_constants.REMOTE_FS_PREFIX if p != "s3cas://"]
    )
    monkeypatch.setattr(io_utils, "REMOTE_FS_PREFIX", zenml_constants.REMOTE_FS_PREFIX)
    assert not io_utils.is_remote(f"{root}/x")
    with pytest.raises(FileNotFoundError, match="outside of artifact store bounds"):
        store.exists(f"{root}/x")


def _run_python(code: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code],
        env=zenml_environ(tmp_path / "zenml-config"),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_import_zenml_registers_the_scheme_through_the_init_hook(tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "from importlib.metadata import entry_points\n"
        "hooks = {e.value for e in entry_points(group='zenml.init_hooks')}\n"
        "assert 'cas_store.zenml_scheme:register_scheme' in hooks, hooks\n"
        "import zenml\n"
        "from zenml.constants import REMOTE_FS_PREFIX\n"
        "from zenml.utils.io_utils import is_remote\n"
        "assert 's3cas://' in REMOTE_FS_PREFIX, REMOTE_FS_PREFIX\n"
        "assert is_remote('s3cas://bucket/x')\n"
        "assert 'cas_store.zenml' not in sys.modules, 'the hook must stay light'\n"
        "import cas_store.zenml\n"
        "assert REMOTE_FS_PREFIX.count('s3cas://') == 1\n"
    )
    result = _run_python(code, tmp_path)
    assert result.returncode == 0, result.stderr
    # ZenML runs the group from zenml/__init__.py; if that goes, the hook never runs.
    import zenml

    assert "zenml.init_hooks" in Path(zenml.__file__).read_text()


def test_import_cas_store_does_not_import_zenml(tmp_path: Path) -> None:
    code = (
        "import sys, cas_store, cas_store.zenml_scheme\n"
        "leaked = sorted(m for m in sys.modules if m == 'zenml' or m.startswith('zenml.'))\n"
        "assert not leaked, leaked\n"
    )
    result = _run_python(code, tmp_path)
    assert result.returncode == 0, result.stderr


def test_zenml_checks_every_path_argument(store: S3CASArtifactStore) -> None:
    """ZenML finds path arguments by their evaluated annotation ``PathType``; a string
    annotation (``from __future__ import annotations``) would silently disable its checks."""
    assert getattr(cas_zenml, "annotations", None) is not __future__.annotations
    for name, method in inspect.getmembers(BaseArtifactStore):
        if not getattr(method, "__isabstractmethod__", False):
            continue
        expected = [p for p, v in inspect.signature(method).parameters.items() if v.annotation == PathType]
        wrapped = getattr(store, name)  # BaseArtifactStore wraps every abstract method
        assert isinstance(wrapped, _sanitize_paths), name
        assert wrapped.path_kwargs == expected, name
        assert expected or name == "cleanup", name


# -- configuration and flavor ---------------------------------------------------------------


def test_config_fields() -> None:
    names = set(S3CASArtifactStoreConfig.model_fields)
    # The ZenML CLI claims these option names (--secret, --env, --label, ...).
    assert not names & {"secret", "secrets", "env", "environment", "label", "labels", "connector", "flavor"}
    for name in ("aws_access_key_id", "aws_secret_access_key", "aws_session_token"):
        assert secret_utils.is_secret_field(S3CASArtifactStoreConfig.model_fields[name]), name
    assert "authentication_secret" in names
    assert S3CASArtifactStoreConfig.IS_IMMUTABLE_FILESYSTEM is True
    assert {"s3cas://"} == S3CASArtifactStoreConfig.SUPPORTED_SCHEMES
    # Every StoreConfig field reaches the file system: a new core setting needs a field here.
    assert set(STORE_OPTION_FIELDS) | set(RESOLVED_FIELDS) == {f.name for f in fields(StoreConfig)}
    defaults = StoreConfig()
    for name in STORE_OPTION_FIELDS:
        if name not in ("cache_dir", "entry_ttl"):
            assert S3CASArtifactStoreConfig.model_fields[name].default == getattr(defaults, name), name
    # Intended: ZenML never rewrites an artifact path, so the flavor trusts confirmed entries.
    assert S3CASArtifactStoreConfig.model_fields["entry_ttl"].default == 60.0
    assert defaults.entry_ttl == 0.0


def test_config_derives_the_bucket_from_the_path() -> None:
    config = S3CASArtifactStoreConfig(path="s3cas://my-bucket/zenml/artifacts")
    assert config.bucket == "my-bucket"
    assert config.model_dump(exclude_unset=True)["bucket"] == "my-bucket"  # stored, for connectors
    # ZenML merges the stored configuration into updates: a stale bucket must not survive.
    moved = S3CASArtifactStoreConfig(**{**config.model_dump(exclude_unset=True), "path": "s3cas://other/z"})
    assert moved.bucket == "other"
    assert S3CASArtifactStoreConfig(path="'s3cas://quoted/x'").bucket == "quoted"


@pytest.mark.filterwarnings("ignore:The `schema` method is deprecated")  # inside ZenML's own check
@pytest.mark.parametrize(
    ("options", "error"),
    [
        ({"path": "s3://bucket/zenml"}, ArtifactStoreInterfaceError),
        ({"path": "s3cas://"}, ValueError),
        ({"path": "s3cas://b/../x"}, ValueError),
        ({"path": "s3cas://b", "cache_eviction_policy": "fifo"}, ValueError),
        ({"path": "s3cas://b", "chunk_size": 1024}, ValueError),
        ({"path": "s3cas://b", "hash_algorithm": "md5"}, ValueError),
        ({"path": "s3cas://b", "aws_access_key_id": "only-the-key"}, ValueError),
        ({"path": "s3cas://b", "client_kwargs": {"endpoint_url": "ftp://host"}}, ValueError),
    ],
)
def test_config_is_validated_at_registration(options: dict[str, Any], error: type[Exception]) -> None:
    with pytest.raises(error):
        S3CASArtifactStoreConfig(**options)


def test_config_accepts_cli_strings_and_secret_references() -> None:
    # The CLI passes every value as a string; dictionaries as JSON.
    config = S3CASArtifactStoreConfig(
        path="s3cas://b/z",
        client_kwargs='{"endpoint_url": "http://127.0.0.1:9000"}',
        cache_size="1000000",
        offline_retry_after="2.5",
        aws_access_key_id="{{aws_creds.aws_access_key_id}}",
        aws_secret_access_key="{{aws_creds.aws_secret_access_key}}",
    )
    assert config.client_kwargs == {"endpoint_url": "http://127.0.0.1:9000"}
    assert config.cache_size == 1_000_000
    assert config.offline_retry_after == 2.5
    # Secret references are resolved only when used (here: never, there is no ZenML store).
    assert {s.name for s in config.required_secrets} == {"aws_creds"}


def test_flavor() -> None:
    flavor = S3CASArtifactStoreFlavor()
    assert flavor.name == "s3cas"
    assert flavor.config_class is S3CASArtifactStoreConfig
    assert flavor.implementation_class is S3CASArtifactStore
    requirements = flavor.service_connector_requirements
    assert requirements is not None
    assert requirements.resource_type == "s3-bucket"
    # The AWS connector accepts bucket names and s3:// URIs, not s3cas:// paths.
    assert requirements.resource_id_attr == "bucket"
    model = flavor.to_model(integration="custom", is_custom=True)
    assert model.source == "cas_store.zenml.S3CASArtifactStoreFlavor"
    assert model.connector_resource_id_attr == "bucket"
    schema = flavor.config_schema
    assert schema["properties"]["aws_secret_access_key"].get("sensitive") is True


def test_flavor_describe_renders(capsys: pytest.CaptureFixture[str]) -> None:
    """`zenml artifact-store flavor describe s3cas` prints the schema through rich markup:
    a ``[/...]`` in a docstring or description crashes it."""
    from zenml.cli.utils import describe_json_schema

    describe_json_schema(S3CASArtifactStoreFlavor().config_schema)
    out = capsys.readouterr().out
    assert "cache_size" in out and "aws_access_key_id" in out


# -- behaviour against moto ------------------------------------------------------------------


def test_files_directories_and_listings(store: S3CASArtifactStore, root: str) -> None:
    with store.open(f"{root}/run/step/out/data.bin", "wb") as f:
        f.write(b"\x00" * 100_000)
    with store.open(f"{root}/run/step/out/meta.json", "w") as f:
        f.write('{"a": "é"}')
    with store.open(f"{root}/run/step/out/meta.json", "r") as f:
        assert f.read() == '{"a": "é"}'
    with store.open(f"{root}/run/step/out/data.bin", "rb") as f:
        f.seek(99_990)
        assert f.read() == b"\x00" * 10

    assert sorted(store.listdir(f"{root}/run/step/out")) == ["data.bin", "meta.json"]  # basenames
    assert store.listdir(f"{root}/run") == ["step"]
    with pytest.raises(FileNotFoundError):
        store.listdir(f"{root}/missing")
    assert store.isdir(f"{root}/run/step") and not store.isdir(f"{root}/run/step/out/data.bin")
    assert store.size(f"{root}/run/step/out/data.bin") == 100_000
    assert store.size(f"{root}/run/step") == 0  # the ZenML server asks for directories too
    assert list(store.walk(f"{root}/run")) == [
        (f"{root}/run", ["step"], []),
        (f"{root}/run/step", ["out"], []),
        (f"{root}/run/step/out", [], ["data.bin", "meta.json"]),
    ]
    assert sorted(store.glob(f"{root}/run/**/*.json")) == [f"{root}/run/step/out/meta.json"]
    info = store.stat(f"{root}/run/step/out/data.bin")
    assert info["size"] == 100_000 and info["type"] == "file" and info["digest"]
    with pytest.raises(ValueError, match="not supported"):
        store.open(f"{root}/run/step/out/meta.json", "a")  # immutable: ZenML never appends here


def test_identical_content_is_uploaded_and_stored_once(
    store: S3CASArtifactStore, root: str, moto: MotoServer, zbucket: str
) -> None:
    content = random.Random(1).randbytes(2**20)  # above the inline threshold; incompressible
    with store.open(f"{root}/run1/model.bin", "wb") as f:
        f.write(content)
    with moto.record() as log:
        with store.open(f"{root}/run2/model.bin", "wb") as f:
            f.write(content)
        store.copyfile(f"{root}/run2/model.bin", f"{root}/copy/model.bin")
        store.rename(f"{root}/copy/model.bin", f"{root}/moved/model.bin")
    uploads = log.filter("PUT", bucket=zbucket, key_prefix=f"{ROOT_PREFIX}/blobs/") + log.filter(
        "POST", bucket=zbucket, key_prefix=f"{ROOT_PREFIX}/blobs/"
    )
    assert uploads == [], log.summary()
    blobs = bucket_objects(boto3_client(moto), zbucket, f"{ROOT_PREFIX}/blobs/")
    assert list(blobs.values()) == [len(content)]
    for path in ("run1/model.bin", "run2/model.bin", "moved/model.bin"):
        with store.open(f"{root}/{path}", "rb") as f:
            assert f.read() == content
    assert not store.exists(f"{root}/copy/model.bin")


class _StandInConnector:
    """What ZenML's AWS connector hands out for resource type s3-bucket: a boto3 S3 client
    carrying the session's credentials in ``.credentials``."""

    def __init__(self, server: MotoServer, key: str, region: str) -> None:
        import boto3

        session = boto3.session.Session(aws_access_key_id=key, aws_secret_access_key="s", region_name=region)
        self.client = session.client("s3", endpoint_url=server.endpoint_url)
        self.client.credentials = session.get_credentials()

    def connect(self) -> Any:
        return self.client


@pytest.mark.parametrize("source", ["config", "environment", "authentication_secret", "connector"])
def test_credentials_come_from_where_the_s3_flavor_takes_them(
    source: str,
    make_store: StoreFactory,
    root: str,
    moto: MotoServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if source == "config":
        store = make_store(aws_access_key_id="from-config", aws_secret_access_key="s")
    elif source == "environment":
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "from-env")
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s")
        store = make_store(aws_access_key_id=None, aws_secret_access_key=None)
    elif source == "authentication_secret":
        # Keys in the config too: the secret takes precedence, as in the S3 flavor.
        store = make_store(authentication_secret="aws-creds")
        secret = AWSSecretSchema(aws_access_key_id="from-secret", aws_secret_access_key="s")
        monkeypatch.setattr(store, "get_typed_authentication_secret", lambda expected_schema_type: secret)
    else:
        store = make_store(authentication_secret="ignored-when-a-connector-is-linked")
        connector = _StandInConnector(moto, "from-connector", "eu-west-3")
        monkeypatch.setattr(store, "get_connector", lambda: connector)
    with moto.record() as log, store.open(f"{root}/creds/{source}.txt", "w") as f:
        f.write(source)
    expected = {
        "config": "from-config",
        "environment": "from-env",
        "authentication_secret": "from-secret",
        "connector": "from-connector",
    }
    assert _access_keys(log) == {expected[source]}
    if source == "connector":
        assert _regions(log) == {"eu-west-3"}  # the connector's region reaches the client


def test_store_is_thread_safe(store: S3CASArtifactStore, root: str) -> None:
    """ZenML writes step logs from a background thread while the step writes artifacts."""
    errors: list[BaseException] = []

    def log_writer(n: int) -> None:
        try:
            for i in range(15):
                uri = f"{root}/logs/{n}/{i:03d}.log"
                with store.open(uri, "w") as f:
                    f.write(f"thread {n} line {i}\n" * 20)
                with store.open(uri, "r") as f:
                    assert f.read().startswith(f"thread {n} line {i}")
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=log_writer, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    big = bytes(range(256)) * 20_000
    for i in range(3):
        with store.open(f"{root}/artifacts/{i}.bin", "wb") as f:
            f.write(big)
    for t in threads:
        t.join()
    assert not errors, errors
    assert sorted(store.listdir(f"{root}/logs")) == [str(n) for n in range(6)]
    assert all(len(store.listdir(f"{root}/logs/{n}")) == 15 for n in range(6))


def test_store_stays_usable_after_cleanup(store: S3CASArtifactStore, root: str) -> None:
    with store.open(f"{root}/a.txt", "w") as f:
        f.write("before")
    store.cleanup()
    store.cleanup()
    assert store.exists(f"{root}/a.txt")
    with store.open(f"{root}/b.txt", "w") as f:
        f.write("after")
    with store.open(f"{root}/b.txt", "r") as f:
        assert f.read() == "after"


def test_config_reaches_the_file_system(make_store: StoreFactory, root: str, tmp_path: Path) -> None:
    store = make_store(
        cache_dir=str(tmp_path / "elsewhere"),
        cache_size=2**30,
        cache_eviction_policy="least-recently-used",
        inline_threshold=100,
        chunk_size=8 * 2**20,
        max_concurrency=2,
        offline_retry_after=3.0,
        config_kwargs={"request_checksum_calculation": "when_required"},
        s3_additional_kwargs={"StorageClass": "STANDARD"},
    )
    fs = store.filesystem
    assert store.filesystem is fs  # built once
    assert fs.root is not None and fs.root.uri == root
    config = fs.config
    assert config.resolved_cache_dir == tmp_path / "elsewhere"
    assert (config.cache_size, config.cache_eviction_policy, config.inline_threshold) == (
        2**30,
        "least-recently-used",
        100,
    )
    assert (config.chunk_size, config.max_concurrency, config.offline_retry_after) == (8 * 2**20, 2, 3.0)
    assert config.config_kwargs == {"request_checksum_calculation": "when_required"}
    assert config.s3_additional_kwargs == {"StorageClass": "STANDARD"}
    with store.open(f"{root}/x.bin", "wb") as f:
        f.write(b"y" * 1000)
    assert store.stat(f"{root}/x.bin")["inline"] is False  # above the configured threshold


@pytest.fixture
def private_moto() -> Iterator[MotoServer]:
    """A server of our own, so stopping it does not disturb other tests."""
    with MotoServer() as server:
        yield server


def test_cached_artifacts_stay_readable_offline(private_moto: MotoServer, tmp_path: Path) -> None:
    bucket = f"z-{uuid.uuid4().hex[:12]}"
    make_bucket(private_moto.endpoint_url, bucket, private_moto.access_key, private_moto.secret_key)
    config = _config(
        private_moto, bucket, cache_dir=str(tmp_path / "cache"), max_attempts=1, connect_timeout=1.0
    )
    store: S3CASArtifactStore = make_component(S3CASArtifactStore, config, "s3cas")
    root = config.path
    content = bytes(range(256)) * 1000
    with store.open(f"{root}/run/out/data.bin", "wb") as f:
        f.write(content)
    with store.open(f"{root}/run/out/meta.json", "w") as f:
        f.write("{}")
    private_moto.stop()
    start = time.monotonic()
    with store.open(f"{root}/run/out/data.bin", "rb") as f:
        assert f.read() == content
    assert store.exists(f"{root}/run/out/meta.json")
    assert store.isdir(f"{root}/run/out")
    assert sorted(store.listdir(f"{root}/run/out")) == ["data.bin", "meta.json"]
    with pytest.raises(StoreOfflineError), store.open(f"{root}/run/out/new.txt", "w") as f:
        f.write("x")
    assert time.monotonic() - start < 10


# -- differential test against ZenML's S3 flavor ----------------------------------------------

#: Every intended difference between the two flavors, for the call sequence below:
#: operation -> (S3ArtifactStore's result, S3CASArtifactStore's result, why).
#: docs/zenml.md ("What differs") describes the same list.
INTENDED_DIFFERENCES: dict[str, tuple[Any, Any, str]] = {
    "exists(root) before any write": (
        False,
        True,
        "the s3cas root is a store (format marker, manifest), a directory even when empty; "
        "an s3 prefix without objects does not exist",
    ),
    "isdir(root) before any write": (False, True, "same reason"),
    "listdir(root) before any write": ("!FileNotFoundError", [], "same reason"),
    "open(directory, 'rb')": (
        b"",
        "!IsADirectoryError",
        "s3fs reads a directory as an empty file; cas_store refuses, as a local file system does",
    ),
    "walk(missing)": (
        [["<R>/missing", [], []]],
        [],
        "s3fs yields a missing directory as empty; cas_store yields nothing, as os.walk does",
    ),
    "open(file, 'a')": (
        None,
        "!ValueError",
        "files are immutable content; ZenML never appends to an IS_IMMUTABLE_FILESYSTEM store",
    ),
    "listdir(root) at the end": (
        ["log.txt"],
        [],
        "consequence of the refused append above",
    ),
}


def _normalize(value: Any, root: str) -> Any:
    bare = root.split("://", 1)[1]
    if isinstance(value, str):
        return value.replace(root, "<R>").replace(bare, "<R>")
    if isinstance(value, (list, tuple)):
        return [_normalize(v, root) for v in value]
    if isinstance(value, dict):
        return {k: _normalize(v, root) for k, v in value.items() if k in ("name", "size", "type")}
    return value


def _call_sequence(store: BaseArtifactStore, r: str) -> list[tuple[str, Any]]:
    """The same BaseArtifactStore calls, as ZenML and materializers make them."""

    def write(path: str, data: Any, mode: str = "wb") -> None:
        with store.open(path, mode) as f:
            f.write(data)

    def read(path: str, mode: str = "rb") -> Any:
        with store.open(path, mode) as f:
            return f.read()

    def read_range(path: str) -> bytes:
        with store.open(path, "rb") as f:
            f.seek(1000)
            first = f.read(10)
            f.seek(-5, 2)
            return bytes(first + f.read())

    payload = bytes(range(256)) * 3000
    ops: list[tuple[str, Callable[[], Any]]] = [
        ("exists(root) before any write", lambda: store.exists(r)),
        ("isdir(root) before any write", lambda: store.isdir(r)),
        ("listdir(root) before any write", lambda: store.listdir(r)),
        ("makedirs", lambda: store.makedirs(f"{r}/a/b")),
        ("isdir(after makedirs)", lambda: store.isdir(f"{r}/a/b")),
        ("exists(after makedirs)", lambda: store.exists(f"{r}/a/b")),
        ("mkdir", lambda: store.mkdir(f"{r}/m")),
        ("write binary", lambda: write(f"{r}/a/b/f.bin", payload)),
        ("write text", lambda: write(f"{r}/a/t.txt", "héllo\n", "w")),
        ("write empty", lambda: write(f"{r}/a/e", b"")),
        ("read binary", lambda: read(f"{r}/a/b/f.bin") == payload),
        ("read range", lambda: read_range(f"{r}/a/b/f.bin")),
        ("read text", lambda: read(f"{r}/a/t.txt", "r")),
        ("read empty", lambda: read(f"{r}/a/e")),
        ("open(missing, 'rb')", lambda: read(f"{r}/a/nope")),
        ("open(directory, 'rb')", lambda: read(f"{r}/a/b")),
        ("exists(file)", lambda: store.exists(f"{r}/a/b/f.bin")),
        ("exists(dir)", lambda: store.exists(f"{r}/a/b")),
        ("exists(dir/)", lambda: store.exists(f"{r}/a/b/")),
        ("exists(missing)", lambda: store.exists(f"{r}/missing")),
        ("exists(bytes path)", lambda: store.exists(f"{r}/a/t.txt".encode())),
        ("isdir(file)", lambda: store.isdir(f"{r}/a/b/f.bin")),
        ("isdir(dir)", lambda: store.isdir(f"{r}/a")),
        ("isdir(missing)", lambda: store.isdir(f"{r}/missing")),
        ("listdir(root)", lambda: sorted(store.listdir(r))),
        ("listdir(dir)", lambda: sorted(store.listdir(f"{r}/a"))),
        ("listdir(dir/)", lambda: sorted(store.listdir(f"{r}/a/"))),
        ("listdir(file)", lambda: store.listdir(f"{r}/a/t.txt")),
        ("listdir(missing)", lambda: store.listdir(f"{r}/missing")),
        ("size(file)", lambda: store.size(f"{r}/a/b/f.bin")),
        ("size(dir)", lambda: store.size(f"{r}/a")),
        ("size(missing)", lambda: store.size(f"{r}/missing")),
        ("stat(file)", lambda: store.stat(f"{r}/a/b/f.bin")),
        ("stat(dir)", lambda: store.stat(f"{r}/a")),
        ("stat(missing)", lambda: store.stat(f"{r}/missing")),
        ("glob(files)", lambda: sorted(store.glob(f"{r}/a/*.txt"))),
        ("glob(files and dirs)", lambda: sorted(store.glob(f"{r}/a/*"))),
        ("glob(**)", lambda: sorted(store.glob(f"{r}/**/*.bin"))),
        ("glob(no match)", lambda: store.glob(f"{r}/q*")),
        ("walk(root)", lambda: list(store.walk(r))),
        ("walk(dir)", lambda: list(store.walk(f"{r}/a/b"))),
        ("walk(missing)", lambda: list(store.walk(f"{r}/missing"))),
        ("walk(file)", lambda: list(store.walk(f"{r}/a/t.txt"))),
        ("copyfile", lambda: store.copyfile(f"{r}/a/b/f.bin", f"{r}/c/f2.bin")),
        ("copyfile(existing dst)", lambda: store.copyfile(f"{r}/a/b/f.bin", f"{r}/c/f2.bin")),
        ("copyfile(overwrite)", lambda: store.copyfile(f"{r}/a/t.txt", f"{r}/c/f2.bin", overwrite=True)),
        ("read(copy)", lambda: read(f"{r}/c/f2.bin")),
        ("copyfile(missing src)", lambda: store.copyfile(f"{r}/nope", f"{r}/c/x")),
        ("copyfile(into dir)", lambda: store.copyfile(f"{r}/a/e", f"{r}/a/b", overwrite=True)),
        ("listdir(after copy into dir)", lambda: sorted(store.listdir(f"{r}/a/b"))),
        ("rename", lambda: store.rename(f"{r}/c/f2.bin", f"{r}/c/f3.bin")),
        ("rename(existing dst)", lambda: store.rename(f"{r}/a/t.txt", f"{r}/c/f3.bin")),
        ("rename(missing src)", lambda: store.rename(f"{r}/nope", f"{r}/c/f4")),
        ("listdir(after rename)", lambda: sorted(store.listdir(f"{r}/c"))),
        ("remove", lambda: store.remove(f"{r}/c/f3.bin")),
        ("exists(removed)", lambda: store.exists(f"{r}/c/f3.bin")),
        ("remove(missing)", lambda: store.remove(f"{r}/c/f3.bin")),
        ("remove(dir)", lambda: store.remove(f"{r}/a/b")),
        ("exists(file in dir after remove(dir))", lambda: store.exists(f"{r}/a/b/f.bin")),
        ("rmtree", lambda: store.rmtree(f"{r}/a")),
        ("exists(after rmtree)", lambda: store.exists(f"{r}/a")),
        ("rmtree(missing)", lambda: store.rmtree(f"{r}/a")),
        ("open(file, 'a')", lambda: write(f"{r}/log.txt", "x", "a")),
        ("outside the store", lambda: store.exists(r.split("://", maxsplit=1)[0] + "://elsewhere/x")),
        ("listdir(root) at the end", lambda: sorted(store.listdir(r))),
    ]
    results = []
    for name, op in ops:
        try:
            result = _normalize(op(), r)
        except Exception as exc:  # compared by type: messages legitimately differ
            result = f"!{type(exc).__name__}"
        results.append((name, result))
    return results


def test_same_calls_same_results_as_zenml_s3_flavor(
    store: S3CASArtifactStore, root: str, moto: MotoServer, zbucket: str
) -> None:
    from zenml.integrations.s3.artifact_stores import S3ArtifactStore
    from zenml.integrations.s3.flavors import S3ArtifactStoreConfig

    s3_config = S3ArtifactStoreConfig(
        path=f"s3://{zbucket}/plain",
        key=moto.access_key,
        secret=moto.secret_key,
        client_kwargs={"endpoint_url": moto.endpoint_url},
    )
    # ZenML rewrites loopback endpoints inside containers; the test must only ever talk to 127.0.0.1.
    assert s3_config.client_kwargs == {"endpoint_url": moto.endpoint_url}
    s3_store = make_component(S3ArtifactStore, s3_config, "s3")
    try:
        expected = _call_sequence(s3_store, f"s3://{zbucket}/plain")
    finally:
        s3_store.cleanup()
    actual = _call_sequence(store, root)

    assert [name for name, _ in expected] == [name for name, _ in actual]
    assert set(INTENDED_DIFFERENCES) <= {name for name, _ in actual}
    mismatches = []
    for (name, s3_result), (_, cas_result) in zip(expected, actual, strict=True):
        if name in INTENDED_DIFFERENCES:
            want_s3, want_cas, _why = INTENDED_DIFFERENCES[name]
            if (s3_result, cas_result) != (want_s3, want_cas):
                mismatches.append(
                    f"{name}: intended s3={want_s3!r} cas={want_cas!r}, "
                    f"got s3={s3_result!r} cas={cas_result!r}"
                )
        elif s3_result != cas_result:
            mismatches.append(f"{name}: s3={s3_result!r} cas={cas_result!r}")
    assert not mismatches, "\n".join(mismatches)
