"""What every engine (a policy's generation engine, the consistency judge, the VLM) declares about itself: the pools
and commands read these class attributes instead of branching on an engine's name outside its family's factory."""

from __future__ import annotations

from typing import ClassVar


class Engine:
    """The base of every engine class: its capabilities, as class attributes (each family adds its own methods)."""

    # One replica spans the config's tensor_parallel_size GPUs, one placement bundle each (a vLLM engine).
    tensor_parallel: ClassVar[bool] = False
    # The replica loads the model itself (an OpenAI-compatible engine only names a model a server holds).
    local_model: ClassVar[bool] = True
    # It computes with torch in the replica's own process, whose thread count the replica then sets.
    torch_threads: ClassVar[bool] = False
