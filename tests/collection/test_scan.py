"""The one folder scan (embed and features): recursive, extension filter, and problems reported instead of fatal."""

from __future__ import annotations

import os
from pathlib import Path

from jemc_infer.collection import scan


def test_scan_finds_videos_and_reports_loops_broken_links_and_missing_inputs(tmp_path: Path) -> None:
    root = tmp_path / "videos"
    (root / "a" / "b").mkdir(parents=True)
    for rel in ("one.mp4", "a/two.MKV", "a/b/three.webm", "a/notes.txt", "a/b/cover.jpg"):
        (root / rel).write_bytes(b"x")
    os.symlink(root, root / "a" / "b" / "loop")  # back to the top: must not recurse forever
    os.symlink(root / "gone.mp4", root / "a" / "dangling.mp4")
    os.symlink(root / "one.mp4", root / "a" / "alias.mp4")  # a link to a video is a video
    found = scan([root, tmp_path / "nowhere", root / "one.mp4"])
    files, problems = found.files, found.problems
    assert [p.relative_to(root).as_posix() for p in files] == ["a/alias.mp4", "a/b/three.webm", "a/two.MKV", "one.mp4"]
    assert all(p.is_absolute() for p in files)
    assert any("loop" in p and "symlink loop" in p for p in problems), problems
    assert any("dangling.mp4" in p and "broken symlink" in p for p in problems), problems
    assert any("nowhere" in p and "no such file or folder" in p for p in problems), problems
    assert len(problems) == 3
    only_webm = scan([root], extensions=["webm"]).files
    assert [p.name for p in only_webm] == ["three.webm"]


def test_an_unreadable_folder_is_reported_and_the_rest_scanned(tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    root = tmp_path / "videos"
    (root / "locked").mkdir(parents=True)
    (root / "locked" / "hidden.mp4").write_bytes(b"x")
    (root / "ok.mp4").write_bytes(b"x")
    real = os.scandir

    def scandir(path):  # noqa: ANN001, ANN202 - tests run as root here, so chmod 000 would not stop a read
        if Path(path).name == "locked":
            raise PermissionError(13, "Permission denied", str(path))
        return real(path)

    monkeypatch.setattr(os, "scandir", scandir)
    found = scan([root])
    assert [p.name for p in found.files] == ["ok.mp4"]
    assert found.problems == [f"{root / 'locked'}: Permission denied"]
