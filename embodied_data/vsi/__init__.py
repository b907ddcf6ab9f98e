"""VSI-Bench's geometric questions answered from the real per-scene 3D annotations (meta_info), under the conventions
that reproduce the published ground truth.

Conventions, each checked against all 5130 questions of the test parquet (`embodied-r data vsi-agreement`):

* Frame.  z is up in ARKitScenes, ScanNet and ScanNet++; every direction is taken in the x-y plane.  A box is
  `centroid` + `axesLengths` (full side lengths) along the unit axes given by the ROWS of the row-major 3x3
  `normalizedAxes` (VSI builds `o3d.geometry.OrientedBoundingBox(R=normalizedAxes.reshape(3, 3).T)`).
* Which objects.  Direction, absolute-distance and size questions only name categories with `object_counts == 1`;
  a relative-distance question's reference has one instance but its options may have several (657 of 710
  questions) and each option is measured to its closest instance.  ScanNet's meta_info lists some boxes twice
  (printers in 9 scenes): exact duplicates are dropped on load, after which they are single objects as counted.
  ScanNet++'s "coat hanger" is asked about as "coat rack" (`answers.CATEGORY_ALIASES`).
* Relative direction.  Positions are box centroids.  The bearing is the counter-clockwise angle in [0, 360) from
  standing->facing to standing->target.  hard: floor(angle / 90) gives front-left, back-left, back-right,
  front-right; medium: left below 135, back below 225, right above; easy: left below 180, right above.  VSI's
  generator drops medium/easy targets within 10 degrees of 0/135/225/360, but for hard only within 10 degrees
  BELOW a quadrant's upper boundary: published hard targets lie as close as 0.8 degrees past a boundary, so the
  half-open [k*90, (k+1)*90) sectors matter.  (It also drops triples whose closest points are < 0.3 m or > 5 m
  apart, and targets with more than two box corners in another sector; the answer itself uses the centroid only.)
* "Measuring from the closest point of each object".  Neither exact box-to-box distance nor a point cloud: VSI
  samples each box on a grid of ceil(length / 5 cm) points per axis (ends on the faces), removes the inner core,
  rotates it into the world with numpy (OpenBLAS: an FMA chain), crops it with Open3D's
  `crop(OrientedBoundingBox)` (|(p - c) . axis| <= length / 2, rounded without FMA) and takes the smallest
  distance between two such point sets; the crop drops about half of the face points on the last bit of rounding,
  which moves distances by up to a grid step.  `geometry.shell_samples` reproduces this bit for bit: all 834
  absolute distances agree (exact box distance: 540, centroids: 1); all 710 relative distances agree with either
  samples or exact boxes (published options are > 0.15 m apart), centroids 591.  Between categories with several
  instances the distance is the smallest over instance pairs.  Absolute distances are rounded to 0.1 m.
* Counting: `object_counts` (only categories with at least 2 are asked).  4 of 565 published counts differ from
  meta_info, boxes included (45260928 chair 5 vs 2, 38d58a7a31 ceiling light 12 vs 10, 09c1414f1b refrigerator
  1 vs 2, scene0030_02 table 7 vs 6): the annotations shipped are not the ones those answers were taken from.
* Object size: the longest of `axesLengths`, in centimetres, rounded to an integer.
* Room size: `room_size` (m^2) rounded to 0.1.
* Not covered: obj_appearance_order and route_planning depend on the video's camera path, not on meta_info.

A numeric answer agrees when it rounds to the published value (within half a unit of its last decimal).
"""

from embodied_data.vsi.answers import Answer, CategoryDistances, Uncovered, Verdict, compute_answer, judge
from embodied_data.vsi.layout import VSIObject, VSISceneLayout, load_meta_dir, load_meta_info, parse_scene

__all__ = [
    "Answer",
    "CategoryDistances",
    "Uncovered",
    "VSIObject",
    "VSISceneLayout",
    "Verdict",
    "compute_answer",
    "judge",
    "load_meta_dir",
    "load_meta_info",
    "parse_scene",
]
