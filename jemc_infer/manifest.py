"""The export manifest of a bundle: which graphs and engines it holds, what each was built from
and for, and the hashes that vouch for them (torch-free: the runtime reads it).

``BUNDLE/manifest.json``::

    {"format": "jemc-export/1",
     "graphs": {"text": {"files": {"onnx/text.onnx": sha256}, "precision": "fp32", "spec": {...},
                         "opset": 18, "parity": {...}, "source": {...}, "versions": {...}},
                "text.fp16": {...}, "video": {...}, "resnet": {...}, "i3d": {...}, "audio": {...}},
     "engines": {"<key>": {"graph": "text", "file": "engines/<key>.plan", "sha256": ..., "onnx_sha256": ...,
                           "tensorrt": "10.13.0", "gpu": "NVIDIA H100 80GB HBM3", "compute_capability": "9.0",
                           "precision": "fp16", "profiles": {...}, ...}}}

Graphs are named as the runtime names them: ``text``, ``video``, and the backbones by the feature
they make (``resnet``, ``i3d``, ``audio``). Manifests written before that named the backbones
``object`` and ``activity``; :func:`read_manifest` reads them under the new names.

A graph is loaded only through :func:`verified_file`, which checks the sha256 the manifest
records; a TensorRT engine is executable code and is never loaded otherwise.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jemc_infer.atomic import write_file
from jemc_infer.bundle import sha256_file
from jemc_infer.errors import BundleError
from jemc_infer.specs import BACKBONE_GRAPHS, OLD_GRAPH_NAMES, GraphSpec

__all__ = ["BACKBONE_GRAPHS", "GraphEntry", "gated_int8", "graph_entries", "graph_entry", "graph_key", "read_manifest",
           "update_manifest", "verified_file"]

MANIFEST_FILE = "manifest.json"
MANIFEST_FORMAT = "jemc-export/1"


@dataclass(frozen=True)
class GraphEntry:
    """One exported graph as the manifest records it (``graphs[<key>]``)."""

    files: dict[str, str]  # path relative to the bundle → sha256; the first is the graph, any others its external data
    spec: GraphSpec  # its inputs and outputs
    precision: str = "fp32"  # "fp32", "fp16" or "int8" (the text graph for the CPU: export.text_int8)
    source: dict[str, Any] | None = None  # {"weights_sha256": ...} (text, video) or {"backbone": provenance}
    parity: dict[str, Any] | None = None  # the gate's measurement (export.onnx.check_parity)
    opset: int | None = None
    exporter: str | None = None
    versions: dict[str, str] | None = None  # torch, onnx, onnxruntime at export time
    exported: str | None = None  # UTC time, ISO 8601
    retrieval_parity: dict[str, Any] | None = None  # fp16 text and video, int8 text: R@K moves measured on held-out data

    @property
    def path(self) -> str:
        """The graph file, relative to the bundle."""
        return next(iter(self.files))

    @property
    def sha256(self) -> str:
        """The graph file's sha256: what engines built from it and indexes embedded with it are bound to."""
        return self.files[self.path]

    @property
    def backbone(self) -> dict[str, Any] | None:
        """A backbone graph's provenance (``jemc_infer.nn.backbones``: network, weight file, sha256); else None."""
        return (self.source or {}).get("backbone")

    def to_json(self) -> dict[str, Any]:
        """The JSON record (fields left None are left out)."""
        out: dict[str, Any] = {"files": dict(self.files), "precision": self.precision, "spec": self.spec.to_json()}
        for name in ("opset", "exporter", "parity", "source", "versions", "exported", "retrieval_parity"):
            if getattr(self, name) is not None:
                out[name] = getattr(self, name)
        return out

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> GraphEntry:
        """Read a record; fields it lacks are None (unknown ones are ignored).

        Raises:
            KeyError, TypeError, ValueError: If ``files`` or ``spec`` is missing or malformed.
        """
        files = {str(k): str(v) for k, v in d["files"].items()}
        if not files:
            raise ValueError("no files")
        return cls(files=files, spec=GraphSpec.from_json(d["spec"]), precision=str(d.get("precision", "fp32")),
                   source=d.get("source"), parity=d.get("parity"), opset=d.get("opset"), exporter=d.get("exporter"),
                   versions=d.get("versions"), exported=d.get("exported"), retrieval_parity=d.get("retrieval_parity"))


def graph_key(name: str, precision: str = "fp32") -> str:
    """The manifest key of a graph: ``text`` (fp32) or ``text.fp16``."""
    return name if precision == "fp32" else f"{name}.{precision}"


def _current_name(name: str) -> str:
    return OLD_GRAPH_NAMES.get(name, name)


