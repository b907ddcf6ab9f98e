"""A fast projective renderer: each textured planar face is warped by its homography and composited by z-buffer.

For a plane, inverse depth is an affine function of the pixel coordinates, so the z-buffer test is exact and
costs one multiply-add per pixel; faces are clipped to the view frustum in camera space before projection.
The renderer also returns an id map (0 = room surfaces, k = object k) from which visibility is measured.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from embodied_data.synthetic.camera import Pose
from embodied_data.synthetic.scene import Box, Scene
from embodied_data.synthetic.textures import TEXELS_PER_METRE

NEAR = 0.05  # metres
DEFAULT_FOV_DEGREES = 80.0  # horizontal field of view


@dataclass
class Face:
    """A rectangle origin + s*u + t*v (s, t in [0, 1]) whose outward normal is `normal`."""

    origin: np.ndarray
    u: np.ndarray
    v: np.ndarray
    normal: np.ndarray
    texture: np.ndarray  # already shaded for this face's orientation
    object_id: int
    double_sided: bool = False
    texels_per_metre: float | None = None  # None: the indoor TEXELS_PER_METRE; the city's facades and streets set theirs


def _shade(texture: np.ndarray, factor: float) -> np.ndarray:
    return np.clip(texture.astype(np.float32) * factor, 0, 255).astype(np.uint8)


# Fixed directional shading so that the faces of a box differ in brightness, as under a ceiling light.
_SHADE_BY_NORMAL = {(0, 0, 1): 1.0, (0, 0, -1): 0.55, (1, 0, 0): 0.85, (-1, 0, 0): 0.75, (0, 1, 0): 0.9, (0, -1, 0): 0.7}


def box_faces(box: Box, textures: dict[float, np.ndarray], object_id: int) -> list[Face]:
    """The six faces of an axis-aligned box, outward normals, each with the texture shaded for its direction."""
    lo, hi = np.asarray(box.lo, float), np.asarray(box.hi, float)
    dx, dy, dz = hi - lo
    ex, ey, ez = np.array([dx, 0, 0]), np.array([0, dy, 0]), np.array([0, 0, dz])
    specs = [
        (lo + ey, ex, -ey, (0, 0, -1)),  # bottom
        (lo + ez, ex, ey, (0, 0, 1)),  # top
        (lo + ez, ex, -ez, (0, -1, 0)),  # south (y = lo)
        (lo + ey + ex + ez, -ex, -ez, (0, 1, 0)),  # north (y = hi)
        (lo + ey + ez, ey * -1, -ez, (-1, 0, 0)),  # west (x = lo)
        (lo + ex + ez, ey, -ez, (1, 0, 0)),  # east (x = hi)
    ]
    faces = []
    for origin, u, v, normal in specs:
        if np.linalg.norm(u) < 1e-6 or np.linalg.norm(v) < 1e-6:
            continue
        shade = _SHADE_BY_NORMAL[normal]
        faces.append(Face(origin, u, v, np.array(normal, float), textures[shade], object_id))
    return faces


def _shaded_set(texture: np.ndarray) -> dict[float, np.ndarray]:
    return {factor: _shade(texture, factor) for factor in set(_SHADE_BY_NORMAL.values())}


def scene_faces(scene: Scene) -> list[Face]:
    """Floor, ceiling and walls (inward normals) and every part of every object."""
    room = scene.room
    w, d, h = room.width, room.depth, room.height
    ex, ey, ez = np.array([w, 0.0, 0.0]), np.array([0.0, d, 0.0]), np.array([0.0, 0.0, h])
    o = np.zeros(3)
    faces = [
        Face(o + ey, ex, -ey, np.array([0, 0, 1.0]), room.floor_texture, 0),
        Face(o + ez, ex, ey, np.array([0, 0, -1.0]), _shade(room.ceiling_texture, 0.9), 0),
        Face(o + ez, ex, -ez, np.array([0, 1.0, 0]), _shade(room.wall_textures[0], 0.85), 0),  # south wall
        Face(o + ex + ez, ey, -ez, np.array([-1.0, 0, 0]), _shade(room.wall_textures[1], 0.95), 0),  # east wall
        Face(o + ex + ey + ez, -ex, -ez, np.array([0, -1.0, 0]), room.wall_textures[2], 0),  # north wall
        Face(o + ey + ez, -ey, -ez, np.array([1.0, 0, 0]), _shade(room.wall_textures[3], 0.8), 0),  # west wall
    ]
    for obj in scene.objects:
        shaded = _shaded_set(obj.texture)
        for part in obj.parts:
            faces.extend(box_faces(part, shaded, obj.object_id))
    return faces


def _texel_density(face: Face) -> float:
    return TEXELS_PER_METRE if face.texels_per_metre is None else face.texels_per_metre


def intrinsics(size: int, fov_degrees: float = DEFAULT_FOV_DEGREES) -> np.ndarray:
    focal = (size / 2) / math.tan(math.radians(fov_degrees) / 2)
    return np.array([[focal, 0, size / 2], [0, focal, size / 2], [0, 0, 1.0]])


def _clip_polygon(points: np.ndarray, planes: list[np.ndarray]) -> np.ndarray:
    """Sutherland-Hodgman clipping of a convex polygon (N x 3, camera space) by half-spaces plane . p >= 0."""
    for plane in planes:
        if len(points) == 0:
            break
        dist = points @ plane[:3] + plane[3]
        kept = []
        for i in range(len(points)):
            j = (i + 1) % len(points)
            if dist[i] >= 0:
                kept.append(points[i])
            if (dist[i] >= 0) != (dist[j] >= 0):
                t = dist[i] / (dist[i] - dist[j])
                kept.append(points[i] + t * (points[j] - points[i]))
        points = np.array(kept) if kept else np.zeros((0, 3))
    return points


# Margin of the quick frustum tests below: a polygon this far inside every plane (or outside one) is decided without
# running the clipper, whose own sign tests could only differ from the quick test much closer to a plane.
_QUICK_CLIP_MARGIN = 1e-7
_PRESELECT_MARGIN = 1e-6


@dataclass
class _FaceConstants:
    """What `render` needs of a face that does not depend on the pose, computed once per scene."""

    face: Face
    corners: np.ndarray  # 4 x 3 world corners: origin, +u, +u+v, +v
    normal_dot_origin: float
    u_scale: float  # |u| * texels per metre
    v_scale: float


class Renderer:
    """Renders one scene from any pose; build once per scene, call `render` per frame.

    `faces` replaces the faces built from the scene's boxes (for geometry that is not axis-aligned, such as the
    oriented boxes of real layouts); the scene is kept for its objects' ids.
    """

    def __init__(
        self, scene: Scene, size: int = 224, fov_degrees: float = DEFAULT_FOV_DEGREES, faces: list[Face] | None = None
    ) -> None:
        self.scene = scene
        self.size = size
        self.K = intrinsics(size, fov_degrees)
        self.K_inv = np.linalg.inv(self.K)
        self.faces = scene_faces(scene) if faces is None else list(faces)
        half = math.radians(fov_degrees) / 2
        slack = 1.02  # clip slightly outside the image so edges are filled
        t = math.tan(half) * slack
        # Frustum half-spaces in camera space (x right, y down, z forward): n . p + c >= 0.
        self.planes = [
            np.array([0, 0, 1.0, -NEAR]),
            np.array([1.0, 0, t, 0]),
            np.array([-1.0, 0, t, 0]),
            np.array([0, 1.0, t, 0]),
            np.array([0, -1.0, t, 0]),
        ]
        self._plane_normals = np.stack([p[:3] for p in self.planes], axis=1)  # 3 x planes
        self._plane_offsets = np.array([p[3] for p in self.planes])
        ys, xs = np.mgrid[0:size, 0:size].astype(np.float32)
        self._pixel_u = xs + 0.5
        self._pixel_v = ys + 0.5
        # One row of u and one column of v: the inverse depth of a plane is affine in (u, v), so it is built by
        # broadcasting (the same float64 operations per pixel as on the full grids, at a fraction of the cost).
        self._u_row = self._pixel_u[0]
        self._v_column = self._pixel_v[:, 0:1]
        self._constants = [
            _FaceConstants(
                face=face,
                corners=np.stack([face.origin, face.origin + face.u, face.origin + face.u + face.v, face.origin + face.v]),
                normal_dot_origin=float(face.normal @ face.origin),
                u_scale=float(np.linalg.norm(face.u)) * _texel_density(face),
                v_scale=float(np.linalg.norm(face.v)) * _texel_density(face),
            )
            for face in self.faces
        ]
        # The same, stacked, for a per-frame pre-selection of the faces worth drawing (rooms with many objects).
        self._all_corners = np.stack([c.corners for c in self._constants]) if self._constants else np.zeros((0, 4, 3))
        self._all_normals = np.stack([f.normal for f in self.faces]) if self.faces else np.zeros((0, 3))
        self._all_normal_dot_origin = np.array([c.normal_dot_origin for c in self._constants])
        self._double_sided = np.array([f.double_sided for f in self.faces], bool)

    def _clip(self, corners_cam: np.ndarray) -> np.ndarray:
        """The face's polygon clipped to the frustum; whole faces well inside (most of them) skip the clipper."""
        dist = corners_cam @ self._plane_normals + self._plane_offsets  # corners x planes
        if (dist > _QUICK_CLIP_MARGIN).all():
            return corners_cam
        if (dist < -_QUICK_CLIP_MARGIN).all(axis=0).any():
            return corners_cam[:0]  # every corner outside one plane: nothing is left
        return _clip_polygon(corners_cam, self.planes)

    def _candidate_faces(self, R: np.ndarray, C: np.ndarray) -> np.ndarray:
        """Indices (in drawing order) of the faces that may be visible: all faces at once, vectorised, dropping only
        those clearly facing away or clearly outside one frustum plane.  The margin is far wider than any rounding
        difference from the per-face tests in `render`, which still decide every face kept, so the image is the
        same as testing every face one by one."""
        if not len(self.faces):
            return np.zeros(0, int)
        facing = (self._all_normals @ C - self._all_normal_dot_origin) < -_PRESELECT_MARGIN  # n . (C - o) < 0
        corners_cam = (self._all_corners - C) @ R.T  # faces x 4 x 3
        dist = corners_cam @ self._plane_normals + self._plane_offsets  # faces x 4 x planes
        outside = (dist < -_PRESELECT_MARGIN).all(axis=1).any(axis=1)
        return np.flatnonzero(~((facing & ~self._double_sided) | outside))

    def render(self, pose: Pose) -> tuple[np.ndarray, np.ndarray]:
        """The BGR uint8 image (size x size x 3) and the int16 id map of what each pixel shows."""
        size = self.size
        R = pose.rotation()
        C = pose.position
        image = np.zeros((size, size, 3), np.uint8)
        inverse_depth = np.zeros((size, size), np.float32)
        ids = np.full((size, size), -1, np.int16)
        shift = 4
        for index in self._candidate_faces(R, C):
            constants = self._constants[index]
            face = constants.face
            if not face.double_sided and float(face.normal @ (C - face.origin)) <= 1e-9:
                continue  # facing away
            corners_cam = (constants.corners - C) @ R.T
            polygon = self._clip(corners_cam)
            if len(polygon) < 3:
                continue
            projected = polygon @ self.K.T
            pixels = projected[:, :2] / projected[:, 2:3]
            low = np.floor(pixels.min(axis=0))
            high = np.ceil(pixels.max(axis=0))
            x0, y0 = max(int(low[0]), 0), max(int(low[1]), 0)
            x1, y1 = min(int(high[0]), size), min(int(high[1]), size)
            if x1 <= x0 or y1 <= y0:
                continue
            # Inverse depth over the box: plane n_c . X = d_c, X = z K^-1 (u, v, 1)  =>  1/z = n_c . K^-1 (u, v, 1) / d_c.
            d_cam = float(constants.normal_dot_origin - face.normal @ C)
            if abs(d_cam) < 1e-9:
                continue  # seen edge-on
            w, h = x1 - x0, y1 - y0
            mask = np.zeros((h, w), np.uint8)
            pts = np.round((pixels - [x0, y0]) * (1 << shift)).astype(np.int32)
            cv2.fillConvexPoly(mask, pts, 1, lineType=cv2.LINE_8, shift=shift)
            n_cam = R @ face.normal
            coeff = (n_cam @ self.K_inv) / d_cam
            inv_z = (coeff[0] * self._u_row[x0:x1] + coeff[1] * self._v_column[y0:y1]) + np.float32(coeff[2])
            depth_view = inverse_depth[y0:y1, x0:x1]
            covered = mask.view(np.bool_)
            covered &= inv_z > depth_view
            if not covered.any():
                continue
            # Texture texel (a, b, 1) -> image pixel: H = K [R u / (|u| ppm), R v / (|v| ppm), R (origin - C)].
            columns = np.stack([R @ face.u / constants.u_scale, R @ face.v / constants.v_scale, R @ (face.origin - C)], axis=1)
            H = np.array([[1, 0, -x0], [0, 1, -y0], [0, 0, 1.0]]) @ self.K @ columns
            warped = cv2.warpPerspective(face.texture, H, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_WRAP)
            # Writes through views with `where`: no boolean-index gathers and scatters.
            np.copyto(image[y0:y1, x0:x1], warped, where=covered[:, :, None])
            np.copyto(depth_view, inv_z, where=covered, casting="same_kind")
            np.copyto(ids[y0:y1, x0:x1], np.int16(face.object_id), where=covered)
        return image, ids
