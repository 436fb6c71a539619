"""Colour-segmentation perception for the image-based scripted policies.

Finds an object of known colour in a calibrated camera image and back-projects the blob onto the
horizontal plane through the object's centre. Uses only the image, the camera model and the
object's known size and colour — never simulator state.
"""

from __future__ import annotations

import numpy as np

from scenes.camera import PinholeCamera


def colour_mask(image: np.ndarray, color: tuple[float, float, float], tol: float = 0.35) -> np.ndarray:
    """bool [H, W]: pixels whose chromaticity (r, g, b)/sum is within `tol` of the object's.

    Chromaticity ignores shading, so lit and shadowed faces of the same object both match.
    """
    img = image.astype(np.float32)
    s = img.sum(axis=2, keepdims=True)
    chroma = img / np.maximum(s, 1.0)
    ref = np.asarray(color, dtype=np.float32)
    ref = ref / max(ref.sum(), 1e-6)
    dist = np.linalg.norm(chroma - ref, axis=2)
    return (dist < tol * np.linalg.norm(ref)) & (s[..., 0] > 60)


def locate_on_table(
    image: np.ndarray,
    camera: PinholeCamera,
    color: tuple[float, float, float],
    centre_height: float,
    min_pixels: int = 6,
) -> np.ndarray | None:
    """World (x, y, z) of the object's centre, or None when fewer than `min_pixels` match.

    The blob's pixels are back-projected onto the plane z = centre_height and averaged; the
    top face seen from above sits higher than the centre, the side faces lower, so the errors
    largely cancel for an elevated camera.
    """
    mask = colour_mask(image, color)
    vs, us = np.nonzero(mask)
    if len(us) < min_pixels:
        return None
    pixels = np.stack([us + 0.5, vs + 0.5], axis=1)
    pts = camera.backproject_to_plane(pixels, centre_height)
    pts = pts[np.all(np.isfinite(pts), axis=1)]
    if len(pts) == 0:
        return None
    return np.median(pts, axis=0)
