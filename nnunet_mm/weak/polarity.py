"""Which side of the GAN's attention mask is the lesion, decided from the image-level labels.

``G_AB``'s attention mask ``m`` should be bright where the generator removes the lesion. Nothing in the CLTN losses
forces that side: a generator can also keep the lesion from the input and repaint the rest, and then ``m`` is the
lesion's complement. This happened in the issue-20 experiment (skin, seed 1: pseudo-mask Dice 0.000, every segmenter
trained on it scored 0). The image-level labels say what healthy tissue looks like: the foreground pixels of the
normal images. For every diseased image the Otsu region of ``m`` and the rest of the foreground are scored by how
unlike healthy tissue their pixels are: the Mahalanobis distance of each pixel's channel vector under a Gaussian
fitted to the normal images' foreground pixels (without normal images: to every diseased image's foreground, where
the lesion is the minority). The lesion is the more abnormal side. Polarity is a property of the generator, not of
one image, so one decision is made per model: the median over the diseased images of (mean distance inside the
region) − (mean distance in the rest); below zero, the mask is inverted.

Not in the paper nor in its public code (an extension of ours); ``nnunet_mm weak-export --polarity attention`` keeps
the mask as the GAN made it. No true mask is used.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np

from nnunet_mm.weak.image_labels import NORMAL
from nnunet_mm.weak.weak_images import WeakImage

POLARITIES = ("auto", "attention", "inverted")
#: added to the covariance's diagonal (images are scaled to [-1, 1]): keeps a flat channel from dividing by zero
COVARIANCE_FLOOR = 1e-3


@dataclass(frozen=True)
class HealthyAppearance:
    """A Gaussian over the channel vectors of healthy foreground pixels."""

    mean: np.ndarray  # (C,)
    precision: np.ndarray  # (C, C), the inverse covariance
    source: str  # which pixels it was fitted to

    def distance(self, image: np.ndarray) -> np.ndarray:
        """(H, W) Mahalanobis distance of each pixel of ``image`` (C, H, W)."""
        centred = image.reshape(image.shape[0], -1).T.astype(np.float64) - self.mean
        squared = np.einsum("pc,cd,pd->p", centred, self.precision, centred)
        return np.sqrt(np.maximum(squared, 0.0)).reshape(image.shape[1:])


@dataclass(frozen=True)
class PolarityDecision:
    """The decision and what it rests on (written next to the pseudo masks)."""

    inverted: bool
    rule: str  # "auto", or the user's "attention" / "inverted"
    median_margin: float | None  # median over images of (abnormality inside) - (abnormality outside); None: not scored
    images_scored: int
    images_favouring_inversion: int
    healthy_pixels_from: str | None

    def to_json(self) -> dict:
        return asdict(self)

    def describe(self) -> str:
        side = "inverted (1 - m)" if self.inverted else "as the GAN made it"
        if self.rule != "auto":
            return f"attention mask {side}: set by the user ({self.rule!r})"
        if self.median_margin is None:
            return f"attention mask {side}: no diseased image had both a region and a rest to compare"
        return (f"attention mask {side}: median abnormality margin {self.median_margin:+.3f} over "
                f"{self.images_scored} diseased image(s), {self.images_favouring_inversion} favouring inversion; "
                f"healthy appearance from {self.healthy_pixels_from}")


def fit_healthy_appearance(images: Sequence[WeakImage]) -> HealthyAppearance:
    """The Gaussian of the normal images' foreground pixels, or of every image's foreground when none is normal.

    Raises:
        ValueError: no image has a foreground pixel.
    """
    normal = [image for image in images if image.image_label == NORMAL]
    chosen, source = (normal, f"{len(normal)} normal image(s)") if normal else (
        list(images), f"{len(images)} diseased image(s) (no normal image)")
    pixels = [image.image[:, image.foreground].T for image in chosen if image.foreground.any()]
    if not pixels:
        raise ValueError("no foreground pixel in any image: cannot describe healthy tissue.")
    samples = np.concatenate(pixels).astype(np.float64)
    covariance = np.atleast_2d(np.cov(samples, rowvar=False)) if len(samples) > 1 else np.zeros((1, 1))
    covariance = covariance + COVARIANCE_FLOOR * np.eye(samples.shape[1])
    return HealthyAppearance(mean=samples.mean(axis=0), precision=np.linalg.inv(covariance), source=source)


def abnormality_margin(image: WeakImage, region: np.ndarray, healthy: HealthyAppearance) -> float | None:
    """Mean distance from healthy tissue inside ``region`` minus in the rest of the foreground; None if one is empty."""
    inside = region & image.foreground
    outside = image.foreground & ~region
    if not inside.any() or not outside.any():
        return None
    distance = healthy.distance(image.image)
    return float(distance[inside].mean() - distance[outside].mean())


def decide_attention_polarity(diseased: Sequence[WeakImage], regions: Sequence[np.ndarray],
                              healthy: HealthyAppearance) -> PolarityDecision:
    """Invert the attention masks when, on the median diseased image, their region is less abnormal than the rest.

    Args:
        diseased: the diseased images, in the order of ``regions``.
        regions: (size, size) bool per image, the binarised attention mask as the GAN made it.
        healthy: see :func:`fit_healthy_appearance`.
    """
    if len(diseased) != len(regions):
        raise ValueError(f"{len(diseased)} images but {len(regions)} regions.")
    margins = [margin for image, region in zip(diseased, regions)
               if (margin := abnormality_margin(image, region, healthy)) is not None]
    if not margins:
        return PolarityDecision(inverted=False, rule="auto", median_margin=None, images_scored=0,
                                images_favouring_inversion=0, healthy_pixels_from=healthy.source)
    median = float(np.median(margins))
    return PolarityDecision(inverted=median < 0, rule="auto", median_margin=round(median, 4),
                            images_scored=len(margins), images_favouring_inversion=sum(m < 0 for m in margins),
                            healthy_pixels_from=healthy.source)


def user_polarity(rule: str) -> PolarityDecision:
    """The decision the user imposed (``"attention"`` or ``"inverted"``)."""
    if rule not in POLARITIES[1:]:
        raise ValueError(f"unknown attention polarity {rule!r}; choose one of {list(POLARITIES)}.")
    return PolarityDecision(inverted=rule == "inverted", rule=rule, median_margin=None, images_scored=0,
                            images_favouring_inversion=0, healthy_pixels_from=None)
