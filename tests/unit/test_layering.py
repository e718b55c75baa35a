"""Architecture rules the code must keep (docs/design.md, "Layers")."""

from __future__ import annotations

import ast
from pathlib import Path

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


def test_nothing_deletes_blobs() -> None:
    """O3: removals delete entries only. The one delete_many outside the backend is the
    manifest's (entry keys); the collector will be the only other caller."""
    callers = {
        name
        for name, tree in _modules().items()
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute) and node.attr == "delete_many" and not name.startswith("backend/")
    }
    assert callers == {"manifest.py"}


def test_pure_modules_do_no_io() -> None:
    pure = ("chunking.py", "format.py", "layout.py", "hashing.py", "safety.py")
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
    }
    for name in pure:
        imports = {i for i in _imports(_modules()[name]) if not i.startswith("cas_store")}
        assert imports <= allowed, f"{name} imports {sorted(imports - allowed)}"
        inner = {i for i in _imports(_modules()[name]) if i.startswith("cas_store")}
        assert inner <= {"cas_store.errors", "cas_store.hashing", "cas_store.chunking", "cas_store.safety"}, name
