"""Where a law's runs lie: the convex hull of their (log10 N, log10 D), and how far a point lies outside it.

A law fitted to IsoFLOP sweeps is checked only where its runs are. Ranges per quantity miss the corners: the runs of
large N have small D and the reverse, so a plan of large N *and* large D can lie inside the range of N, of D and of
C = 6ND while no run is near it. The hull of the runs in (log N, log D) does not miss them; a law file records its
vertices (`fitted_range["hull"]`) and a plan outside it says by how many decades (scaling/laws.py `outside`).
"""

from __future__ import annotations

import numpy as np

HULL_TOLERANCE = 0.05  # decades outside the hull before a plan warns (a corner on the boundary is inside)


def convex_hull(xy: np.ndarray) -> np.ndarray | None:
    """The vertices of the convex hull of points `xy` (k, 2), counter-clockwise (Andrew's monotone chain); None when
    the points are fewer than 3 distinct or all on one line (no area to be inside)."""
    pts = np.unique(np.asarray(xy, float), axis=0)
    if len(pts) < 3:
        return None

    def cross(o: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
        return float((a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0]))

    def half(points: np.ndarray) -> list[np.ndarray]:
        chain: list[np.ndarray] = []
        for p in points:
            while len(chain) >= 2 and cross(chain[-2], chain[-1], p) <= 0:
                chain.pop()
            chain.append(p)
        return chain

    hull = half(pts)[:-1] + half(pts[::-1])[:-1]
    return np.array(hull) if len(hull) >= 3 else None


def distance_outside(hull: np.ndarray, p: np.ndarray) -> float:
    """How far point `p` lies outside the convex polygon `hull` (counter-clockwise vertices): 0 inside or on it, else
    the distance to its nearest edge, in the points' units (decades for logs)."""
    hull, p = np.asarray(hull, float), np.asarray(p, float)
    a, b = hull, np.roll(hull, -1, axis=0)
    edge, rel = b - a, p - a
    if np.all(edge[:, 0] * rel[:, 1] - edge[:, 1] * rel[:, 0] >= -1e-12):
        return 0.0
    t = np.clip(np.sum(rel * edge, axis=1) / np.sum(edge * edge, axis=1), 0.0, 1.0)
    return float(np.min(np.linalg.norm(rel - t[:, None] * edge, axis=1)))
