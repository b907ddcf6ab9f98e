"""Procedural outdoor textures (street grid, facades with windows, glass curtain walls, roofs, sky) with enough
corners for ORB to match from a drone's altitude."""

from __future__ import annotations

import cv2
import numpy as np

from embodied_data.synthetic.textures import (
    _low_frequency_noise,
    _scatter_shapes,
    _tint,
)

FACADE_TEXELS = 256
FACADE_METRES = 12.0  # one facade tile: four floors of 3 m by four window bays of 3 m
FACADE_TEXELS_PER_METRE = FACADE_TEXELS / FACADE_METRES


def _noisy_base(rng: np.random.Generator, base: tuple[int, int, int], size: int, amount: float = 0.15) -> np.ndarray:
    shade = 1.0 + amount * _low_frequency_noise(rng, size, 8)
    return np.clip(np.array(base, np.float32)[None, None, :] * shade[..., None], 0, 255).astype(np.uint8)


def _speckle(rng: np.random.Generator, image: np.ndarray, amount: int = 8) -> np.ndarray:
    noise = rng.integers(-amount, amount + 1, (*image.shape[:2], 1), dtype=np.int16)
    return np.clip(image.astype(np.int16) + noise, 0, 255).astype(np.uint8)


def facade_texture(rng: np.random.Generator, wall_bgr: tuple[int, int, int], window_style: str = "windows") -> np.ndarray:
    """A facade tile: a wall around a grid of windows (frames, mullions, lit or dark panes, blinds), or for
    "glass" a curtain wall of panels of varying reflections and thin mullions, or "slits" for a tower's narrow windows."""
    size = FACADE_TEXELS
    image = _noisy_base(rng, wall_bgr, size)
    cell = size // 4  # 3 m
    if window_style == "glass":
        panel = size // 8
        reflection = 1.0 + 0.35 * _low_frequency_noise(rng, size, 4)
        image = np.clip(image.astype(np.float32) * reflection[..., None], 0, 255).astype(np.uint8)
        for y in range(0, size, panel):
            for x in range(0, size, panel):
                factor = float(rng.uniform(0.75, 1.25))
                roi = image[y + 2 : y + panel - 1, x + 2 : x + panel - 1]
                roi[:] = np.clip(roi.astype(np.float32) * factor, 0, 255).astype(np.uint8)
        for v in range(0, size, panel):
            cv2.line(image, (v, 0), (v, size), (200, 200, 190), 2)
            cv2.line(image, (0, v), (size, v), (200, 200, 190), 2)
        return _speckle(rng, image, 6)
    for row in range(4):
        for col in range(4):
            x0, y0 = col * cell, row * cell
            if window_style == "slits":
                wx0, wx1, wy0, wy1 = x0 + 26, x0 + 38, y0 + 12, y0 + 50
            else:
                wx0, wx1, wy0, wy1 = x0 + 14, x0 + 50, y0 + 14, y0 + 48
            lit = rng.random() < 0.3
            pane = (90, 200, 230) if lit else _tint((110, 80, 60), float(rng.uniform(0.6, 1.3)))
            cv2.rectangle(image, (wx0 - 3, wy0 - 3), (wx1 + 3, wy1 + 3), _tint(wall_bgr, 0.5), -1)  # frame
            cv2.rectangle(image, (wx0, wy0), (wx1, wy1), pane, -1)
            if window_style != "slits":
                cv2.line(image, ((wx0 + wx1) // 2, wy0), ((wx0 + wx1) // 2, wy1), _tint(wall_bgr, 0.6), 2)  # mullion
                blind = int(rng.integers(0, (wy1 - wy0) // 2))
                if blind:
                    cv2.rectangle(image, (wx0, wy0), (wx1, wy0 + blind), (200, 215, 225), -1)
            cv2.line(image, (x0, y0 + cell - 4), (x0 + cell, y0 + cell - 4), _tint(wall_bgr, 0.7), 3)  # floor slab
    _scatter_shapes(rng, image, wall_bgr, 30, 5)  # stains and signs: corners that differ from tile to tile
    return _speckle(rng, image)


def roof_texture(rng: np.random.Generator) -> np.ndarray:
    """Gravel roof with vents, hatches and units."""
    image = _noisy_base(rng, (120, 125, 128), FACADE_TEXELS, 0.2)
    for _ in range(12):
        x, y = (int(v) for v in rng.integers(10, FACADE_TEXELS - 40, 2))
        w, h = (int(v) for v in rng.integers(8, 36, 2))
        cv2.rectangle(image, (x, y), (x + w, y + h), _tint((160, 165, 170), float(rng.uniform(0.6, 1.3))), -1)
        cv2.rectangle(image, (x, y), (x + w, y + h), (50, 50, 50), 2)
    _scatter_shapes(rng, image, (120, 125, 128), 60, 5)
    return _speckle(rng, image, 10)


def billboard_texture(rng: np.random.Generator) -> np.ndarray:
    """A yellow poster with large letter-like strokes and shapes."""
    image = _noisy_base(rng, (40, 210, 235), FACADE_TEXELS, 0.1)
    for _ in range(14):
        colour = [(30, 30, 200), (40, 40, 40), (200, 80, 20)][int(rng.integers(3))]
        x, y = (int(v) for v in rng.integers(10, FACADE_TEXELS - 30, 2))
        cv2.rectangle(image, (x, y), (x + int(rng.integers(6, 30)), y + int(rng.integers(20, 50))), colour, -1)
    cv2.circle(image, (60, 140), 40, (30, 30, 200), -1)
    return _speckle(rng, image)


def ground_texture(rng: np.random.Generator, pitch_metres: float, street_metres: float, size: int = 512) -> np.ndarray:
    """One period of the street grid: streets (asphalt, dashed centre lines, zebra crossings) along the first
    `street_metres` of both axes, then sidewalks and a paved block interior; it wraps onto the next period."""
    scale = size / pitch_metres  # texels per metre
    street = int(round(street_metres * scale))
    image = _noisy_base(rng, (150, 155, 160), size, 0.12)  # pavement
    for v in range(street, size, int(2 * scale)):  # paving slabs, 2 m
        cv2.line(image, (v, street), (v, size), (120, 125, 130), 1)
        cv2.line(image, (street, v), (size, v), (120, 125, 130), 1)
    _scatter_shapes(rng, image, (150, 155, 160), 120, 6)
    asphalt = _noisy_base(rng, (72, 72, 75), size, 0.2)
    mask = np.zeros((size, size), bool)
    mask[:street, :] = True
    mask[:, :street] = True
    image[mask] = asphalt[mask]
    curb = (200, 200, 200)
    cv2.rectangle(image, (street, street), (size, size), curb, 2)
    centre = street // 2
    dash, gap = int(3 * scale), int(3 * scale)
    for start in range(street, size, dash + gap):  # dashed centre lines, outside the intersection
        cv2.line(image, (start, centre), (min(size, start + dash), centre), (220, 220, 220), 2)
        cv2.line(image, (centre, start), (centre, min(size, start + dash)), (40, 200, 230), 2)
    stripe = max(2, int(0.5 * scale))
    for offset in range(2, street - 2, 2 * stripe):  # zebra crossings next to the intersection
        cv2.rectangle(image, (street + 2, offset), (street + int(3 * scale), offset + stripe), (230, 230, 230), -1)
        cv2.rectangle(image, (offset, street + 2), (offset + stripe, street + int(3 * scale)), (230, 230, 230), -1)
    for _ in range(40):  # patches and manholes on the asphalt
        x, y = int(rng.integers(0, size)), int(rng.integers(0, street))
        if rng.random() < 0.5:
            x, y = y, x
        cv2.circle(image, (x, y), int(rng.integers(2, 7)), _tint((72, 72, 75), float(rng.choice([0.6, 1.5]))), -1)
    return _speckle(rng, image, 8)


def sky_texture(rng: np.random.Generator, size: int = 256) -> np.ndarray:
    """Pale blue with soft clouds."""
    clouds = np.clip(_low_frequency_noise(rng, size, 6), 0, 1)[..., None]
    blue = np.array((215, 170, 120), np.float32)
    white = np.array((245, 245, 245), np.float32)
    return np.clip(blue * (1 - clouds) + white * clouds, 0, 255).astype(np.uint8)


def skyline_texture(rng: np.random.Generator, size: int = 256, sky_fraction: float = 0.93) -> np.ndarray:
    """A hazy distant skyline for the walls at the edge of the world: sky above, gray-blue silhouettes with lit
    window dots below (texel row 0 is the top)."""
    image = sky_texture(rng, size)
    horizon = int(size * sky_fraction)
    haze = (190, 180, 170)
    image[horizon - 10 :] = np.array(haze, np.uint8)
    x = 0
    while x < size:
        w = int(rng.integers(6, 20))
        top = int(rng.integers(horizon - 12, horizon))
        shade = _tint((150, 140, 130), float(rng.uniform(0.8, 1.1)))
        cv2.rectangle(image, (x, top), (x + w, size), shade, -1)
        for _ in range(w // 3):
            wx, wy = x + int(rng.integers(1, w)), int(rng.integers(top + 2, size))
            image[wy, min(wx, size - 1)] = (200, 200, 190)
        x += w + int(rng.integers(0, 4))
    return image
