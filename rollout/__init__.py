"""Policy rollout: the reasoning prompt, generation engines (transformers, vLLM), rollout workers as Ray actors and their pool."""
