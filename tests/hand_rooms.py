"""Hand-placed rooms for the synthetic-data tests: fixed objects at fixed places, so that the answers are known."""

from __future__ import annotations

import numpy as np

from embodied_data.synthetic.scene import CATEGORIES, Scene, SceneObject, make_room, place_object

Placement = tuple[str, str, float, float, tuple[float, float, float]]  # category, colour, x, y, (width, depth, height)


def room_with(scene_id: str, layout: list[Placement]) -> Scene:
    """A 6 m x 6 m x 2.8 m room (seed 0) holding `layout`'s objects, with ids 1, 2, ... in its order."""
    rng = np.random.default_rng(0)
    room = make_room(rng, 6.0, 6.0, 2.8)
    objects = [
        place_object(room, CATEGORIES[c], colour, i + 1, x, y, rng, size=size) for i, (c, colour, x, y, size) in enumerate(layout)
    ]
    return Scene(scene_id, room, objects)


def by_category(scene: Scene, category: str) -> SceneObject:
    """The scene's first object of `category`."""
    return next(o for o in scene.objects if o.category == category)
