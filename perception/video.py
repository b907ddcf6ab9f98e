"""Reads chosen frames of a video as BGR arrays: through PyAV, skipping the non-reference frames nobody needs, or
through OpenCV; the same frame numbers and the same pixels either way.

Frame numbers are OpenCV's (the published method's): the n-th frame ``cv2.VideoCapture`` returns is frame n.  The
PyAV reader ("pyav", the default) gets them without decoding: one demux pass lists every packet's presentation time,
and the rank of a presentation time among them is the frame's number (a decoder returns frames in presentation
order).  It then decodes with FFmpeg's ``skip_frame`` set per packet -- ``NONREF`` for a frame that is not wanted,
``DEFAULT`` for one that is -- so a non-reference frame (most B-frames) that no sample needs is never decoded; in
H.264 / HEVC, the packets of a closed group of pictures after its last wanted frame are not even sent (the next IDR
picture refers to nothing before it).  Only wanted frames are converted to colour, with the same swscale conversion
OpenCV uses (pixel-identical on the real videos, tested).  OpenCV cannot skip frames: it decodes every one (``grab``).

The PyAV reader applies only where it is sure to agree with OpenCV: an mp4/mov or Matroska/WebM file (one frame per
packet), a stream with an average frame rate (OpenCV's fps), a presentation time on every packet, all distinct, as
many packets as the container says it has frames, and frames in plain 8-bit 4:2:0 (yuv420p, limited range) without
a rotation.  Anything else -- PyAV missing, a container it cannot open, a decode error, a frame out of order
-- hands over to OpenCV, from the start or, mid-video, from the first frame not yet delivered, so a video is never
lost to the fast path; OpenCV then reports a corrupt or unsupported video as `VideoError`.

A partially decodable video -- truncated, or unreadable past some frame -- is told by comparing what its container
promises (`FramePromise`: the frame count of its index, or else its duration times its frame rate) with what is
there: the packets the index pass finds (before any decoding) and the frames that are decoded.  `SampledFrames.partial`
says why a video is partial (None when it is whole); what to do with such a video is the caller's choice
(perception/keyframes.py skips it by default, `PartialVideoError`).
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

DECODERS = ("pyav", "opencv")
# Frame layouts whose colour conversion is known to match OpenCV's (checked by the tests on real footage).
_PYAV_PIXEL_FORMATS = frozenset({"yuv420p"})
_PYAV_COLOR_RANGES = frozenset({0, 1})  # unspecified, limited (MPEG)
# Containers that store one frame per packet, so a packet's rank is its frame's number (MPEG-TS or raw streams may
# split a frame into field packets).
_PYAV_CONTAINERS = frozenset({"mov", "mp4", "matroska", "webm"})
# A frame count that is only an estimate (a duration rounds, an average frame rate averages) must be missed by more
# than the larger of this many frames and this fraction of it before a video counts as partial; an index's is exact.
_ESTIMATE_SLACK_FRAMES = 2
_ESTIMATE_SLACK_FRACTION = 0.05


class VideoError(ValueError):
    """A video that cannot be used: the message names the file and says what is wrong."""

    def __init__(self, video_path: str, problem: str) -> None:
        super().__init__(f"video {video_path}: {problem}")
        self.video_path = video_path
        self.problem = problem


class PartialVideoError(VideoError):
    """A video only part of which can be decoded (truncated or damaged): `problem` says how much is missing."""


@dataclass(frozen=True)
class FramePromise:
    """How many frames a video's container says it holds: `exact` where its index lists every frame (mp4/mov, or
    Matroska/WebM with a frame count), otherwise an estimate (duration x average frame rate, or OpenCV's count)."""

    frames: int = 0  # 0: the container says nothing, and nothing is checked
    exact: bool = False
    source: str = ""  # where the number comes from, as the messages put it: "its index lists 45"

    def falls_short(self, got: int) -> bool:
        """Whether `got` frames are fewer than promised: by any frame against an exact count, by more than
        max(_ESTIMATE_SLACK_FRAMES, _ESTIMATE_SLACK_FRACTION of it) against an estimate."""
        if self.frames <= 0:
            return False
        if self.exact:
            return got < self.frames
        return self.frames - got > max(_ESTIMATE_SLACK_FRAMES, _ESTIMATE_SLACK_FRACTION * self.frames)


def check_video_file(video_path: str) -> None:
    """VideoError unless `video_path` is an existing, non-empty file."""
    if not os.path.isfile(video_path):
        raise VideoError(video_path, "file does not exist")
    if os.path.getsize(video_path) == 0:
        raise VideoError(video_path, "file is empty")


def sample_grid(stride: float, sample_number: int) -> int:
    """Frame number of the `sample_number`-th sample, `stride` frames apart: round(k * stride), halves up."""
    return int(math.floor(sample_number * stride + 0.5))


class SampledFrames:
    """Iterates (frame number, BGR frame) over the samples of a video at `sample_fps`, then its last frame.

    `decoder` "pyav" reads through `_PyAVIndex` where it applies (see the module docstring), "opencv" always through
    OpenCV.  `fps` is the video's frame rate as OpenCV reports it; a video slower than `sample_fps` contributes
    every frame.  Raises VideoError for a file that is missing, empty, unopenable or without a frame rate.

    `partial` is why the video is only partly decodable, or None: known before reading where the index pass finds
    fewer frames in the file than its container promises (`promise`), and after the last sample where fewer frames
    could be decoded (`frames_decoded`).  The samples are then those of the decodable part.
    """

    def __init__(self, video_path: str, sample_fps: float, decoder: str = "pyav") -> None:
        if sample_fps <= 0:
            raise ValueError(f"sample_fps must be > 0, got {sample_fps}")
        if decoder not in DECODERS:
            raise ValueError(f"decoder must be one of {DECODERS}, got {decoder!r}")
        check_video_file(video_path)
        self.video_path = video_path
        self.handed_over: str | None = None  # why OpenCV took over from the PyAV reader mid-video, if it did
        self._capture: cv2.VideoCapture | None = None  # opened to read the frame rate, not yet read from
        # The index pass runs for the OpenCV reader too: it is what tells a truncated file (no decoding, ~ms).
        probe = _PyAVIndex.probe(video_path, keep_index=decoder == "pyav")
        self.index = probe.index
        self.promise = probe.promise
        self.partial: str | None = probe.damage
        self.frames_decoded: int | None = None  # frames the reading got through, once every sample is read
        if self.index is not None:
            self.fps = self.index.fps
            self.reported_count = self.index.num_frames
        else:
            self._capture = _open_capture(video_path)  # kept for the reading (opening probes the streams again)
            self.fps = float(self._capture.get(cv2.CAP_PROP_FPS))
            self.reported_count = int(self._capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
            if not math.isfinite(self.fps) or self.fps <= 0:
                self._capture.release()
                raise VideoError(video_path, f"reports no usable frame rate (fps={self.fps})")
            if not self.promise.frames and self.reported_count > 0:  # PyAV could not tell: OpenCV's count, an estimate
                self.promise = FramePromise(self.reported_count, exact=False, source=f"OpenCV reports {self.reported_count}")
        self.stride = max(1.0, self.fps / sample_fps)

    def close(self) -> None:
        """Releases what the reader holds open for reading (when it is dropped unread, e.g. a partial video skipped)."""
        if self._capture is not None:
            self._capture.release()
            self._capture = None
        if self.index is not None and self.index.container is not None:
            self.index.container.close()
            self.index.container = None

    def expected_num_samples(self) -> int:
        """How many samples the video yields if its frame count is right (exact on the PyAV path; 0: unknown)."""
        count = self.reported_count
        if count <= 0:
            return 0
        # Samples k = 0 .. on_grid-1 sit at round(k * stride) < count (closed form, then fixed for float rounding:
        # a container may report an absurd count, so no loop over it).
        on_grid = max(1, math.ceil((count - 0.5) / self.stride))
        while on_grid > 1 and sample_grid(self.stride, on_grid - 1) >= count:
            on_grid -= 1
        while sample_grid(self.stride, on_grid) < count:
            on_grid += 1
        return on_grid + (sample_grid(self.stride, on_grid - 1) != count - 1)

    def __iter__(self) -> Iterator[tuple[int, np.ndarray]]:
        if self.index is None:
            yield from self._opencv_samples(first_sample=0)
            self._judge_completeness()
            return
        count = self.index.num_frames
        on_grid = (sample_grid(self.stride, k) for k in range(self.expected_num_samples()))
        wanted = sorted({frame for frame in on_grid if frame < count} | {count - 1})
        delivered = 0
        try:
            for frame_number, bgr in self.index.decode(self.video_path, wanted):
                delivered += 1
                yield frame_number, bgr
            self.frames_decoded = count  # the last frame came out, so every frame up to it could be decoded
        except _PyAVGaveUp as reason:
            # OpenCV takes over at the first sample not yet delivered (the last frame is always the last of `wanted`).
            self.handed_over = str(reason)
            yield from self._opencv_samples(first_sample=delivered)
        self._judge_completeness()

    def _judge_completeness(self) -> None:
        """Sets `partial` from the frames decoded against the container's promise (after the last sample)."""
        decoded = self.frames_decoded
        if decoded is None:
            return
        if self.promise.falls_short(decoded):
            self.partial = (f"partially decodable: only {decoded} frames could be decoded where "
                            f"{self.promise.source} (truncated or damaged file)")
        else:
            self.partial = None  # everything promised came out, whatever the index pass feared

    def _opencv_samples(self, first_sample: int) -> Iterator[tuple[int, np.ndarray]]:
        """The samples from `first_sample` on, decoding every frame with OpenCV and converting only the samples.

        The last frame is found without converting every frame: frames near the container's reported end are
        retrieved; if the count was wrong, a second pass fetches it.
        """
        capture, self._capture = self._capture or _open_capture(self.video_path), None
        stride = self.stride
        count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        tail_start = count - 1 - math.ceil(stride) if count > 0 else 0
        sample_number = first_sample
        next_sample = sample_grid(stride, sample_number)
        last_yielded = sample_grid(stride, first_sample - 1) if first_sample > 0 else -1  # delivered before the hand-over
        tail: tuple[int, np.ndarray] | None = None  # most recent retrieved non-sample near the end
        frame_number = 0
        try:
            while capture.grab():
                if frame_number == next_sample:
                    ok, frame = capture.retrieve()
                    if not ok:
                        break  # decodes no further: treat as the end of the video
                    yield frame_number, frame
                    last_yielded = frame_number
                    sample_number += 1
                    next_sample = sample_grid(stride, sample_number)
                elif frame_number >= tail_start:
                    ok, frame = capture.retrieve()
                    if not ok:
                        break
                    tail = (frame_number, frame)
                frame_number += 1
        finally:
            capture.release()
        self.frames_decoded = frame_number  # OpenCV decodes every frame: it got this far
        last_frame = frame_number - 1
        if last_frame > last_yielded:
            if tail is not None and tail[0] == last_frame:
                yield tail
            else:  # the container under-reported its length: fetch the real last frame
                yield last_frame, read_frames_bgr(self.video_path, [last_frame], decoder="opencv")[last_frame]


def read_frames_bgr(video_path: str, frame_numbers: Iterable[int], decoder: str = "pyav") -> dict[int, np.ndarray]:
    """Decodes just `frame_numbers` and returns them as BGR arrays; VideoError if any cannot be decoded."""
    wanted = sorted(set(frame_numbers))
    if not wanted:
        return {}
    found: dict[int, np.ndarray] = {}
    index = _PyAVIndex.build(video_path) if decoder == "pyav" else None
    if index is not None and wanted[-1] < index.num_frames:
        try:
            found = dict(index.decode(video_path, wanted))
        except _PyAVGaveUp:
            found = {}
    if not found:
        found = _opencv_frames(video_path, wanted)
    lost = [n for n in wanted if n not in found]
    if lost:
        raise VideoError(video_path, f"frames {lost} could not be decoded on a second read")
    return found


def read_frames(video_path: str, frame_numbers: Iterable[int], decoder: str = "pyav") -> dict[int, np.ndarray]:
    """Decodes just `frame_numbers` and returns them as RGB uint8 arrays."""
    return {n: cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB) for n, bgr in read_frames_bgr(video_path, frame_numbers, decoder).items()}


def _open_capture(video_path: str) -> cv2.VideoCapture:
    capture = cv2.VideoCapture(video_path)
    if not capture.isOpened():
        raise VideoError(video_path, "cannot be opened as a video (corrupt file or unsupported codec)")
    return capture


def _opencv_frames(video_path: str, wanted: list[int]) -> dict[int, np.ndarray]:
    """`wanted` (ascending) frames through OpenCV, grabbing the others."""
    wanted_set = set(wanted)
    found: dict[int, np.ndarray] = {}
    capture = _open_capture(video_path)
    try:
        frame_number = 0
        while frame_number <= wanted[-1] and capture.grab():
            if frame_number in wanted_set:
                ok, frame = capture.retrieve()
                if ok:
                    found[frame_number] = frame
            frame_number += 1
    finally:
        capture.release()
    return found


class _PyAVGaveUp(Exception):
    """The PyAV reader met something it cannot be sure to read as OpenCV would; OpenCV takes over."""


@dataclass
class _PyAVIndex:
    """A video's frame numbering without decoding: the presentation time of each frame, in presentation order, and
    its packets in decoding order with where an IDR picture starts a new, closed group of pictures."""

    fps: float  # the stream's average frame rate: what OpenCV reports as CAP_PROP_FPS
    frame_pts: list[int]  # presentation time of frame n at position n
    packet_pts: list[int] = field(default_factory=list)  # presentation time of each packet, in decoding order
    packet_is_idr: list[bool] = field(default_factory=list)  # nothing after it refers to anything before it
    frames_decoded: int = 0  # frames the decoder returned in the last `decode` (the others were skipped)
    container: Any = field(default=None, repr=False, compare=False)  # the indexing pass's, for the first `decode`
    first_dts: int | None = None  # decoding time of the first packet: where `decode` rewinds that container to

    @property
    def num_frames(self) -> int:
        return len(self.frame_pts)

    @classmethod
    def build(cls, video_path: str) -> _PyAVIndex | None:
        """The index of `video_path`, or None where the PyAV reader does not apply (see the module docstring)."""
        return cls.probe(video_path).index

    @classmethod
    def probe(cls, video_path: str, keep_index: bool = True) -> _Probe:
        """What one demux pass (no decoding) tells of `video_path`: its index where the PyAV reader applies (and
        `keep_index`), the frames its container promises, and whether fewer are in the file (see `_Probe`)."""
        try:
            import av
        except ImportError:
            return _Probe()
        try:
            container = av.open(video_path)
        except (av.FFmpegError, OSError, ValueError):
            return _Probe()
        index = None
        try:
            if not container.streams.video:
                return _Probe()
            stream = container.streams.video[0]
            one_frame_per_packet = bool(set(container.format.name.split(",")) & _PYAV_CONTAINERS)
            promise = _frame_promise(av, container, stream, one_frame_per_packet)
            if not one_frame_per_packet:  # packets are not frames: only the decoded frames are checked
                return _Probe(promise=promise)
            rate = stream.average_rate
            fps = float(rate) if rate else 0.0
            reported_frames = stream.frames
            idr_test = _idr_test(stream.codec_context.name, stream.codec_context.extradata)
            packet_pts, packet_is_idr, frame_pts = [], [], []
            first_dts = None
            discarded = 0
            cut_short: int | None = None  # the first packet the demuxer flagged as corrupt (read short, at a truncation)
            read_error: str | None = None
            try:
                for packet in container.demux(stream):
                    if not packet.size:
                        continue
                    if packet.is_corrupt and cut_short is None:
                        cut_short = len(packet_pts)
                    first_dts = packet.dts if first_dts is None else first_dts
                    packet_pts.append(packet.pts)
                    packet_is_idr.append(bool(packet.is_keyframe and idr_test is not None and idr_test(bytes(packet))))
                    if packet.is_discard:  # frames of discarded packets (edit lists) never come out
                        discarded += 1
                    else:
                        frame_pts.append(packet.pts)
            except (av.FFmpegError, OSError, ValueError) as error:
                read_error = f"{type(error).__name__}: {error}"
            damage = _packet_damage(promise, len(packet_pts), cut_short, read_error)
            if promise.exact and discarded:  # frames of discarded packets never come out of the decoder
                promise = dataclasses.replace(promise, frames=promise.frames - discarded)
            if (read_error is not None or fps <= 0 or not math.isfinite(fps) or not frame_pts or None in frame_pts
                    or len(set(frame_pts)) != len(frame_pts)
                    or (reported_frames and reported_frames != len(frame_pts))):  # the last: not one frame per packet
                return _Probe(promise=promise, damage=damage)
            if not keep_index:
                return _Probe(promise=promise, damage=damage)
            # The container stays open for `decode` (opening probes the streams: ~10 ms for a 720p clip).
            index = cls(fps=fps, frame_pts=sorted(frame_pts), packet_pts=packet_pts, packet_is_idr=packet_is_idr,
                        container=container, first_dts=first_dts)
            return _Probe(index=index, promise=promise, damage=damage)
        except (av.FFmpegError, OSError, ValueError):
            return _Probe()
        finally:
            if index is None:
                container.close()

    def packets_to_send(self, wanted: set[int]) -> list[bool]:
        """Per packet (decoding order): whether the decoder must see it to deliver the `wanted` frame numbers.

        Within a closed group of pictures (an IDR picture up to the next), every packet after the last one whose frame
        is wanted can be left out: the next IDR picture refers to nothing before it.
        """
        number_of_pts = {pts: number for number, pts in enumerate(self.frame_pts)}
        send = [True] * len(self.packet_pts)
        needed_from_here = False  # a later packet of the same group of pictures is wanted
        for position in range(len(self.packet_pts) - 1, -1, -1):
            needed_from_here = needed_from_here or number_of_pts.get(self.packet_pts[position]) in wanted
            send[position] = needed_from_here
            if self.packet_is_idr[position]:
                needed_from_here = False  # the group before this IDR picture needs nothing from this one
        return send

    def decode(self, video_path: str, wanted: list[int]) -> Iterator[tuple[int, np.ndarray]]:
        """(frame number, BGR) for each of `wanted` (ascending frame numbers), in order; raises _PyAVGaveUp.

        A packet is left out where no wanted frame needs it (`packets_to_send`); the others are sent -- reference
        frames are needed to decode the rest -- but one whose frame is not wanted with ``skip_frame=NONREF``: FFmpeg
        drops it unless other frames refer to it.
        """
        import av

        number_of_pts = {pts: number for number, pts in enumerate(self.frame_pts)}
        wanted_set = set(wanted)
        send = self.packets_to_send(wanted_set)
        pending = iter(wanted)
        next_wanted = next(pending, None)
        self.frames_decoded = 0
        position = 0  # of the packet in decoding order
        try:
            with self._rewound_container(av) or av.open(video_path) as container:
                stream = container.streams.video[0]
                stream.thread_type = "AUTO"  # frame and slice threads, as OpenCV's FFmpeg backend uses
                codec = stream.codec_context
                packets = container.demux(stream)
                while next_wanted is not None:
                    packet = next(packets, None)
                    if packet is None:
                        raise _PyAVGaveUp(f"frame {next_wanted} never came out of the decoder")
                    if packet.size:
                        if position >= len(send) or packet.pts != self.packet_pts[position]:
                            raise _PyAVGaveUp(f"packet {position} is not the one indexed")
                        position += 1
                        if not send[position - 1]:
                            continue
                        codec.skip_frame = "DEFAULT" if number_of_pts.get(packet.pts) in wanted_set else "NONREF"
                        frames = codec.decode(packet)
                    else:  # the demuxer's final empty packet: drain the decoder
                        codec.skip_frame = "DEFAULT"
                        frames = codec.decode(None)
                    self.frames_decoded += len(frames)
                    for frame in frames:
                        number = number_of_pts.get(frame.pts)
                        if number is None or number > next_wanted:  # a wanted frame was skipped or came out of order
                            raise _PyAVGaveUp(f"frame {next_wanted} not delivered in order")
                        if number < next_wanted:
                            continue  # a reference frame no sample needs
                        if frame.format.name not in _PYAV_PIXEL_FORMATS or frame.color_range not in _PYAV_COLOR_RANGES or frame.rotation:
                            raise _PyAVGaveUp(f"frame {number}: {frame.format.name}, range {frame.color_range}, rotation {frame.rotation}")
                        # PyAV 18.1.1 hands back a strided view (rows padded to its line size); OpenCV and the
                        # callers want one C-contiguous image, which ascontiguousarray copies only then.
                        yield number, np.ascontiguousarray(frame.to_ndarray(format="bgr24", interpolation="BICUBIC"))
                        next_wanted = next(pending, None)
                        if next_wanted is None:
                            break
        except av.FFmpegError as error:
            raise _PyAVGaveUp(str(error)) from error


    def _rewound_container(self, av: Any) -> Any:
        """The indexing pass's container, rewound to the first packet (once; None after that, or if it cannot seek).
        Should the seek land elsewhere, `decode`'s check of every packet against the index hands over to OpenCV."""
        container, self.container = self.container, None
        if container is None:
            return None
        try:
            container.seek(self.first_dts or 0, backward=True, any_frame=False, stream=container.streams.video[0])
        except av.FFmpegError:
            container.close()
            return None
        return container


@dataclass
class _Probe:
    """The index pass's findings: `index` (None where the PyAV reader does not apply), the container's `promise`,
    and `damage`: why fewer frames are in the file than promised, or None."""

    index: _PyAVIndex | None = None
    promise: FramePromise = field(default_factory=FramePromise)
    damage: str | None = None


def _frame_promise(av: Any, container: Any, stream: Any, one_frame_per_packet: bool) -> FramePromise:
    """The frames `stream` promises: its index's count where the container has one frame per packet (exact); else the
    count it reports, or its duration times its average frame rate (estimates); FramePromise() where none is known."""
    if stream.frames > 0:
        if one_frame_per_packet:
            return FramePromise(stream.frames, exact=True, source=f"its index lists {stream.frames}")
        return FramePromise(stream.frames, exact=False, source=f"its container reports {stream.frames}")
    rate = float(stream.average_rate) if stream.average_rate else 0.0
    if stream.duration and stream.time_base:
        seconds = float(stream.duration * stream.time_base)
    elif container.duration and len(container.streams) == 1:  # the file's duration is the video's only when alone
        seconds = container.duration / av.time_base
    else:
        return FramePromise()
    if rate <= 0 or not math.isfinite(rate) or seconds <= 0:
        return FramePromise()
    frames = int(round(seconds * rate))
    return FramePromise(frames, exact=False, source=f"its duration ({seconds:.2f} s at {rate:.3g} fps) implies {frames}")


def _packet_damage(promise: FramePromise, frames_in_file: int, cut_short: int | None, read_error: str | None) -> str | None:
    """Why the frames (packets) the index pass found fall short of `promise`, or None if they do not."""
    if not promise.falls_short(frames_in_file):
        return None
    how = (f"; packet {cut_short} is cut short" if cut_short is not None else "") + (f"; reading stopped: {read_error}" if read_error else "")
    return f"partial file: {promise.source} frames, only {frames_in_file} are in the file{how} (truncated or damaged)"


# NAL unit types of IDR pictures, after which nothing refers to an earlier picture.  (HEVC's CRA and BLA pictures
# and H.264's recovery points are not among them: pictures after them may refer to pictures before.)
_H264_IDR = 5
_HEVC_IDR = (19, 20)  # IDR_W_RADL, IDR_N_LP


def _idr_test(codec_name: str, extradata: bytes | None) -> Callable[[bytes], bool] | None:
    """A test of whether a packet is an IDR picture, for H.264 / HEVC with length-prefixed NAL units (mp4, mkv; the
    lengths' size from the avcC / hvcC header); None elsewhere (no group of pictures is then left out)."""
    if not extradata or extradata[0] != 1:  # not an avcC / hvcC record (Annex B start codes, or another codec)
        return None
    if codec_name == "h264" and len(extradata) > 4:
        length_size, nal_type = (extradata[4] & 3) + 1, lambda first_byte: first_byte & 0x1F
        idr_types: tuple[int, ...] = (_H264_IDR,)
    elif codec_name == "hevc" and len(extradata) > 21:
        length_size, nal_type = (extradata[21] & 3) + 1, lambda first_byte: (first_byte >> 1) & 0x3F
        idr_types = _HEVC_IDR
    else:
        return None

    def is_idr(data: bytes) -> bool:
        position = 0
        while position + length_size < len(data):
            size = int.from_bytes(data[position:position + length_size], "big")
            position += length_size
            if size <= 0 or position + size > len(data):
                return False  # malformed: never trusted as a group boundary
            if nal_type(data[position]) in idr_types:
                return True
            position += size
        return False

    return is_idr
