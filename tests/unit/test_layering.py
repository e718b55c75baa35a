"""Architecture rules the code must keep (docs/design.md, "Layers")."""

from __future__ import annotations

import ast
import os
from pathlib import Path

import pytest

from cas_store.backend import MemoryObjectStore
from cas_store.config import MiB
from tests.support.wrappers import HookedObjectStore
from tests.unit.conftest import StoreFactory

PACKAGE = Path(__file__).resolve().parents[2] / "cas_store"


def _modules() -> dict[str, ast.Module]:
    return {
        str(p.relative_to(PACKAGE)): ast.parse(p.read_text(), str(p)) for p in sorted(PACKAGE.rglob("*.py"))
    }


def _imports(tree: ast.Module) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_only_the_backend_speaks_s3() -> None:
    s3_libraries = ("s3fs", "botocore", "aiobotocore", "aiohttp", "boto3")
    # The flavor only type-checks the boto client a ZenML connector hands it, to read its keys.
    allowed = {"zenml.py": ["botocore.client"]}
    offenders = {
        name: sorted(i for i in _imports(tree) if i.split(".")[0] in s3_libraries)
        for name, tree in _modules().items()
        if not name.startswith("backend/")
    }
    assert {k: v for k, v in offenders.items() if v and v != allowed.get(k)} == {}


def test_only_the_collector_deletes_blobs() -> None:
    """O3: removals delete entries only; the collector (maintenance/gc.py) is the only code
    that deletes under blobs/. The other delete_many outside the backend is the manifest's,
    whose keys all come from Root.manifest_key (checked at run time by the next test)."""
    callers = {
        name
        for name, tree in _modules().items()
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute) and node.attr == "delete_many" and not name.startswith("backend/")
    }
    assert callers == {"manifest.py", "maintenance/gc.py"}


def test_everything_but_the_collector_leaves_blobs_alone(make_store: StoreFactory) -> None:
    """Every other operation that deletes (remove, overwrite, move, a failed exclusive write)
    issues deletes for manifest keys only: recorded at the backend seam."""
    deleted: list[str] = []

    async def record(method: str, key: str) -> None:
        if method == "delete":
            deleted.append(key)

    memory = MemoryObjectStore("bkt")
    store = make_store(HookedObjectStore(memory, record))
    for rel, size in (("a", 3 * MiB), ("b", 100), ("d/c", 2 * MiB)):
        with store.open_write(rel, rel) as f:
            f.write(os.urandom(size))
    with store.open_write("a", "a") as f:  # overwrite
        f.write(os.urandom(MiB))
    store.copy("a", "d/a2")
    store.remove(["a", "b", "d/c", "missing"])
    with pytest.raises(FileExistsError), store.open_write("d/a2", "d/a2", exclusive=True) as f:
        f.write(b"x")
    assert deleted and all(k.startswith("root/manifest/") for k in deleted), deleted
    assert len(memory.keys("root/blobs/")) == 6  # 3 + 2 + 1 chunks, all still there


def test_pure_modules_do_no_io() -> None:
    pure = ("chunking.py", "compression.py", "format.py", "layout.py", "hashing.py", "safety.py")
    allowed = {
        "__future__",
        "base64",
        "json",
        "dataclasses",
        "typing",
        "collections.abc",
        "hashlib",
        "xxhash",
        "blake3",
        "re",
        "secrets",  # a new store's random store_id
        "pyfastcdc.cy",  # FastCDC's cut loop, over buffers in memory only
        "zstandard",  # compresses and decompresses buffers in memory only
        "threading",  # compression.py: a zstd context per thread
    }
    for name in pure:
        imports = {i for i in _imports(_modules()[name]) if not i.startswith("cas_store")}
        assert imports <= allowed, f"{name} imports {sorted(imports - allowed)}"
        inner = {i for i in _imports(_modules()[name]) if i.startswith("cas_store")}
        pure_deps = {
            "cas_store.errors",
            "cas_store.hashing",
            "cas_store.chunking",
            "cas_store.safety",
            "cas_store.compression",
        }
        assert inner <= pure_deps, name


def _import_time_imports(body: list[ast.stmt]) -> set[str]:
    """Modules a module body imports when it runs: not inside functions, nor under
    ``if TYPE_CHECKING:``."""
    names: set[str] = set()
    for node in body:
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
        elif isinstance(node, ast.If):
            if not (isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"):
                names |= _import_time_imports(node.body)
            names |= _import_time_imports(node.orelse)
        elif isinstance(node, ast.Try):
            for block in (node.body, node.orelse, node.finalbody, *(h.body for h in node.handlers)):
                names |= _import_time_imports(block)
        elif isinstance(node, ast.ClassDef):
            names |= _import_time_imports(node.body)
    return names


def test_only_the_flavor_imports_zenml_at_import_time() -> None:
    """``import cas_store``, ``cas_store.maintenance`` and ``cas_store.cli`` stay free of zenml:
    the ZenML lookups (maintenance/zenml_runs.py) and the scheme hook import it when called."""
    offenders = {
        name: sorted(
            i for i in _import_time_imports(tree.body) if i.split(".")[0] == "zenml" or i == "cas_store.zenml"
        )
        for name, tree in _modules().items()
        if name != "zenml.py"
    }
    assert {k: v for k, v in offenders.items() if v} == {}
    lookups = _imports(_modules()["maintenance/zenml_runs.py"])
    assert "zenml.client" in lookups and "cas_store.zenml" in lookups  # inside its functions
