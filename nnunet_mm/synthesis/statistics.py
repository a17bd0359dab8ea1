"""Real tumour-vs-liver statistics per phase, fitted from the labelled training cases, for the handcrafted synthesizer.

For every real tumour (a connected component of the tumour label) and every phase p, in nnU-Net's normalised
intensity space:

* ``contrast[p]`` = median of the tumour's core − median of the liver in a shell around it (Δ_p). The core is the
  component eroded by one voxel, because the non-reference phases are registered at organ level only and their
  tumours sit a few voxels off the reference label; the local shell (3 voxels, liver only) follows intensity drifts
  across the liver.
* ``tumour_std[p]`` and ``liver_std[p]``: robust standard deviations (1.4826 · MAD) of the core and the shell.

Keeping whole rows (one real tumour, all phases) keeps the phases' joint behaviour: an HCC brightens in the arterial
phase and washes out in the portal phase, a cyst is dark in all of them. :meth:`TumourContrastStatistics.sample`
draws such rows; the synthesizer jitters them. The statistics are written as a small JSON file beside the
preprocessed dataset (:func:`statistics_path`) by ``nnunet_mm synth-stats`` or, when missing, by the trainer.
"""
from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage

logger = logging.getLogger(__name__)

FORMAT = "nnunet_mm tumour contrast statistics v1"
SYNTHESIS_FOLDER = "nnunet_mm_synthesis"
SHELL_VOXELS = 3
MIN_VOXELS = 4


def statistics_path(preprocessed_dataset_folder: Path, data_identifier: str) -> Path:
    """``<preprocessed>/<Dataset>/nnunet_mm_synthesis/tumour_contrast_<data_identifier>.json``."""
    return Path(preprocessed_dataset_folder) / SYNTHESIS_FOLDER / f"tumour_contrast_{data_identifier}.json"


def _robust_std(values: np.ndarray) -> np.ndarray:
    """1.4826 · median absolute deviation along axis 1 (per phase), (P,)."""
    median = np.median(values, axis=1, keepdims=True)
    return 1.4826 * np.median(np.abs(values - median), axis=1)


def lesion_statistics(images: np.ndarray, label: np.ndarray, liver_label: int, tumour_label: int) -> list[dict]:
    """The per-phase statistics of every tumour component of one case (see the module docstring).

    Args:
        images: (P, *spatial) float, normalised intensities, one channel per phase.
        label: (*spatial) integer label map (values < 0 — nnU-Net's outside-the-crop marker — count as background).
        liver_label: label value of the liver.
        tumour_label: label value of the tumour.

    Returns:
        One dict per tumour component with at least ``MIN_VOXELS`` voxels and liver around it:
        ``{"voxels": int, "contrast": [P], "tumour_std": [P], "liver_std": [P]}``.
    """
    if images.shape[1:] != label.shape:
        raise ValueError(f"images {images.shape} and label {label.shape} have different spatial shapes.")
    tumour = label == tumour_label
    liver = label == liver_label
    components, count = ndimage.label(tumour)
    rows = []
    for index, box in enumerate(ndimage.find_objects(components), start=1):
        if box is None:
            continue
        box = tuple(slice(max(s.start - SHELL_VOXELS - 1, 0), s.stop + SHELL_VOXELS + 1) for s in box)
        component = components[box] == index
        if component.sum() < MIN_VOXELS:
            continue
        core = ndimage.binary_erosion(component)
        if core.sum() < MIN_VOXELS:
            core = component
        shell = ndimage.binary_dilation(component, iterations=SHELL_VOXELS) & liver[box]
        if shell.sum() < MIN_VOXELS:
            continue
        crop = images[(slice(None), *box)]
        tumour_values, liver_values = crop[:, core], crop[:, shell]
        rows.append({
            "voxels": int(component.sum()),
            "contrast": (np.median(tumour_values, 1) - np.median(liver_values, 1)).tolist(),
            "tumour_std": _robust_std(tumour_values).tolist(),
            "liver_std": _robust_std(liver_values).tolist(),
        })
    return rows


