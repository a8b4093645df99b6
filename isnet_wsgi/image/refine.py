"""Edge refinement of the model's mask: a fast guided filter on the image.

The model sees every image at 1024x1024 and its mask is resized back, so
edges come out as a smooth ramp that ignores the image. A guided filter
(He, Sun and Tang 2013; the fast variant of He and Sun 2015) fits, in every
window, alpha ~= a * image + b, so the ramp follows the image's own edges:
hair strands and soft outlines take the shape of the pixels under them.

NumPy and Pillow only. Box means use cumulative sums, so the cost per pixel
does not depend on the radius. The fit runs on a grid `subsample` times
coarser (the fast guided filter), in float64: with a small epsilon the 3x3
solve of the colour guide cancels too much for float32 (its determinant came
out negative on grey subjects). The grid is 1/16 of the image, so that costs
little. Only the last step, alpha = a * I + b, runs at full resolution, one
float32 plane at a time.

Memory: for a 1024x1024 RGB image, about 20-25 MB at peak (five 4 MB float32
planes at full resolution, the rest on the coarse grid); bench/edge_refinement.py
measures it with the time.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

# Radius of the box window at a 1024-px long side; scaled with the image,
# so the window covers the same part of the subject at any size.
RADIUS_AT_1024_PX = 16
# Regularisation on a 0..1 intensity scale: a window whose colour variance
# is well below this keeps the model's ramp; well above, the mask follows the
# image. Small on purpose (a ~1-grey-level contrast already counts): larger
# values blur the mask wherever subject and background are alike, which
# scored worse in bench/edge_refinement.py than any noise a small one lets in.
EPSILON = 1e-5
# Fit on a grid this many times coarser: a and b are smooth, so they lose
# almost nothing, and the box filters cost subsample**2 times less.
SUBSAMPLE = 4
# The colour guide separates subject and background of equal brightness
# (a red cup on red brick); the grey one scored worse than no refinement.
GUIDE = "colour"
# Mask values (0..255) that count as "unsure": the band to refine is every
# coarse cell holding one of these, and its neighbours. Elsewhere the mask is
# kept bit for bit, so a hard mask stays hard and the filter cannot leak
# alpha into the background (a band one window radius wide did: it raised
# the whole-image MAE in the bench while lowering the edge error).
_UNSURE_LOW, _UNSURE_HIGH = 8, 247


def refine_alpha(image: Image.Image, mask: Image.Image, *, radius_px: int | None = None,
                 epsilon: float = EPSILON, guide: str = GUIDE, band_only: bool = True,
                 subsample: int = SUBSAMPLE) -> Image.Image:
    """The mask ('L', the image's size) refined along edges; returns a new 'L' mask.

    radius_px is the window's half-width (default scaled from 16 px at
    1024 px); guide is "colour" (RGB) or "grey" (cheaper); band_only=False
    filters the whole mask, which also moves alpha far from any edge.
    The bench (bench/edge_refinement.py) compares these choices.
    """
    if mask.mode != "L" or mask.size != image.size:
        raise ValueError(f"mask must be 'L' and {image.size}, got {mask.mode!r} {mask.size}")
    if guide not in ("grey", "colour"):
        raise ValueError(f"guide must be 'grey' or 'colour', got {guide!r}")
    width, height = image.size
    if radius_px is None:
        radius_px = max(1, round(RADIUS_AT_1024_PX * max(width, height) / 1024))
    step = max(1, min(subsample, radius_px))
    small = (max(1, round(width / step)), max(1, round(height / step)))
    radius = max(1, round(radius_px / step))

    weight = _band(mask, small) if band_only else None
    if weight is not None and not weight.any():
        return mask.copy()  # nothing unsure: a hard mask stays exactly as it was
    guides = _planes(image, guide)
    small_guides = [_small(plane, small) for plane in guides]
    small_mask = _small(mask, small)
    if guide == "grey":
        coefficients = _fit_grey(small_guides[0], small_mask, radius, epsilon)
    else:
        coefficients = _fit_colour(small_guides, small_mask, radius, epsilon)
    del small_guides
    # NOTE: the box mean of a and b is what makes the fit smooth; it is
    # upsampled bilinearly and applied to the full-resolution guide.
    *slopes, offset = [_box_mean(c, radius) for c in coefficients]
    del coefficients
    refined = _large(offset, image.size)
    for slope, plane in zip(slopes, guides):
        full_slope = _large(slope, image.size)
        full_slope *= np.asarray(plane, dtype=np.float32)
        full_slope *= 1.0 / 255.0
        refined += full_slope
    del full_slope, guides
    original = np.asarray(mask, dtype=np.float32)
    original *= 1.0 / 255.0
    if weight is not None:
        # Blend back to the original mask outside the band; the weight is
        # upsampled bilinearly, so there is no seam where the band ends.
        refined -= original
        refined *= _large(weight, image.size)
        refined += original
    del original
    np.clip(refined, 0.0, 1.0, out=refined)
    refined *= 255.0
    return Image.fromarray(np.rint(refined, out=refined).astype(np.uint8), "L")


def _planes(image: Image.Image, guide: str) -> list[Image.Image]:
    if guide == "grey":
        return [image.convert("L")]
    rgb = image if image.mode in ("RGB", "RGBA") else image.convert("RGB")
    return [rgb.getchannel(band) for band in "RGB"]


def _small(plane: Image.Image, size: tuple[int, int]) -> np.ndarray:
    """An 'L' plane on the coarse grid, as float64 on a 0..1 scale."""
    if plane.size != size:
        plane = plane.resize(size, Image.Resampling.BOX)
    values = np.asarray(plane, dtype=np.float64)
    values *= 1.0 / 255.0
    return values


def _large(values: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A coarse grid bilinearly upsampled to size, as a writable float32 array."""
    if values.shape[::-1] == size:
        return values.astype(np.float32, copy=True)
    image = Image.fromarray(np.ascontiguousarray(values, dtype=np.float32), "F")
    return np.array(image.resize(size, Image.Resampling.BILINEAR), dtype=np.float32)


