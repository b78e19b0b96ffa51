"""The export manifest of a bundle: which graphs and engines it holds, what each was built from
and for, and the hashes that vouch for them (torch-free: the runtime reads it).

``BUNDLE/manifest.json``::

    {"format": "jemc-export/1",
     "graphs": {"text": {"files": {"onnx/text.onnx": sha256}, "precision": "fp32", "spec": {...},
                         "opset": 18, "parity": {...}, "source": {...}, "versions": {...}},
                "text.fp16": {...}, "video": {...}, "object": {...}, ...},
     "engines": {"<key>": {"graph": "text", "file": "engines/<key>.plan", "sha256": ..., "onnx_sha256": ...,
                           "tensorrt": "10.13.0", "gpu": "NVIDIA H100 80GB HBM3", "compute_capability": "9.0",
                           "precision": "fp16", "profiles": {...}, ...}}}

A graph is loaded only through :func:`verified_file`, which checks the sha256 the manifest
records; a TensorRT engine is executable code and is never loaded otherwise.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from jemc_infer.atomic import write_file
from jemc_infer.bundle import sha256_file
from jemc_infer.errors import BundleError
from jemc_infer.specs import GraphSpec, TensorSpec

__all__ = ["GraphSpec", "TensorSpec", "graph_entry", "graph_key", "read_manifest", "update_manifest", "verified_file"]

MANIFEST_FILE = "manifest.json"
MANIFEST_FORMAT = "jemc-export/1"


def graph_key(name: str, precision: str = "fp32") -> str:
    """The manifest key of a graph: ``text`` (fp32) or ``text.fp16``."""
    return name if precision == "fp32" else f"{name}.{precision}"


def read_manifest(bundle: Path) -> dict[str, Any]:
    """The bundle's manifest, or an empty one if nothing was exported yet.

    Raises:
        BundleError: If the file exists but is not a manifest.
    """
    path = Path(bundle) / MANIFEST_FILE
    if not path.exists():
        return {"format": MANIFEST_FORMAT, "graphs": {}, "engines": {}}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise BundleError(f"{path} | invalid JSON ({err.msg}) | expected an export manifest; re-run `jemc-infer export`") from None
    if not isinstance(data, dict) or data.get("format") != MANIFEST_FORMAT:
        raise BundleError(f"{path} | not a {MANIFEST_FORMAT} manifest | expected one written by `jemc-infer export`")
    data.setdefault("graphs", {})
    data.setdefault("engines", {})
    return data


def update_manifest(bundle: Path, change: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    """Read the manifest, apply ``change`` to it in place, and write it back atomically."""
    data = read_manifest(bundle)
    change(data)
    write_file(Path(bundle) / MANIFEST_FILE, lambda tmp: tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8"))
    return data


def graph_entry(bundle: Path, name: str, precision: str = "fp32") -> dict[str, Any]:
    """The manifest entry of an exported graph.

    Raises:
        BundleError: If the bundle has no such graph (with the command that makes it).
    """
    graphs = read_manifest(bundle)["graphs"]
    key = graph_key(name, precision)
    if key not in graphs:
        have = ", ".join(sorted(graphs)) or "none"
        flag = " --fp16" if precision == "fp16" else ""
        raise BundleError(f"{bundle} | no exported {key!r} graph (has: {have}) | expected it: run `jemc-infer export {bundle}{flag}`")
    return graphs[key]


def verified_file(bundle: Path, entry: dict[str, Any]) -> Path:
    """The main file of a manifest entry, after checking every file's sha256.

    A file hashed once is not hashed again while its stat identity (device, inode, size, mtime
    and ctime — ctime cannot be set back by a user) is unchanged: the bundle's ``.verified.json``
    remembers it (when the bundle is writable), so a query's cold start does not re-read
    tens of megabytes.

    Raises:
        BundleError: If a file is missing or its content differs from what the manifest records.
    """
    bundle = Path(bundle)
    files: dict[str, str] = entry["files"]
    cache = _read_verified(bundle)
    changed = False
    for rel, want in files.items():
        path = bundle / rel
        if not path.is_file():
            raise BundleError(f"{path} | missing | expected the file the manifest lists; re-run `jemc-infer export`")
        st = path.stat()
        ident = [want, st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]
        if cache.get(rel) == ident:
            continue
        got = sha256_file(path)
        if got != want:
            raise BundleError(f"{path} | sha256 {got[:12]}… | expected {want[:12]}… as the manifest records: modified or "
                              "truncated; re-run `jemc-infer export`")
        cache[rel], changed = ident, True
    if changed:
        with contextlib.suppress(OSError):  # a read-only bundle: verified again next time
            write_file(bundle / VERIFIED_FILE, lambda tmp: tmp.write_text(json.dumps(cache), encoding="utf-8"))
    return bundle / next(iter(files))


VERIFIED_FILE = ".verified.json"


def _read_verified(bundle: Path) -> dict[str, list[Any]]:
    try:
        data = json.loads((bundle / VERIFIED_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}
