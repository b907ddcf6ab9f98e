"""Structured config of the perception layer: key-frame extraction and the VLM describer pool."""

from __future__ import annotations

from configtypes import bounded, choice
from dataclasses import dataclass, field

PARTIAL_VIDEO_POLICIES = ("skip", "keep")  # KeyframeConfig.partial_video
PartialVideoPolicy = choice("PartialVideoPolicy", PARTIAL_VIDEO_POLICIES, __name__)
# The allowed values of the other choices, checked by cluster.config.validate when the config is loaded.
RANSAC_ENGINES = ("numpy", "opencv")  # KeyframeConfig.ransac_engine
RansacEngine = choice("RansacEngine", RANSAC_ENGINES, __name__)
MATCHERS = ("numpy", "opencv")  # KeyframeConfig.matcher
Matcher = choice("Matcher", MATCHERS, __name__)
DECODERS = ("pyav", "opencv")  # KeyframeConfig.decoder
Decoder = choice("Decoder", DECODERS, __name__)
VLM_ENGINES = ("transformers", "vllm", "openai")  # VLMConfig.engine
VLMEngine = choice("VLMEngine", VLM_ENGINES, __name__)
VLM_DTYPES = ("auto", "float32", "bfloat16", "float16")  # VLMConfig.dtype
VLMDtype = choice("VLMDtype", VLM_DTYPES, __name__)
PERCEPTION_SOURCES = ("vlm", "ground_truth")  # PerceptionConfig.source
PerceptionSource = choice("PerceptionSource", PERCEPTION_SOURCES, __name__)
GROUND_TRUTH_FRAMES = ("one_fps", "keyframes", "uniform")  # PerceptionConfig.ground_truth_frames
GroundTruthFrames = choice("GroundTruthFrames", GROUND_TRUTH_FRAMES, __name__)


@dataclass
class KeyframeConfig:
    sample_fps: float = bounded(1.0, gt=0)  # the video is first downsampled to this rate
    overlap_threshold: float = bounded(0.5, ge=0, le=1)  # a frame whose overlap with the last key frame falls below this is a key frame
    min_keyframes: int = bounded(4, ge=1)
    max_keyframes: int = bounded(32, ge=1)
    orb_features: int = bounded(500, ge=1)
    min_matches: int = bounded(10, ge=0)  # more than this many ORB matches are needed to fit a homography
    ransac_reproj_threshold: float = bounded(5.0, gt=0)
    # numpy: perception/ransac.py, OpenCV's RANSAC homography replayed with its hypotheses scored in blocks (the same
    # matrix, ~3-5x faster); opencv: cv2.findHomography itself.
    ransac_engine: RansacEngine = RansacEngine.numpy
    # numpy: perception/matching.py, the cross-checked Hamming matches of cv2.BFMatcher computed with popcounts on one
    # thread (the same matches, about half the CPU); opencv: cv2.BFMatcher itself.
    matcher: Matcher = Matcher.numpy
    # pyav: perception/video.py's reader, which skips decoding the non-reference frames no sample needs and converts
    # only samples to colour (the same frames and pixels as OpenCV; falls back to OpenCV where it cannot be sure);
    # opencv: cv2.VideoCapture, which decodes every frame.
    decoder: Decoder = Decoder.pyav
    # Threads computing ORB features beside the decoding thread (the overlap rule itself runs on one more thread, in
    # order); 0: one per core beyond two, at most 4.  The decisions are the same whatever the number.
    feature_threads: int = bounded(0, ge=0)
    # A video only part of which decodes -- truncated or damaged: fewer frames than its container promises (see
    # perception/video.py) -- is silently short otherwise.  skip: reported by name (PartialVideoError; the perception
    # pool's skip report lists it as "partial video") and not described; keep: described from its decodable part,
    # with a warning naming it (the describer counts such videos).
    partial_video: PartialVideoPolicy = PartialVideoPolicy.skip


@dataclass
class VLMConfig:
    engine: VLMEngine = VLMEngine.transformers  # transformers | vllm | openai
    model: str = ""  # set by the driver from models.vlm (hub id or local path)
    max_new_tokens: int = bounded(24, ge=1)
    temperature: float = bounded(0.0, ge=0)  # greedy: descriptions are cached and must be reproducible
    image_size: int = bounded(112, ge=1)  # key frames are resized to this square before the VLM sees them (no lossy re-encode)
    tensor_parallel_size: int = bounded(1, ge=1)
    gpu_memory_utilization: float = bounded(0.85, gt=0, le=1)
    max_model_len: int = bounded(8192, ge=1)
    # OpenAI-compatible endpoint (engine=openai)
    base_url: str = ""
    api_key_env: str = "OPENAI_API_KEY"
    max_concurrency: int = bounded(8, ge=1)
    timeout_s: float = bounded(120.0, gt=0)
    # transient failures (connection errors, timeouts, 408/409/429/5xx) are retried by the openai client with its own
    # exponential backoff (0.5 s doubling to 8 s, jittered) or the server's Retry-After
    max_retries: int = bounded(4, ge=0)
    # engine details
    batch_size: int = bounded(8, ge=1)  # requests per forward batch (transformers engine)
    dtype: VLMDtype = VLMDtype.auto  # auto (bf16 on GPU, fp32 on CPU) | float32 | bfloat16 | float16
    seed: int = 0


@dataclass
class PerceptionConfig:
    keyframes: KeyframeConfig = field(default_factory=KeyframeConfig)
    vlm: VLMConfig = field(default_factory=VLMConfig)
    question_aware: bool = False  # False: describe each video once and reuse it for every question about it
    num_replicas: int = bounded(1, ge=1)
    num_cpus_per_replica: float = bounded(1.0, ge=0)
    num_gpus_per_replica: float = bounded(0.0, ge=0)
    cache_dir: str = "${run_dir}/perception_cache"
    source: PerceptionSource = PerceptionSource.vlm  # vlm | ground_truth (privileged simulator captions, synthetic data only)
    # Which frames the ground-truth captions (source=ground_truth) describe -- the key-frame ablation of issue 11:
    # one_fps: the manifest's caption, every 1-fps frame; keyframes: the frames `keyframes` picks from the mp4;
    # uniform: as many frames as `keyframes` picks for that video, spread evenly over it, first and last included.
    # keyframes and uniform caption the per-frame simulator truth videos/<scene>.json beside each synthetic video.
    ground_truth_frames: GroundTruthFrames = GroundTruthFrames.one_fps
    torch_threads: int = bounded(1, ge=0)  # intra-op threads of each replica's torch (0: torch's default)
    max_in_flight_per_replica: int = bounded(2, ge=1)  # videos queued on each replica, so none idles between videos
    cache_flush_every: int = bounded(8, ge=1)  # descriptions per cache shard: a killed run loses at most this many