@dataclass(frozen=True)
class TumourContrastStatistics:
    """Per-tumour, per-phase rows of real tumour-vs-liver statistics.

    Attributes:
        phase_names: one name per channel (dataset.json channel order).
        contrast: (K, P) tumour − liver median per real tumour and phase.
        tumour_std: (K, P) robust std inside the tumours.
        liver_std: (K, P) robust std of the surrounding liver.
        cases: (K,) the case each row comes from.
    """

    phase_names: tuple[str, ...]
    contrast: np.ndarray
    tumour_std: np.ndarray
    liver_std: np.ndarray
    cases: tuple[str, ...]

    def __post_init__(self) -> None:
        shape = (len(self.cases), len(self.phase_names))
        for name in ("contrast", "tumour_std", "liver_std"):
            if np.asarray(getattr(self, name)).shape != shape:
                raise ValueError(f"{name} must have shape {shape} (tumours, phases), got "
                                 f"{np.asarray(getattr(self, name)).shape}.")
        if not self.cases:
            raise ValueError("no real tumour statistics: the training cases contain no tumour with liver around it.")

    @property
    def num_phases(self) -> int:
        return len(self.phase_names)

    def sample(self, count: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``count`` rows drawn uniformly (with replacement), on the generator's device.

        Returns:
            (contrast, tumour_std, liver_std), each (count, P) float32.
        """
        device = generator.device
        index = torch.randint(len(self.cases), (count,), generator=generator, device=device)
        tables = [torch.as_tensor(np.asarray(t, dtype=np.float32), device=device)
                  for t in (self.contrast, self.tumour_std, self.liver_std)]
        return tables[0][index], tables[1][index], tables[2][index]

    def summary(self) -> str:
        """One line per phase: median contrast and its 10–90 % range over the real tumours."""
        lines = [f"{len(self.cases)} real tumour(s) from {len(set(self.cases))} case(s)"]
        for p, name in enumerate(self.phase_names):
            values = np.asarray(self.contrast)[:, p]
            lines.append(f"  {name:>8}: contrast median {np.median(values):+.3f} "
                         f"(10-90 %: {np.percentile(values, 10):+.3f} .. {np.percentile(values, 90):+.3f}), "
                         f"tumour std {np.median(np.asarray(self.tumour_std)[:, p]):.3f}, "
                         f"liver std {np.median(np.asarray(self.liver_std)[:, p]):.3f}")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {"format": FORMAT, "phase_names": list(self.phase_names),
                "lesions": [{"case": case, "contrast": [float(v) for v in c], "tumour_std": [float(v) for v in t],
                             "liver_std": [float(v) for v in s]}
                            for case, c, t, s in zip(self.cases, self.contrast, self.tumour_std, self.liver_std)]}

    def save(self, path: Path) -> Path:
        """Write the JSON atomically (temporary file + rename), creating the folder."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        partial.write_text(json.dumps(self.to_dict(), indent=1), encoding="utf-8")
        os.replace(partial, path)
        return path

    @classmethod
    def load(cls, path: Path) -> "TumourContrastStatistics":
        """Read a file written by :meth:`save`.

        Raises:
            FileNotFoundError: no such file (the message says which command writes it).
            ValueError: the file is not such a statistics file, naming the file and the problem.
        """
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no tumour contrast statistics; write them with 'nnunet_mm synth-stats "
                                    f"-d DATASET -c CONFIGURATION'.")
        try:
            content = json.loads(path.read_text(encoding="utf-8"))
            if content.get("format") != FORMAT:
                raise ValueError(f"format is {content.get('format')!r}, expected {FORMAT!r}")
            lesions = content["lesions"]
            return cls(tuple(content["phase_names"]),
                       np.array([r["contrast"] for r in lesions], dtype=np.float64).reshape(len(lesions), -1),
                       np.array([r["tumour_std"] for r in lesions], dtype=np.float64).reshape(len(lesions), -1),
                       np.array([r["liver_std"] for r in lesions], dtype=np.float64).reshape(len(lesions), -1),
                       tuple(r["case"] for r in lesions))
        except (json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as error:
            raise ValueError(f"{path}: not a valid tumour contrast statistics file ({error}).") from None


def fit_tumour_statistics(cases: Iterable[tuple[str, np.ndarray, np.ndarray]], phase_names: Sequence[str],
                          liver_label: int, tumour_label: int) -> TumourContrastStatistics:
    """Fit :class:`TumourContrastStatistics` from ``(case_id, images (P, *spatial), label (*spatial))`` triples."""
    rows, cases_of_rows = [], []
    for case_id, images, label in cases:
        if images.shape[0] != len(phase_names):
            raise ValueError(f"case {case_id}: {images.shape[0]} channels, but {len(phase_names)} phases are named "
                             f"({list(phase_names)}).")
        found = lesion_statistics(images, label, liver_label, tumour_label)
        rows += found
        cases_of_rows += [case_id] * len(found)
    if not rows:
        raise ValueError(f"no tumour (label {tumour_label}) with liver (label {liver_label}) around it was found in "
                         f"the cases; the handcrafted synthesizer needs at least one real tumour to fit its contrast.")
    return TumourContrastStatistics(tuple(phase_names), np.array([r["contrast"] for r in rows]),
                                    np.array([r["tumour_std"] for r in rows]),
                                    np.array([r["liver_std"] for r in rows]), tuple(cases_of_rows))


def preprocessed_cases(folder: Path, identifiers: Sequence[str] | None = None
                       ) -> Iterable[tuple[str, np.ndarray, np.ndarray]]:
    """``(case_id, images, label)`` of nnU-Net's preprocessed cases in ``folder`` (a ``<data_identifier>`` folder).

    Raises:
        FileNotFoundError: the folder does not exist or holds no preprocessed case.
        ValueError: a case's ``.pkl`` is cut or would run code
            (:func:`nnunet_mm.io.preprocessed.open_preprocessed_cases`).
    """
    from nnunet_mm.io.preprocessed import open_preprocessed_cases

    dataset = open_preprocessed_cases(folder, identifiers)
    for identifier in dataset.identifiers:
        data, seg, _, _ = dataset.load_case(identifier)
        yield identifier, np.asarray(data[:], dtype=np.float32), np.asarray(seg[:])[0]
