"""Procedural surface textures (wood, wallpaper, tiles, fabric, grain) with enough corners and blobs for ORB to match."""

from __future__ import annotations

import cv2
import numpy as np

TEXTURE_SIZE = 256  # texels per side
TEXELS_PER_METRE = 128.0  # so one texture tile covers 2 m x 2 m of surface


def _low_frequency_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Smooth noise in [-1, 1]: a coarse random grid upsampled with cubic interpolation."""
    grid = rng.uniform(-1.0, 1.0, (cells, cells)).astype(np.float32)
    return cv2.resize(grid, (size, size), interpolation=cv2.INTER_CUBIC)


def _tint(base: tuple[int, int, int], factor: float) -> tuple[int, int, int]:
    return tuple(int(min(255.0, max(0.0, c * factor))) for c in base)  # plain floats: called thousands of times


def _scatter_shapes(rng: np.random.Generator, image: np.ndarray, base: tuple[int, int, int], count: int, scale: int) -> None:
    """Draw small circles, rectangles and strokes of lighter/darker shades: the corners ORB latches on to."""
    size = image.shape[0]
    for _ in range(count):
        factor = float(rng.choice([0.45, 0.6, 1.35, 1.6]))
        colour = _tint(base if max(base) > 60 else (90, 90, 90), factor)
        x, y = (int(v) for v in rng.integers(0, size, 2))
        r = int(rng.integers(scale // 3 + 1, scale + 1))
        kind = int(rng.integers(3))
        if kind == 0:
            cv2.circle(image, (x, y), r, colour, -1, lineType=cv2.LINE_AA)
        elif kind == 1:
            cv2.rectangle(image, (x, y), (x + r, y + int(rng.integers(r // 2 + 1, 2 * r + 1))), colour, -1)
        else:
            dx, dy = (int(v) for v in rng.integers(-2 * r, 2 * r + 1, 2))
            cv2.line(image, (x, y), (x + dx, y + dy), colour, max(2, r // 3), lineType=cv2.LINE_AA)


def make_texture(rng: np.random.Generator, base_bgr: tuple[int, int, int], kind: str, size: int = TEXTURE_SIZE) -> np.ndarray:
    """A size x size BGR uint8 texture of one kind around a base colour."""
    base = np.array(base_bgr, np.float32)
    shade = 1.0 + 0.18 * _low_frequency_noise(rng, size, 6)
    image = np.clip(base[None, None, :] * shade[..., None], 0, 255).astype(np.uint8)
    if kind == "wood":
        plank = 24
        for row in range(0, size, plank):
            factor = float(rng.uniform(0.75, 1.25))
            image[row : row + plank] = np.clip(image[row : row + plank].astype(np.float32) * factor, 0, 255).astype(np.uint8)
            cv2.line(image, (0, row), (size, row), _tint(base_bgr, 0.4), 2)
            joint = int(rng.integers(0, size))
            cv2.line(image, (joint, row), (joint, row + plank), _tint(base_bgr, 0.4), 2)
        grain = _low_frequency_noise(rng, size, 48)
        grain = cv2.resize(grain[:, :8], (size, size), interpolation=cv2.INTER_LINEAR)  # streaks along u
        image = np.clip(image.astype(np.float32) * (1.0 + 0.12 * grain[..., None]), 0, 255).astype(np.uint8)
        _scatter_shapes(rng, image, base_bgr, 25, 6)  # knots
    elif kind == "tiles":
        tile = 32
        for y in range(0, size, tile):
            for x in range(0, size, tile):
                cv2.rectangle(image, (x, y), (x + tile - 1, y + tile - 1), _tint(base_bgr, float(rng.uniform(0.8, 1.05))), -1)
        for v in range(0, size, tile):
            cv2.line(image, (v, 0), (v, size), _tint(base_bgr, 0.55), 2)
            cv2.line(image, (0, v), (size, v), _tint(base_bgr, 0.55), 2)
        _scatter_shapes(rng, image, base_bgr, 30, 5)
    elif kind == "wallpaper":
        _scatter_shapes(rng, image, base_bgr, 140, 9)
    elif kind in ("fabric", "grain"):
        _scatter_shapes(rng, image, base_bgr, 180, 7)
        if kind == "fabric":  # a woven cross-hatch
            for v in range(0, size, 16):
                cv2.line(image, (v, 0), (v, size), _tint(base_bgr, 0.75), 1)
                cv2.line(image, (0, v), (size, v), _tint(base_bgr, 0.75), 1)
    else:
        raise ValueError(f"unknown texture kind {kind!r}")
    speckle = rng.integers(-10, 11, (size, size, 1), dtype=np.int16)
    return np.clip(image.astype(np.int16) + speckle, 0, 255).astype(np.uint8)
