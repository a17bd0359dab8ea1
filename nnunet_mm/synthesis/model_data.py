"""Training data of the synthesis networks, read from the user's dataset (nothing pretrained, nothing downloaded).

* **Inpainter (2D)**: axial liver slices of the *raw* dataset (``imagesTr`` + ``labelsTr`` via SimpleITK), every
  phase as its own sample, slices without tumour only (tumour slices are held out: their truth under the tumour is
  unknown). Intensities are mapped to [0, 1]: CT channels with the fixed window :data:`CT_WINDOW_HU`, other
  channels with their per-volume 0.5/99.5 percentiles. The inpainter works on raw data because the normal cases it
  produces are new raw cases that nnU-Net then plans and preprocesses like any other.
* **Autoencoder and latent diffusion (3D)**: random crops of nnU-Net's *preprocessed* cases of one configuration
  (common spacing, nnU-Net's normalised intensities): exactly the space in which ``SynthTumorTrainer`` hands
  patches to the synthesizer.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from nnunet_mm.io.raw_dataset import open_raw_dataset

#: HU window mapped to [0, 1] for CT channels of the inpainter (DiffTumor's autoencoder window).
CT_WINDOW_HU: tuple[float, float] = (-175.0, 250.0)


def intensity_window(volume: np.ndarray, channel_name: str) -> tuple[float, float]:
    """The (low, high) intensities that map to (0, 1): :data:`CT_WINDOW_HU` for CT, else the 0.5/99.5 percentiles."""
    if channel_name.strip().lower() == "ct":
        return CT_WINDOW_HU
    low, high = np.percentile(volume, [0.5, 99.5])
    return float(low), float(max(high, low + 1e-3))


def to_unit(volume: np.ndarray, window: tuple[float, float]) -> np.ndarray:
    """``volume`` clipped to ``window`` and scaled to [0, 1] (float32)."""
    low, high = window
    return np.clip((np.asarray(volume, np.float32) - low) / (high - low), 0.0, 1.0)


def from_unit(unit: np.ndarray, window: tuple[float, float]) -> np.ndarray:
    """Inverse of :func:`to_unit` (inside the window)."""
    low, high = window
    return np.asarray(unit, np.float32) * (high - low) + low


@dataclass(frozen=True)
class RawCase:
    """One raw training case: its id, one image file per channel (dataset.json order) and its label file."""

    identifier: str
    images: tuple[Path, ...]
    label: Path


def read_dataset_json(raw_dataset_folder: Path) -> dict:
    """``dataset.json`` of a raw dataset; errors name the file."""
    path = Path(raw_dataset_folder) / "dataset.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing; {raw_dataset_folder} is not an nnU-Net raw dataset.")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not valid JSON ({error}).") from None


def raw_training_cases(raw_dataset_folder: Path) -> list[RawCase]:
    """Every training case of ``imagesTr``, each with all its channel files and its label file.

    Raises:
        FileNotFoundError: no dataset.json, no training case, or a training case without a label file.
        ValueError: a misnamed image or a case that lacks a channel file (every one listed).
    """
    raw = open_raw_dataset(Path(raw_dataset_folder))
    if not raw.training_cases:
        raise FileNotFoundError(f"{raw.folder / 'imagesTr'}: no training images CASE_XXXX{raw.file_ending}.")
    missing = [str(raw.label_file(case)) for case in raw.training_cases if not raw.label_file(case).is_file()]
    if missing:
        raise FileNotFoundError(f"{raw.folder / 'labelsTr'}: {len(missing)} training case(s) without a label file: "
                                f"{missing}")
    return [RawCase(case, tuple(raw.image_file(case, c) for c in range(raw.num_channels)), raw.label_file(case))
            for case in raw.training_cases]


def _read_array(path: Path) -> np.ndarray:
    from nnunet_mm.io.images import read_image
    import SimpleITK as sitk

    return sitk.GetArrayFromImage(read_image(path))


def _crop_centered(array: np.ndarray, center_yx: Sequence[int], size: int, fill: float) -> np.ndarray:
    """A size×size window of a 2D array centred at ``center_yx``, padded with ``fill`` beyond the border."""
    out = np.full((size, size), fill, dtype=array.dtype)
    starts = [int(c) - size // 2 for c in center_yx]
    src = tuple(slice(max(0, s), min(n, s + size)) for s, n in zip(starts, array.shape))
    dst = tuple(slice(sl.start - s, sl.stop - s) for sl, s in zip(src, starts))
    out[dst] = array[src]
    return out


@dataclass
class LiverSlices:
    """Tumour-free liver slices for the inpainter.

    Attributes:
        images: (N, P, P) float32 in [0, 1].
        liver: (N, P, P) bool, the liver in each slice (where training holes are placed).
        sources: ``"case/channel/z"`` of every slice.
    """

    images: np.ndarray
    liver: np.ndarray
    sources: list[str]


def liver_slices(raw_dataset_folder: Path, *, patch_size: int, liver_label: int, tumour_label: int,
                 max_slices_per_case: int = 32, min_liver_pixels: int = 16, seed: int = 0,
                 progress: bool = True) -> LiverSlices:
    """Axial P×P crops centred on the liver of every tumour-free liver slice of every phase (see module docstring).

    Args:
        raw_dataset_folder: the nnU-Net raw dataset (``imagesTr``, ``labelsTr``, ``dataset.json``).
        patch_size: side P of the crops.
        liver_label, tumour_label: label values.
        max_slices_per_case: at most this many slices per case (evenly drawn), every phase of them.
        min_liver_pixels: slices with less liver are skipped.

    Raises:
        ValueError: no slice qualifies (message names the folder), or unreadable files (message names the file).
    """
    from tqdm import tqdm

    folder = Path(raw_dataset_folder)
    channel_names = [str(v) for _, v in sorted(read_dataset_json(folder)["channel_names"].items(),
                                               key=lambda kv: int(kv[0]))]
    rng = np.random.default_rng(seed)
    images, livers, sources = [], [], []
    for case in tqdm(raw_training_cases(folder), desc="liver slices", disable=not progress):
        label = _read_array(case.label)
        liver = (label == liver_label) | (label == tumour_label)
        tumour = label == tumour_label
        candidates = [z for z in range(label.shape[0])
                      if liver[z].sum() >= min_liver_pixels and not tumour[z].any()]
        if len(candidates) > max_slices_per_case:
            candidates = sorted(rng.choice(candidates, max_slices_per_case, replace=False).tolist())
        if not candidates:
            continue
        volumes = [_read_array(p) for p in case.images]
        for volume, path in zip(volumes, case.images):
            if volume.shape != label.shape:
                raise ValueError(f"{path}: image shape {volume.shape} differs from its label's {label.shape} "
                                 f"({case.label}).")
        for z in candidates:
            ys, xs = np.nonzero(liver[z])
            center = ((ys.min() + ys.max()) // 2, (xs.min() + xs.max()) // 2)
            liver_crop = _crop_centered(liver[z], center, patch_size, False)
            for channel, volume in enumerate(volumes):
                unit = to_unit(volume[z], intensity_window(volume, channel_names[channel]))
                images.append(_crop_centered(unit, center, patch_size, 0.0))
                livers.append(liver_crop)
                sources.append(f"{case.identifier}/{channel}/{z}")
    if not images:
        raise ValueError(f"{folder}: no tumour-free axial slice with at least {min_liver_pixels} liver voxels "
                         f"(liver label {liver_label}, tumour label {tumour_label}); the inpainter needs some.")
    return LiverSlices(np.stack(images).astype(np.float32), np.stack(livers), sources)


class PreprocessedCrops:
    """Random 3D crops of nnU-Net's preprocessed cases of one configuration, one phase (channel) per crop.

    Args:
        folder: ``nnUNet_preprocessed/<dataset>/<data_identifier>``.
        patch_size: crop size per spatial axis (in nnU-Net's array axis order); smaller cases are edge-padded.
        center_labels: a fraction ``foreground_fraction`` of the crops is centred on a random voxel with one of
            these label values (the liver and tumour for the autoencoder, the tumour for the diffusion model); the
            others are placed anywhere. Cases without such voxels are left out.
        identifiers: restrict to these cases (default: all).
        reference_channel: the image channel the label (seg channel 0) belongs to. In a ``<configuration>_phases``
            configuration (``nnunet_mm phase-labels``) the segmentation carries one more channel per non-reference
            phase, in channel order; :meth:`sample` then gives every phase's crop *its own* label, so a model learns
            each phase's tumour where that phase shows it. Otherwise every phase gets the reference label.

    Raises:
        FileNotFoundError: no preprocessed cases in ``folder``.
    """

    def __init__(self, folder: Path, patch_size: Sequence[int], *, center_labels: Sequence[int],
                 foreground_fraction: float = 0.67, identifiers: Sequence[str] | None = None,
                 reference_channel: int = 0):
        from nnunet_mm.io.preprocessed import open_preprocessed_cases

        self.dataset = open_preprocessed_cases(folder, identifiers)
        self.patch_size = tuple(int(p) for p in patch_size)
        self.center_labels = tuple(int(v) for v in center_labels)
        self.foreground_fraction = foreground_fraction
        self.reference_channel = int(reference_channel)
        self._cache: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        self.identifiers = [i for i in self.dataset.identifiers if len(self._case(i)[2])]
        if not self.identifiers:
            raise ValueError(f"{folder}: no preprocessed case has a voxel with label in {self.center_labels}.")
        self.num_channels = int(self._case(self.identifiers[0])[0].shape[0])

    def _case(self, identifier: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(data (C, *spatial), seg (S, *spatial) with S = 1 or one channel per phase, coordinates of voxels with a
        centre label in the reference label (K, ndim))."""
        if identifier not in self._cache:
            data, seg, _, _ = self.dataset.load_case(identifier)
            data, seg = np.asarray(data[:], np.float32), np.asarray(seg[:])
            coordinates = np.argwhere(np.isin(seg[0], self.center_labels))
            if len(coordinates) > 20000:
                coordinates = coordinates[np.linspace(0, len(coordinates) - 1, 20000).astype(int)]
            self._cache[identifier] = (data, seg, coordinates)
        return self._cache[identifier]

    def sample_case_crop(self, rng: np.random.Generator) -> tuple[str, np.ndarray, np.ndarray]:
        """``(case id, images (C, *patch) float32, seg (*patch))``: every channel of one crop centred on a centre
        label."""
        identifier = self.identifiers[rng.integers(len(self.identifiers))]
        data, seg, coordinates = self._case(identifier)
        center = coordinates[rng.integers(len(coordinates))]
        images = np.stack([_crop_3d(channel, center, self.patch_size) for channel in data])
        return identifier, images, _crop_3d(seg[0], center, self.patch_size)

    def phase_label(self, seg: np.ndarray, channel: int) -> np.ndarray:
        """The label of image ``channel`` from a case's segmentation (S, *spatial): its own seg channel in a
        ``_phases`` configuration (channel 0 = reference, then the non-reference channels in order), else the
        reference label."""
        if seg.shape[0] == 1 or channel == self.reference_channel:
            return seg[0]
        others = [c for c in range(self.num_channels) if c != self.reference_channel]
        index = 1 + others.index(channel)
        return seg[index] if index < seg.shape[0] else seg[0]

    def sample(self, batch_size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(images (B, 1, *patch) float32, seg (B, 1, *patch) int16, channel (B,) int64)``; ``seg`` is the label
        of the crop's own phase (:meth:`phase_label`)."""
        images, segs, channels = [], [], []
        for _ in range(batch_size):
            data, seg, coordinates = self._case(self.identifiers[rng.integers(len(self.identifiers))])
            channel = int(rng.integers(data.shape[0]))
            if rng.random() < self.foreground_fraction:
                center = coordinates[rng.integers(len(coordinates))]
            else:
                center = np.array([rng.integers(n) for n in seg.shape])
            image = _crop_3d(data[channel], center, self.patch_size)
            label = _crop_3d(self.phase_label(seg, channel), center, self.patch_size)
            images.append(image[None])
            segs.append(label[None].astype(np.int16))
            channels.append(channel)
        return np.stack(images), np.stack(segs), np.asarray(channels, np.int64)


def _crop_3d(volume: np.ndarray, center: Sequence[int], size: Sequence[int]) -> np.ndarray:
    """A crop of ``size`` centred at ``center``, shifted inside the volume; edge-padded where the volume is smaller."""
    pad = [(0, max(0, s - n)) for s, n in zip(size, volume.shape)]
    if any(p[1] for p in pad):
        volume = np.pad(volume, pad, mode="edge")
    starts = [int(np.clip(int(c) - s // 2, 0, n - s)) for c, s, n in zip(center, size, volume.shape)]
    return volume[tuple(slice(a, a + s) for a, s in zip(starts, size))]