def _band(mask: Image.Image, small: tuple[int, int]) -> np.ndarray:
    """1.0 on coarse cells with (or next to one with) an unsure mask value, else 0.0.

    Unsure is judged at full resolution: on the coarse grid a hard edge would
    average to grey and look unsure.
    """
    values = np.asarray(mask)
    unsure = (values > _UNSURE_LOW) & (values < _UNSURE_HIGH)
    if not unsure.any():
        return np.zeros(small[::-1], dtype=np.float32)
    # BOX-averaging 0/255 flags marks a coarse cell if any of its pixels is unsure.
    flags = Image.fromarray(unsure.view(np.uint8) * np.uint8(255), "L")
    cells = np.asarray(flags.resize(small, Image.Resampling.BOX), dtype=np.float64)
    return (_box_mean(cells, 1) > 0.0).astype(np.float32)


def _fit_grey(guide: np.ndarray, mask: np.ndarray, radius: int,
              epsilon: float) -> list[np.ndarray]:
    mean_guide = _box_mean(guide, radius)
    mean_mask = _box_mean(mask, radius)
    variance = np.maximum(_box_mean(guide * guide, radius) - mean_guide * mean_guide, 0.0)
    covariance = _box_mean(guide * mask, radius) - mean_guide * mean_mask
    slope = covariance / (variance + epsilon)
    return [slope, mean_mask - slope * mean_guide]


def _fit_colour(guides: list[np.ndarray], mask: np.ndarray, radius: int,
                epsilon: float) -> list[np.ndarray]:
    """Per window, solve (Sigma + epsilon * I) a = cov(guide, mask) for 3 channels."""
    means = [_box_mean(g, radius) for g in guides]
    mean_mask = _box_mean(mask, radius)
    cov = [_box_mean(g * mask, radius) - m * mean_mask for g, m in zip(guides, means)]

    def sigma(i: int, j: int) -> np.ndarray:
        return _box_mean(guides[i] * guides[j], radius) - means[i] * means[j]

    rr, rg, rb, gg, gb, bb = (sigma(0, 0) + epsilon, sigma(0, 1), sigma(0, 2),
                              sigma(1, 1) + epsilon, sigma(1, 2), sigma(2, 2) + epsilon)
    # The symmetric 3x3 inverse by cofactors, vectorised over the grid.
    inv_rr, inv_rg, inv_rb = gg * bb - gb * gb, gb * rb - rg * bb, rg * gb - gg * rb
    inv_gg, inv_gb, inv_bb = rr * bb - rb * rb, rb * rg - rr * gb, rr * gg - rg * rg
    determinant = rr * inv_rr + rg * inv_rg + rb * inv_rb
    # Sigma is positive semi-definite, so det(Sigma + epsilon * I) >= epsilon**3;
    # the floor only guards against rounding, it never bites on real input.
    np.maximum(determinant, epsilon ** 3, out=determinant)
    slopes = [(inv_rr * cov[0] + inv_rg * cov[1] + inv_rb * cov[2]) / determinant,
              (inv_rg * cov[0] + inv_gg * cov[1] + inv_gb * cov[2]) / determinant,
              (inv_rb * cov[0] + inv_gb * cov[1] + inv_bb * cov[2]) / determinant]
    offset = mean_mask - sum(s * m for s, m in zip(slopes, means))
    return slopes + [offset]


def _box_mean(values: np.ndarray, radius: int) -> np.ndarray:
    """Mean over the (2r+1)^2 window clipped at the borders, O(1) per pixel."""
    total = _box_sum(_box_sum(values, radius, axis=0), radius, axis=1)
    rows = _window_counts(values.shape[0], radius)
    cols = _window_counts(values.shape[1], radius)
    total /= rows[:, np.newaxis]
    total /= cols[np.newaxis, :]
    return total


def _box_sum(values: np.ndarray, radius: int, axis: int) -> np.ndarray:
    # NOTE: the running sum is float64: differences of large float32 sums
    # would lose the small variances that the fit divides by.
    running = np.cumsum(values, axis=axis, dtype=np.float64)
    length = values.shape[axis]
    index = np.arange(length)
    total = np.take(running, np.minimum(index + radius, length - 1), axis=axis)
    first = min(radius + 1, length)  # windows before this start at the border
    if first < length:
        below = np.take(running, index[first:] - radius - 1, axis=axis)
        tail = (slice(None),) * axis + (slice(first, None),)
        total[tail] -= below
    return total


def _window_counts(length: int, radius: int) -> np.ndarray:
    index = np.arange(length)
    return (np.minimum(index + radius, length - 1) - np.maximum(index - radius, 0) + 1
            ).astype(np.float64)
