"""Offline pools of synthetic-tumour patches that ``SynthTumorTrainer`` reads (``"synthesizer": "pool"``).

Online diffusion synthesis pays the sampler (DDIM, ``num_inference_steps`` network passes per phase) in every
training step; a pool pays it once. ``nnunet_mm synth-pool`` paints synthetic tumours into liver-centred crops of the
preprocessed cases with the latent-diffusion model and writes every crop **as an nnU-Net preprocessed case**
(``pool_XXXX.b2nd``, ``pool_XXXX_seg.b2nd``, ``pool_XXXX.pkl`` with ``class_locations`` of the synthetic tumour),
so nnU-Net's own loader and training augmentation read it exactly like real cases. Layout of a pool folder
(default :func:`default_pool_folder`: ``<preprocessed dataset>/nnunet_mm_synthesis/pool_<configuration>``)::

    pool.json      what made it: configuration record, model folder, seed, crop size, one entry per patch
    pool.png       the first patches before / after, every phase
    pool_0000.b2nd, pool_0000_seg.b2nd, pool_0000.pkl, ...

In training, a share ``p`` (``"probability"``) of every batch's samples is replaced by samples of a second nnU-Net
loader over the pool (:func:`nnunet_mm.training.extra_loader.augmented_loader`, crops forced onto the synthetic
tumour), before nnU-Net's deferred intensity augmentation (which then degrades pooled and real samples alike).
"""
from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from nnunet_mm.synthesis.latent_diffusion import check_configuration

POOL_RECORD = "pool.json"
POOL_FORMAT = "nnunet_preprocessed_blosc2"


def default_pool_folder(preprocessed_dataset_folder: Path, configuration_name: str) -> Path:
    """``<preprocessed dataset folder>/nnunet_mm_synthesis/pool_<configuration>``."""
    return Path(preprocessed_dataset_folder) / "nnunet_mm_synthesis" / f"pool_{configuration_name}"


def save_pool_case(folder: Path, identifier: str, data: np.ndarray, seg: np.ndarray, tumour_label: int,
                   seed: int) -> None:
    """Write one pooled patch as an nnU-Net Blosc2 preprocessed case whose ``class_locations`` hold the synthetic
    tumour only (so foreground-forced crops land on it).

    Args:
        data: (C, *spatial) float32 in nnU-Net's normalised space.
        seg: (1, *spatial) integer labels with the synthetic tumour inserted.
    """
    from nnunetv2.preprocessing.preprocessors.default_preprocessor import DefaultPreprocessor
    from nnunetv2.training.dataloading.nnunet_dataset import comp_blosc2_params, nnUNetDatasetBlosc2

    data = np.ascontiguousarray(data, dtype=np.float32)
    seg = np.ascontiguousarray(seg, dtype=np.int16)
    locations = DefaultPreprocessor._sample_foreground_locations(seg, [tumour_label], seed=seed)
    properties = {"class_locations": {int(k): np.asarray(v) for k, v in locations.items()}}
    patch = data.shape[1:]
    block_data, chunk_data = comp_blosc2_params(data.shape, patch, data.itemsize)
    block_seg, chunk_seg = comp_blosc2_params(seg.shape, patch, seg.itemsize)
    nnUNetDatasetBlosc2.save_case(data, seg, properties, str(Path(folder) / identifier), chunks=chunk_data,
                                  blocks=block_data, chunks_seg=chunk_seg, blocks_seg=block_seg)


def write_pool_record(folder: Path, *, model_folder: Path, configuration: Mapping[str, Any] | None,
                      patch_size: Sequence[int], seed: int, tumour_label: int, samples: list[dict]) -> None:
    """``pool.json`` of a pool folder (what :func:`open_pool` checks)."""
    (Path(folder) / POOL_RECORD).write_text(json.dumps(
        {"format": POOL_FORMAT, "configuration": dict(configuration) if configuration else None,
         "model_folder": str(model_folder), "patch_size": [int(s) for s in patch_size], "seed": int(seed),
         "tumour_label": int(tumour_label), "samples": samples}, indent=2), encoding="utf-8")


def open_pool(folder: Path, configuration: Mapping[str, Any], tumour_label: int) -> dict:
    """Check a pool folder before a trainer reads it; returns its ``pool.json``.

    Raises:
        FileNotFoundError: no pool folder or no ``pool.json`` (the message gives the command that makes one).
        ValueError: a pool of the old ``.npz`` format, another configuration (spacing / normalisation), another
            tumour label, no patches, or case properties that are not plain data (named).
    """
    from nnunetv2.training.dataloading.nnunet_dataset import nnUNetDatasetBlosc2

    from nnunet_mm.io.safe_load import verify_preprocessed_folder

    folder = Path(folder)
    command = f"nnunet_mm synth-pool -d DATASET -c {configuration.get('name')} -n NUM_PATCHES"
    if not (folder / POOL_RECORD).is_file():
        raise FileNotFoundError(f"{folder}: no synthetic pool ({POOL_RECORD} missing); make one with '{command}' "
                                f"or point \"pool_folder\" at one.")
    try:
        record = json.loads((folder / POOL_RECORD).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise ValueError(f"{folder / POOL_RECORD}: unreadable ({error}).") from None
    if record.get("format") != POOL_FORMAT:
        raise ValueError(f"{folder}: a pool of an older format (pool_XXXX.npz), which no trainer reads; write it "
                         f"again with '{command} --overwrite'.")
    check_configuration(folder, record.get("configuration"), configuration)
    if int(record.get("tumour_label", tumour_label)) != int(tumour_label):
        raise ValueError(f"{folder}: the pool's tumours carry label {record['tumour_label']}, the dataset's tumour "
                         f"label is {tumour_label}.")
    if not nnUNetDatasetBlosc2.get_identifiers(str(folder)):
        raise ValueError(f"{folder}: the pool holds no patches.")
    verify_preprocessed_folder(folder)  # nnU-Net's loader unpickles the case properties
    return record