def _upgrade(data: dict[str, Any]) -> None:
    """Rename old backbone graphs (``object`` → ``resnet``, ``activity`` → ``i3d``) in place: keys,
    specs and engines' ``graph``. A graph already recorded under its new name wins."""
    graphs: dict[str, Any] = data["graphs"]
    for key in list(graphs):
        name, dot, precision = key.partition(".")
        if name not in OLD_GRAPH_NAMES:
            continue
        entry = graphs.pop(key)
        new_key = _current_name(name) + dot + precision
        if new_key in graphs:
            continue
        if isinstance(entry, dict) and isinstance(entry.get("spec"), dict):
            entry["spec"]["name"] = _current_name(str(entry["spec"].get("name")))
        graphs[new_key] = entry
    for engine in data["engines"].values():
        if isinstance(engine, dict) and engine.get("graph") in OLD_GRAPH_NAMES:
            engine["graph"] = _current_name(engine["graph"])
            if isinstance(engine.get("spec"), dict):
                engine["spec"]["name"] = _current_name(str(engine["spec"].get("name")))


def read_manifest(bundle: Path) -> dict[str, Any]:
    """The bundle's manifest as JSON data, or an empty one if nothing was exported yet.

    Backbone graphs recorded under their old names are returned under the new ones (see the
    module's docstring); the file itself is rewritten only by the next :func:`update_manifest`.

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
    _upgrade(data)
    return data


def update_manifest(bundle: Path, change: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    """Read the manifest, apply ``change`` to it in place, and write it back atomically."""
    data = read_manifest(bundle)
    change(data)
    write_file(Path(bundle) / MANIFEST_FILE, lambda tmp: tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8"))
    return data


def _entry(bundle: Path, key: str, record: Any) -> GraphEntry:
    try:
        return GraphEntry.from_json(record)
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        raise BundleError(f"{Path(bundle) / MANIFEST_FILE} | graph {key!r} has a malformed record ({type(err).__name__}: {err}) | "
                          "expected files and spec as `jemc-infer export` writes them; re-run it") from None


def graph_entries(bundle: Path) -> dict[str, GraphEntry]:
    """Every exported graph of the bundle, by manifest key (``text``, ``text.fp16``, ``resnet``...).

    Raises:
        BundleError: If the manifest or a record in it is malformed.
    """
    return {key: _entry(bundle, key, record) for key, record in read_manifest(bundle)["graphs"].items()}


def graph_entry(bundle: Path, name: str, precision: str = "fp32") -> GraphEntry:
    """The manifest entry of an exported graph.

    Args:
        bundle: The model bundle.
        name: ``text``, ``video``, ``resnet``, ``i3d`` or ``audio``.
        precision: ``fp32`` (default) or ``fp16``.

    Raises:
        BundleError: If the bundle has no such graph (with the command that makes it), or its
            record is malformed.
    """
    graphs = read_manifest(bundle)["graphs"]
    key = graph_key(name, precision)
    if key not in graphs:
        have = ", ".join(sorted(graphs)) or "none"
        flag = " --fp16" if precision == "fp16" else ""
        raise BundleError(f"{bundle} | no exported {key!r} graph (has: {have}) | expected it: run `jemc-infer export {bundle}{flag}`")
    return _entry(bundle, key, graphs[key])


def gated_int8(bundle: Path, graph: str = "text") -> tuple[GraphEntry | None, str]:
    """The bundle's int8 graph if it may replace the fp32 one, and why (or why not).

    Usable when ``export --text-int8`` recorded it with its gates passed (graph parity and
    retrieval parity within the recorded limit) and it was made from the same weights as the fp32
    graph beside it (a stale one, left by an older export, is never used).

    Raises:
        BundleError: If the manifest or a record in it is malformed.
    """
    graphs = read_manifest(bundle)["graphs"]
    key = graph_key(graph, "int8")
    if key not in graphs:
        return None, f"no {key!r} graph (export --text-int8 makes it)"
    entry, fp32 = _entry(bundle, key, graphs[key]), graphs.get(graph)
    rp = entry.retrieval_parity or {}
    if not (entry.parity or {}).get("passed") or "max_move_points" not in rp or rp["max_move_points"] > rp.get("limit_points", 0.5):
        return None, f"{key!r} has no passed parity gates in the manifest"
    if not isinstance(fp32, dict) or fp32.get("source") != entry.source:
        return None, f"{key!r} was made from other weights than the {graph!r} graph (a stale export)"
    return entry, (f"int8: max |diff| {entry.parity['max_abs_diff']:.1e}, R@1/5/10 moved <= {rp['max_move_points']:.2f} points "
                   f"on held-out data")


def verified_file(bundle: Path, entry: GraphEntry) -> Path:
    """The graph file of a manifest entry, after checking every file's sha256.

    A file hashed once is not hashed again while its stat identity (device, inode, size, mtime
    and ctime — ctime cannot be set back by a user) is unchanged: the bundle's ``.verified.json``
    remembers it (when the bundle is writable), so a query's cold start does not re-read
    tens of megabytes.

    Raises:
        BundleError: If a file is missing or its content differs from what the manifest records.
    """
    bundle = Path(bundle)
    cache = _read_verified(bundle)
    changed = False
    for rel, want in entry.files.items():
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
    return bundle / entry.path


VERIFIED_FILE = ".verified.json"


def _read_verified(bundle: Path) -> dict[str, list[Any]]:
    try:
        data = json.loads((bundle / VERIFIED_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}
