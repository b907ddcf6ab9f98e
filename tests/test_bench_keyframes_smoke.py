"""bench/keyframes.py runs end to end on the shortest real video and reports what its note relies on."""

from __future__ import annotations

from bench.keyframes import bench_video, render
from perception.config import KeyframeConfig


def test_keyframe_bench_runs_and_checks_every_ransac_call(realdata):
    video = realdata / "urbanvideo_bench" / "videos" / "AerialVLN_1_30BUDKLTXMTIKYKFIPPOXCMISXQE5S.mp4"
    report = bench_video(video, KeyframeConfig(), repeats=1)
    assert report.final_agrees and report.detection_agrees and report.sampling_agrees
    assert report.ransac_calls > 0 and report.ransac_numpy_same == report.ransac_calls
    assert set(report.seconds) >= {"ours", "ours_seq", "ours_cv", "ours_cvdec", "read", "floor", "decode", "grab", "published"}
    text = render([report], repeats=1)
    assert "floor/decode" in text and "perception/ransac.py" in text
