"""DAPO's soft overlong penalty (arXiv 2503.14476): 0 up to max_length - cache_length, falling linearly to -1 at max_length, -1 beyond."""

from __future__ import annotations


def soft_overlong_penalty(length: int, max_length: int, cache_length: int) -> float:
    """The reward term for a completion of `length` tokens (added to the total reward, it is <= 0).

    Inside the last `cache_length` tokens before `max_length` the penalty grows linearly, so a completion that runs long
    is told so gradually rather than only when it is cut off; with cache_length 0 it is a step at max_length.
    """
    if max_length < 1:
        raise ValueError(f"max_length must be >= 1, got {max_length}")
    if not 0 <= cache_length <= max_length:
        raise ValueError(f"cache_length must be in [0, max_length={max_length}], got {cache_length}")
    if length < 0:
        raise ValueError(f"length must be >= 0, got {length}")
    free_length = max_length - cache_length
    if length <= free_length:
        return 0.0
    if length <= max_length:  # reached only when cache_length > 0
        return (free_length - length) / cache_length
    return -1.0
