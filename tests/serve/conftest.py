"""A real small index for the service's tests: videos written with PyAV, embedded with the
runtime bundle (``tests/conftest.py``), served by the real app through FastAPI's TestClient."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from support.served import N_VIDEOS, embed_into, make_videos

pytest.importorskip("fastapi", reason="the serve extra is not installed: pip install 'jemc-infer[serve]'")
pytest.importorskip("onnxruntime")


@pytest.fixture(scope="session")
def served_index(runtime_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``root/ix`` over ``root/videos/v0..v3.mp4`` (read-only: copy with ``support.served.copy_collection`` to modify)."""
    root = tmp_path_factory.mktemp("served")
    embed_into(make_videos(root / "videos", N_VIDEOS), root / "ix", runtime_bundle)
    return root / "ix"


@pytest.fixture()
def make_client(runtime_bundle: Path) -> Iterator:
    """``make_client(index, **create_app_kwargs)`` → a TestClient over a fresh Library (closed after)."""
    from fastapi.testclient import TestClient

    from jemc_infer.serve.app import create_app
    from jemc_infer.serve.library import Library

    opened = []

    def make(index: Path, roots: list[Path] | None = None, **kwargs):  # noqa: ANN202
        library = Library(index, runtime_bundle, roots=roots)
        opened.append(library)
        return TestClient(create_app(library, **kwargs), raise_server_exceptions=False)

    yield make
    for library in opened:
        library.close()
