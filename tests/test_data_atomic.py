"""atomic_path / write_text_atomically: the target only ever holds a complete file, failures leave nothing behind."""

from __future__ import annotations

from pathlib import Path

import pytest

from embodied_data.atomic import atomic_path, write_text_atomically


def test_the_target_appears_only_when_the_block_completes(tmp_path: Path) -> None:
    target = tmp_path / "table.parquet"
    with atomic_path(target) as temp:
        assert temp.parent == tmp_path and temp != target
        temp.write_bytes(b"first half ")
        assert not target.exists(), "a half-written file must not be visible under the final name"
        with temp.open("ab") as f:
            f.write(b"second half")
        assert not target.exists()
    assert target.read_bytes() == b"first half second half"
    assert [p.name for p in tmp_path.iterdir()] == ["table.parquet"], "the temp file is gone"


def test_an_existing_target_stays_until_the_new_one_replaces_it(tmp_path: Path) -> None:
    target = tmp_path / "state.json"
    target.write_text("old")
    with atomic_path(target) as temp:
        temp.write_text("new")
        assert target.read_text() == "old"
    assert target.read_text() == "new"


@pytest.mark.parametrize("error", [ValueError("bad frame"), KeyboardInterrupt()])
def test_an_exception_leaves_neither_target_nor_temp(tmp_path: Path, error: BaseException) -> None:
    target = tmp_path / "video.mp4"
    with pytest.raises(type(error)):
        with atomic_path(target) as temp:
            temp.write_bytes(b"half a video")
            raise error
    assert list(tmp_path.iterdir()) == []


def test_an_exception_keeps_the_old_target(tmp_path: Path) -> None:
    target = tmp_path / "manifest.parquet"
    target.write_bytes(b"complete old table")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as temp:
            temp.write_bytes(b"half")
            raise RuntimeError("killed")
    assert target.read_bytes() == b"complete old table"
    assert [p.name for p in tmp_path.iterdir()] == ["manifest.parquet"]


def test_an_exception_before_the_temp_is_created_is_passed_on(tmp_path: Path) -> None:
    with pytest.raises(OSError, match="cannot open"):
        with atomic_path(tmp_path / "x.bin"):
            raise OSError("cannot open the writer")
    assert list(tmp_path.iterdir()) == []


def test_the_temp_keeps_the_final_suffix_for_writers_that_read_it(tmp_path: Path) -> None:
    cv2 = pytest.importorskip("cv2")
    import numpy as np

    target = tmp_path / "clip.mp4"
    with atomic_path(target) as temp:
        assert temp.suffix == ".mp4" and temp.name.endswith("clip.mp4")
        # OpenCV chooses the container from the extension: with a wrong one it would not open at all.
        writer = cv2.VideoWriter(str(temp), cv2.VideoWriter_fourcc(*"mp4v"), 4.0, (32, 32))
        assert writer.isOpened()
        for value in (0, 128, 255):
            writer.write(np.full((32, 32, 3), value, np.uint8))
        writer.release()
    capture = cv2.VideoCapture(str(target))
    frames = 0
    while capture.read()[0]:
        frames += 1
    capture.release()
    assert frames == 3


def test_write_text_atomically(tmp_path: Path) -> None:
    target = tmp_path / "driver_state.json"
    assert write_text_atomically(target, '{"step": 3, "note": "é"}') == target
    assert target.read_text(encoding="utf-8") == '{"step": 3, "note": "é"}'
    assert [p.name for p in tmp_path.iterdir()] == ["driver_state.json"]
