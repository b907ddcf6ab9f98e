"""The engine layer every model-serving component builds on (the policy's rollout engines, the consistency judge, the
perception VLM): one loader, one batching, the transformers and vLLM backends, and the weight-receiver interface.

It sits between `actors`/`weightsync` and `perception`: it imports nothing from perception, rollout, rewards, learner
or cluster, and never imports vLLM at module level (machines without vLLM import all of it).

- `engines.loading`: dtype names -> torch dtypes, the tokenizer, EOS/pad ids, the chat prompt.
- `engines.batching`: fixed-size batches and left padding of token-id prompts.
- `engines.hf_backend`: a transformers checkpoint loaded frozen on a device.
- `engines.vllm_backend`: a `vllm.LLM` with the CPU/GPU differences handled in one place.
- `engines.openai_backend`: an OpenAI-compatible HTTP client (key from a named variable, the client's retries).
- `engines.weights`: `WeightReceiver`, what a policy engine implements to take the learner's weight broadcast.
"""

from engines.batching import batches, left_pad
from engines.loading import DTYPE_NAMES, SpecialTokens, chat_prompt, encode, load_tokenizer, resolve_dtype, special_tokens
from engines.weights import InProcessWeightReceiver, WeightReceiver

__all__ = [
    "DTYPE_NAMES",
    "InProcessWeightReceiver",
    "SpecialTokens",
    "WeightReceiver",
    "batches",
    "chat_prompt",
    "encode",
    "left_pad",
    "load_tokenizer",
    "resolve_dtype",
    "special_tokens",
]
