"""The sample reader: PyAV (non-reference frames skipped) and OpenCV give the same frame numbers and the same pixels,
and the PyAV reader hands over to OpenCV, from the start or mid-video, wherever it cannot be sure."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from embodied_data.synthetic.video import read_video
from perception import video as video_module
from perception.video import SampledFrames, VideoError, read_frames_bgr

av = pytest.importorskip("av", reason="PyAV is a core dependency; without it only the OpenCV reader exists")


def opencv_frames(path: Path) -> list[np.ndarray]:
    """Every frame as cv2.VideoCapture.read() returns it: the reference."""
    return read_video(path)


def encode_with_pyav(path: Path, codec: str, num_frames: int, container_format: str | None = None,
                     rotation: int | None = None) -> Path:
    """Random 96x64 frames encoded at 5 fps with PyAV (which can write what cv2.VideoWriter cannot: rotation, TS)."""
    with av.open(str(path), "w", format=container_format) as container:
        stream = container.add_stream(codec, rate=5)
        stream.width, stream.height, stream.pix_fmt = 96, 64, "yuv420p"
        if rotation is not None:
            stream.set_display_rotation(rotation)
        rng = np.random.default_rng(num_frames)
        for _ in range(num_frames):
            frame = av.VideoFrame.from_ndarray(rng.integers(0, 255, (64, 96, 3), dtype=np.uint8), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def assert_same_samples(path: Path, sample_fps: float = 1.0) -> tuple[SampledFrames, list[tuple[int, np.ndarray]]]:
    """Both readers give the same samples; each sample equals the frame cv2.VideoCapture.read() returns there."""
    fast_reader, slow_reader = SampledFrames(str(path), sample_fps, "pyav"), SampledFrames(str(path), sample_fps, "opencv")
    fast, slow = list(fast_reader), list(slow_reader)
    assert fast_reader.fps == slow_reader.fps
    assert [n for n, _ in fast] == [n for n, _ in slow]
    every = opencv_frames(path)
    for number, image in fast:
        assert image.dtype == np.uint8 and image.flags.c_contiguous
        assert np.array_equal(image, every[number]), f"{path.name}: frame {number} differs from OpenCV's"
    assert fast[-1][0] == len(every) - 1, "the last frame is always a sample"
    return fast_reader, fast


def test_real_videos_read_through_pyav_equal_opencv_and_skip_frames(real_videos, monkeypatch):
    decoded_counts = []
    original_decode = video_module._PyAVIndex.decode

    def counting_decode(self, path, wanted):
        yield from original_decode(self, path, wanted)
        decoded_counts.append(self.frames_decoded)

    monkeypatch.setattr(video_module._PyAVIndex, "decode", counting_decode)
    for path in real_videos:
        reader, samples = assert_same_samples(path)
        assert reader.index is not None, f"{path.name}: the PyAV reader must apply to the real videos"
        assert reader.handed_over is None, reader.handed_over
        assert reader.expected_num_samples() == len(samples)
        # A non-reference frame no sample needs is never decoded (all three real videos have B-frames).
        assert len(samples) <= decoded_counts[-1] < reader.index.num_frames, path.name


def test_read_frames_equal_opencv_on_real_video(real_videos):
    path = real_videos[0]
    every = opencv_frames(path)
    wanted = [3, 4, 17, len(every) - 1]
    for decoder in ("pyav", "opencv"):
        frames = read_frames_bgr(str(path), wanted, decoder)
        assert sorted(frames) == wanted
        for number in wanted:
            assert np.array_equal(frames[number], every[number]), (decoder, number)
    with pytest.raises(VideoError, match="could not be decoded"):
        read_frames_bgr(str(path), [len(every) + 5])


def write_mp4(path: Path, num_frames: int, fps: float, size: tuple[int, int] = (96, 64)) -> Path:
    rng = np.random.default_rng(num_frames)
    base = rng.integers(0, 255, (size[1] * 2, size[0] * 2, 3), dtype=np.uint8)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
    assert writer.isOpened()
    for i in range(num_frames):  # a moving crop of a random texture: every frame different
        writer.write(np.ascontiguousarray(base[i % size[1]: i % size[1] + size[1], i: i + size[0]]))
    writer.release()
    return path


@pytest.mark.parametrize(("num_frames", "fps", "sample_fps"), [(37, 6.0, 1.0), (1, 25.0, 1.0), (5, 0.5, 1.0), (40, 30.0, 2.0), (23, 7.0, 3.0)])
def test_synthetic_mp4_read_through_pyav_equals_opencv(tmp_path, num_frames, fps, sample_fps):
    path = write_mp4(tmp_path / "clip.mp4", num_frames, fps)
    reader, samples = assert_same_samples(path, sample_fps)
    assert reader.index is not None and reader.handed_over is None, reader.handed_over
    if fps < sample_fps:
        assert [n for n, _ in samples] == list(range(num_frames)), "slower than the sample rate: every frame"


def test_pixel_formats_pyav_cannot_vouch_for_are_read_by_opencv(tmp_path):
    # Motion JPEG decodes to full-range 4:2:0 (yuvj420p): OpenCV's conversion is not checked for it, so OpenCV reads.
    path = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 4.0, (64, 48))
    rng = np.random.default_rng(0)
    for _ in range(9):
        writer.write(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8))
    writer.release()
    with av.open(str(path)) as container:
        assert next(container.decode(video=0)).format.name not in video_module._PYAV_PIXEL_FORMATS
    assert_same_samples(path)


def test_a_pyav_failure_mid_video_hands_over_to_opencv(real_videos, monkeypatch):
    path = real_videos[0]
    expected = list(SampledFrames(str(path), 1.0, "opencv"))
    original_decode = video_module._PyAVIndex.decode

    def failing_decode(self, video_path, wanted):
        for delivered, item in enumerate(original_decode(self, video_path, wanted)):
            if delivered == 5:
                raise video_module._PyAVGaveUp("simulated decode error")
            yield item

    monkeypatch.setattr(video_module._PyAVIndex, "decode", failing_decode)
    reader = SampledFrames(str(path), 1.0, "pyav")
    handed_over = list(reader)
    assert reader.handed_over == "simulated decode error"
    assert [n for n, _ in handed_over] == [n for n, _ in expected]
    assert all(np.array_equal(a, b) for (_, a), (_, b) in zip(handed_over, expected))


def test_files_pyav_cannot_index_fall_back_and_bad_files_still_name_the_file(tmp_path):
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 8)
    assert video_module._PyAVIndex.build(str(garbage)) is None
    with pytest.raises(VideoError, match="garbage.mp4"):
        SampledFrames(str(garbage), 1.0, "pyav")
    with pytest.raises(ValueError, match="decoder"):
        SampledFrames(str(garbage), 1.0, "ffmpeg")


def test_packets_after_the_last_wanted_one_of_a_closed_group_are_left_out():
    # Decoding order: IDR 0, P 3, B 1, B 2 | IDR 4, P 7, B 5, B 6 | CRA-like key 8 (not IDR), P 9.
    index = video_module._PyAVIndex(
        fps=1.0, frame_pts=list(range(10)), packet_pts=[0, 3, 1, 2, 4, 7, 5, 6, 8, 9],
        packet_is_idr=[True, False, False, False, True, False, False, False, False, False],
    )
    assert index.packets_to_send({1}) == [True, True, True, False, False, False, False, False, False, False]
    # Frame 6 needs its group up to its own packet; nothing of the first group; the last group is not after an IDR.
    assert index.packets_to_send({6}) == [False, False, False, False, True, True, True, True, False, False]
    # Frame 9 sits after a non-IDR key picture, which may refer back: the whole second group is kept.
    assert index.packets_to_send({9}) == [False, False, False, False, True, True, True, True, True, True]


def test_idr_pictures_are_told_from_other_key_pictures():
    length = (1).to_bytes(4, "big")
    h264 = video_module._idr_test("h264", bytes([1, 0x64, 0, 0x1F, 0xFF]))
    assert h264(length + bytes([0x65])) and not h264(length + bytes([0x41]))  # IDR slice vs non-IDR slice
    assert h264(length + bytes([0x06]) + length + bytes([0x65]))  # SEI first, then the IDR slice
    assert not h264(bytes([0, 0, 0, 9, 0x65]))  # a length running past the packet is never trusted
    hevc = video_module._idr_test("hevc", bytes([1] + [0] * 20 + [0x0F]))
    assert hevc(length + bytes([19 << 1])) and hevc(length + bytes([20 << 1]))  # IDR_W_RADL, IDR_N_LP
    assert not hevc(length + bytes([21 << 1]))  # CRA: its leading pictures may refer to earlier ones
    assert video_module._idr_test("h264", b"\x00\x00\x00\x01\x67") is None  # Annex B: no group is left out
    assert video_module._idr_test("mpeg4", bytes([1, 2, 3, 4, 5])) is None


def test_open_eqa_groups_of_pictures_are_cut_short(realdata):
    path = realdata / "openeqa" / "open-eqa-hm3d-demo.mp4"
    reader = SampledFrames(str(path), 1.0, "pyav")
    wanted = {n for n, _ in reader}
    assert sum(reader.index.packet_is_idr) > 1
    send = reader.index.packets_to_send(wanted)
    assert 0 < send.count(False) < len(send)  # frames equal OpenCV's all the same: the real-video test above


def test_rotated_videos_are_read_upright_as_opencv_reads_them(tmp_path):
    # A phone-style display rotation: OpenCV applies it; the PyAV reader does not, so it hands over to OpenCV.
    path = encode_with_pyav(tmp_path / "rotated.mp4", "mpeg4", 12, rotation=90)
    _, samples = assert_same_samples(path)
    assert samples[0][1].shape == (96, 64, 3), "upright, as OpenCV returns it"


def test_containers_without_one_frame_per_packet_are_read_by_opencv(tmp_path):
    # MPEG-TS may carry a frame as two field packets: packet ranks are not frame numbers there.
    path = encode_with_pyav(tmp_path / "clip.ts", "mpeg2video", 11, container_format="mpegts")
    assert video_module._PyAVIndex.build(str(path)) is None
    reader, samples = assert_same_samples(path)
    assert reader.index is None and len(samples) >= 2
