"""Horizontal bar charts on a 0..1 axis drawn with PIL: a canvas with row labels, ticks, title and legend, bars added row by row."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from embodied_data.atomic import atomic_path


@dataclass
class BarCanvas:
    image: Any  # PIL.Image.Image
    draw: Any  # PIL.ImageDraw.ImageDraw
    font: Any
    small: Any
    x0: int  # where the axis starts (right of the labels)
    top: int
    row_height: int
    bar_width: int
    rows: int

    def bar(self, row: int, offset: float, thickness: float, value: float | None, colour, text: str | None = None) -> None:
        """A bar for `value` (None draws as 0) in `row`, `offset` px below the row's top, with `text` (default: the
        value) right of it."""
        value = value or 0.0
        y = self.top + row * self.row_height + offset
        self.draw.rectangle([self.x0, y, self.x0 + max(value * self.bar_width, 1), y + thickness], fill=colour)
        label = f"{value:.3f}" if text is None else text
        self.draw.text((self.x0 + value * self.bar_width + 6, y + thickness / 2), label, fill="black", font=self.small, anchor="lm")

    def mark(self, row: int, value: float, colour) -> None:
        """A vertical tick at `value` across `row` (a reference value)."""
        x, y = self.x0 + value * self.bar_width, self.top + row * self.row_height
        self.draw.line([(x, y + 2), (x, y + self.row_height - 4)], fill=colour, width=2)

    def save(self, path: str | Path) -> Path:
        """Draws the axis line over the bars' left ends and writes the PNG atomically."""
        self.draw.line([(self.x0, self.top - 6), (self.x0, self.top + self.row_height * self.rows)], fill="black")
        path = Path(path)
        with atomic_path(path) as temp:
            self.image.save(temp, format="PNG")
        return path


def bar_canvas(labels: list[str], title: str, legend: str, bar_width: int, row_height: int, right_margin: int,
               bottom: int, legend_from_bottom: int) -> BarCanvas:
    """A white canvas with `title`, one labelled row per entry of `labels`, the 0..1 axis with ticks, and `legend`."""
    from PIL import Image, ImageDraw, ImageFont

    font, small = ImageFont.load_default(size=15), ImageFont.load_default(size=12)
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    label_width = int(max(measure.textlength(label, font=font) for label in labels)) + 24
    top = 56
    width, height = label_width + bar_width + right_margin, top + row_height * len(labels) + bottom
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    draw.text((12, 12), title, fill="black", font=font)
    x0, y_end = label_width, top + row_height * len(labels)
    for tick in (0.0, 0.25, 0.5, 0.75, 1.0):
        x = x0 + tick * bar_width
        draw.line([(x, top - 6), (x, y_end)], fill=(215, 215, 215))
        draw.text((x, y_end + 6), f"{tick:g}", fill="black", font=small, anchor="ma")
    for index, label in enumerate(labels):
        draw.text((x0 - 10, top + index * row_height + row_height / 2), label, fill="black", font=font, anchor="rm")
    draw.text((12, height - legend_from_bottom), legend, fill=(80, 80, 80), font=small)
    return BarCanvas(image, draw, font, small, x0, top, row_height, bar_width, len(labels))
