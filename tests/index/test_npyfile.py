"""``.npy`` files written in whole aligned chunks: what np.load reads back, and what the OS is asked to write."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest

from jemc_infer.index import npyfile
from jemc_infer.index.npyfile import npy_writer


class RecordingFile(io.FileIO):
    """A raw file that records (offset, length) of every write the buffered layer passes down."""

    writes: list[tuple[int, int]] = []

    def write(self, data) -> int:  # type: ignore[override]
        RecordingFile.writes.append((self.tell(), memoryview(data).nbytes))
        return super().write(data)


@pytest.fixture
def recorded(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int]]:
    RecordingFile.writes = []
    monkeypatch.setattr(npyfile, "CHUNK", 1 << 12)
    monkeypatch.setattr(npyfile, "open", lambda path, mode: io.BufferedWriter(RecordingFile(path, mode)), raising=False)
    return RecordingFile.writes


@pytest.mark.parametrize(("shape", "dtype", "block"), [((1000, 37), np.int8, 100), ((333, 5), np.float32, 7),
                                                       ((64, 2048), np.float16, 64), ((0, 8), np.int8, 1)])
def test_rows_appended_in_blocks_load_back_exactly(tmp_path: Path, recorded: list, shape: tuple, dtype: type, block: int) -> None:
    want = (np.arange(np.prod(shape)) % 251 - 125).astype(dtype).reshape(shape)
    with npy_writer(tmp_path / "a.npy", shape, dtype) as out:
        for at in range(0, shape[0], block):
            out.write(want[at : at + block])
    got = np.load(tmp_path / "a.npy", mmap_mode="r")
    assert got.dtype == np.dtype(dtype) and got.shape == shape
    np.testing.assert_array_equal(got, want)
    size = (tmp_path / "a.npy").stat().st_size
    assert sum(n for _, n in recorded) == size
    # every write but the last: whole chunks at chunk-aligned offsets (the page cache's large folios)
    for offset, n in recorded[:-1]:
        assert offset % npyfile.CHUNK == 0 and n % npyfile.CHUNK == 0 and n > 0
    if size >= 2 * npyfile.CHUNK:
        assert len(recorded) >= 2


def test_more_or_fewer_values_than_the_shape_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="more bytes"), npy_writer(tmp_path / "long.npy", (2, 3), np.int8) as out:
        out.write(np.zeros((3, 3), np.int8))
    with pytest.raises(ValueError, match="short"), npy_writer(tmp_path / "short.npy", (2, 3), np.int8) as out:
        out.write(np.zeros((1, 3), np.int8))
