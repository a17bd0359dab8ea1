"""Synthetic-tumour experiment (Diff4MMLiTS, paper 002): does synthesis help on tumours the synthesizer did not model?

Data (written once, planned once, every arm uses the same plans):

* **training**: ``tumour_cases`` (≤ 5) labelled multi-phase phantoms (``nnunet_mm.phantom``, channels pv/art/del/nc,
  labels 1 liver, 2 tumour) whose lesions come from the phantom's generator ("A": rotated, elastically deformed
  ellipsoids of one homogeneous tissue, kinds HCC / metastasis / cyst with the HU table of ``phantom.HU_BY_TISSUE``),
  plus ``normal_cases`` tumour-free phantoms (the phantom's tumour voxels, dilated by 2 voxels, refilled with liver HU
  plus noise: an ideal inpainter standing in for the NCG stage);
* **held-out test**: tumour-free phantoms of another generator seed into which :func:`paint_foreign_tumours` paints
  lesions of a second generator ("B") that neither synthesizer shares: lobulated shapes (a union of 2–5 overlapping
  balls plus an irregular noise-thresholded boundary, instead of one deformed ellipsoid), heterogeneous texture
  (smooth noise of 8–20 HU inside, instead of a homogeneous tissue), a rim/core structure, and three enhancement
  patterns of which two are absent from A: **rim-enhancing** (ring hyper-enhancing in the arterial phase around a
  hypodense core), **delayed-enhancing** (hypodense in arterial/portal phases, hyperdense in the delayed phase), and
  **faint heterogeneous hypodense** (−10…−25 HU, weaker than A's metastases). Sizes cover the same 4–10 mm radii.

Arms (all ``SynthTumorTrainer`` with the same plans, schedule, loss, misalignment and dropout; only the synthesis
differs):

* ``real``: p = 0 (real data only); the baseline;
* ``handcrafted``: p = 0.5, handcrafted synthesizer, statistics fitted from the training tumours;
* ``handcrafted_aligned``: the same with ``"misalign_synthetic": false`` (item 2 of issue 19: which default);
* ``diffusion``: p = 0.5, online latent diffusion (the preset's small models, trained once on the training tumours);
* ``pool``: p = 0.5, patches of a ``synth-pool`` made once with the same diffusion models.

Measured per run: nnU-Net's predictor on the test cases (mirroring on); ``nnunet_mm compare`` of every arm against
``real`` (tumour and liver Dice per case averaged over seeds, paired differences with a BCa bootstrap interval,
lesion-wise recall / false positives); training wall time, median ``train_step`` time, and the time spent in the
synthesis inside the step. Goal of issue 19: ≥ +8 tumour Dice points over ``real`` with the interval excluding 0.

    python bench/bench_synthesis.py --output bench_out/synthesis --preset gpu --device cuda     # full size
    python bench/bench_synthesis.py --output /tmp/synth --preset cpu                             # 2-core CPU box
    python bench/bench_synthesis.py --output /tmp/synth_smoke --smoke                            # runs everything

Output: ``OUTPUT/bench_synthesis.{json,md}``, ``OUTPUT/compare/compare.{json,md,png}``, per run
``OUTPUT/runs/<arm>/seed<k>/{run.json,predictions/}``, the models under ``OUTPUT/work/preprocessed/.../
nnunet_mm_synthesis/`` and ``OUTPUT/test_tumours.png`` (the foreign test tumours next to training tumours).
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import os
import shutil
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import benchlib

from nnunet_mm.io.console import encodable
from nnunet_mm.io.figure_style import figure_style

DATASET_ID = 740
DATASET_NAME = f"Dataset{DATASET_ID}_SynthBench"
PHASES = ("pv", "art", "del", "nc")
LIVER, TUMOUR = 1, 2


@dataclass(frozen=True)
class Preset:
    configuration: str
    shape: tuple[int, int, int]
    tumour_cases: int
    normal_cases: int
    test_cases: int
    epochs: int
    iterations: int
    base_features: int | None  # None: nnU-Net's planned widths; else a narrower U-Net (features base·2^i, max 320)
    autoencoder: dict  # train-autoencoder settings
    diffusion: dict  # train-diffusion settings
    pool_size: int


PRESETS = {
    # 24×64×64 volumes and 20 × 25 iterations: real-only predicted no tumour in 500 steps (validation pseudo Dice 0.0
    # throughout, test Dice 0.00); smaller volumes and more, cheaper steps instead
    "cpu": Preset("3d_fullres", (16, 48, 48), tumour_cases=5, normal_cases=10, test_cases=12, epochs=30,
                  iterations=50, base_features=16,
                  autoencoder=dict(steps=1500, batch_size=2, patch_size=(16, 32, 32), channels=(16, 32),
                                   latent_channels=4, norm_num_groups=8, adversarial_start=1000,
                                   discriminator_layers=2),
                  diffusion=dict(steps=3000, batch_size=4, patch_size=(16, 32, 32), channels=(32, 64),
                                 norm_num_groups=16, num_head_channels=16, num_inference_steps=10),
                  pool_size=150),
    "gpu": Preset("3d_fullres", (48, 128, 128), tumour_cases=5, normal_cases=20, test_cases=20, epochs=100,
                  iterations=250, base_features=None,
                  autoencoder=dict(steps=20000, batch_size=2, patch_size=(64, 64, 64), channels=(32, 64, 64),
                                   latent_channels=8, norm_num_groups=16, adversarial_start=2000,
                                   discriminator_layers=3),
                  diffusion=dict(steps=30000, batch_size=2, patch_size=(64, 64, 64), channels=(64, 128, 256),
                                 norm_num_groups=32, num_head_channels=32, num_inference_steps=50),
                  pool_size=2000),
}
SMOKE = Preset("3d_fullres", (16, 48, 48), tumour_cases=2, normal_cases=2, test_cases=2, epochs=1, iterations=2,
               base_features=8,
               autoencoder=dict(steps=4, batch_size=1, patch_size=(8, 16, 16), channels=(8, 8), latent_channels=2,
                                norm_num_groups=4, adversarial_start=2, discriminator_layers=1),
               diffusion=dict(steps=4, batch_size=1, patch_size=(8, 16, 16), channels=(8, 16), norm_num_groups=4,
                              num_head_channels=8, num_inference_steps=2),
               pool_size=3)


@dataclass(frozen=True)
class Arm:
    probability: float
    synthesizer: str = "handcrafted"
    misalign_synthetic: bool = True


ARMS = {  # in the order they run per seed: the costly online diffusion last
    "real": Arm(0.0),
    "handcrafted": Arm(0.5),
    "pool": Arm(0.5, "pool"),
    "handcrafted_aligned": Arm(0.5, misalign_synthetic=False),
    "diffusion": Arm(0.5, "diffusion"),
}

#: Phantom settings of every case (training, normal and test): low noise and several lesions per tumour case, so that
#: real-only training lands where a difference can show (with the phantom's defaults, 10–15 HU noise and 1–3
#: lesions, real-only predicted no tumour at all in 500 iterations: tumour Dice 0.00 on every test case).
PHANTOM = {"noise_std_hu": (5.0, 8.0), "num_lesions": (3, 6)}
#: Generator B's enhancement patterns: HU offset from the liver per phase (nc, art, pv, del), rim and core.
FOREIGN_PATTERNS = {
    "rim_enhancing": {"rim": (5.0, 70.0, 25.0, 10.0), "core": (-25.0, -35.0, -45.0, -40.0)},
    "delayed_enhancing": {"rim": (-15.0, -25.0, -10.0, 35.0), "core": (-15.0, -25.0, -10.0, 35.0)},
    "faint_hypodense": {"rim": (-10.0, -20.0, -25.0, -20.0), "core": (-10.0, -20.0, -25.0, -20.0)},
}


# ------------------------------------------------------------------------------------------------------------------
# data


def healed_case(seed: int, shape: tuple[int, int, int]):
    """(phantom case, images per phase on the reference grid with the tumours replaced by liver, label without
    tumour): a normal case."""
    import numpy as np
    from scipy import ndimage

    from nnunet_mm.phantom import HU_BY_TISSUE, PHASE_NAMES, make_case

    case = make_case(seed, shape_zyx=shape, phases=PHASES, **PHANTOM)
    rng = np.random.default_rng(seed)
    images = {}
    for phase in PHASES:
        image = case.image_on_reference_grid(phase).astype(np.float32)
        region = ndimage.binary_dilation(case.label_on_reference_grid(phase) == TUMOUR, iterations=2)
        liver_hu = HU_BY_TISSUE["liver"][PHASE_NAMES.index(phase)]
        image[region] = liver_hu + rng.normal(0.0, float(np.mean(PHANTOM["noise_std_hu"])), int(region.sum()))
        images[phase] = image
    label = np.where(case.label == TUMOUR, LIVER, case.label).astype(np.uint8)
    return case, images, label


def _foreign_mask(rng, liver, spacing, radius_mm):
    """One lobulated, irregular lesion mask inside ``liver`` (generator B's shape), or None."""
    import numpy as np
    from scipy import ndimage

    spacing = np.asarray(spacing, float)
    eroded = ndimage.binary_erosion(liver, iterations=2)
    candidates = np.flatnonzero(eroded)
    if not len(candidates):
        return None
    centre = np.array(np.unravel_index(rng.choice(candidates), liver.shape), float)
    grid = np.stack(np.meshgrid(*[np.arange(n) for n in liver.shape], indexing="ij"), -1).astype(float)
    mask = np.zeros(liver.shape, bool)
    for _ in range(int(rng.integers(2, 6))):  # 2–5 overlapping balls around the centre
        offset_mm = rng.normal(0.0, 0.5 * radius_mm, 3)
        ball_radius = radius_mm * rng.uniform(0.4, 0.8)
        distance = np.sqrt((((grid - centre) * spacing - offset_mm) ** 2).sum(-1))
        mask |= distance <= ball_radius
    noise = ndimage.gaussian_filter(rng.standard_normal(liver.shape), 1.2)
    boundary = ndimage.binary_dilation(mask, iterations=1) & ~ndimage.binary_erosion(mask, iterations=1)
    mask = (mask & ~(boundary & (noise < -0.1))) | (boundary & (noise > 0.25))  # irregular edge
    mask = ndimage.binary_opening(mask)
    if mask.sum() < 8 or (mask & liver).sum() < 0.9 * mask.sum():
        return None
    return mask & liver


def paint_foreign_tumours(images: dict, label, case, rng, *, num_lesions: tuple[int, int] = (1, 3),
                          lesion_masks: list | None = None):
    """Paint generator B's lesions (module docstring) into a healed case, in place; returns (label with tumour,
    the pattern of every lesion); ``lesion_masks``, when given, receives every lesion's mask. Each phase gets the lesion moved by the shift of that phase's liver centroid
    (the phases are misregistered like the training phantoms)."""
    import numpy as np
    from scipy import ndimage

    from nnunet_mm.phantom import PHASE_NAMES

    spacing = case.reference_geometry.spacing_zyx_mm
    liver = label == LIVER
    label = label.copy()
    patterns = []
    centroid = np.array(ndimage.center_of_mass(liver))
    shifts = {phase: np.round(np.array(ndimage.center_of_mass(case.label_on_reference_grid(phase) > 0))
                              - centroid).astype(int) for phase in PHASES}
    for _ in range(int(rng.integers(num_lesions[0], num_lesions[1] + 1))):
        for _attempt in range(40):
            mask = _foreign_mask(rng, liver & (label != TUMOUR), spacing, rng.uniform(4.0, 10.0))
            if mask is not None and not ndimage.binary_dilation(label == TUMOUR, iterations=2)[mask].any():
                break
        else:
            continue
        pattern = list(FOREIGN_PATTERNS)[int(rng.integers(len(FOREIGN_PATTERNS)))]
        patterns.append(pattern)
        depth = ndimage.distance_transform_edt(mask, sampling=spacing)
        rim = mask & (depth <= 0.35 * depth.max() + 0.5)
        texture = ndimage.gaussian_filter(rng.standard_normal(mask.shape), 1.5)
        texture *= rng.uniform(8.0, 20.0) / max(float(texture[mask].std()), 1e-6)
        for phase in PHASES:
            column = PHASE_NAMES.index(phase)
            offset = np.where(rim, FOREIGN_PATTERNS[pattern]["rim"][column], FOREIGN_PATTERNS[pattern]["core"][column])
            offset = np.where(mask, offset + texture, 0.0)
            offset = ndimage.gaussian_filter(offset, 0.7)  # partial volume at the edge, as the phantom's
            images[phase] += np.roll(offset, tuple(shifts[phase]), axis=(0, 1, 2))
        label[mask] = TUMOUR
        if lesion_masks is not None:
            lesion_masks.append(mask)
    return label, patterns


def write_dataset(raw: Path, preset: Preset, *, seed: int, test_seed: int) -> Path:
    """The raw dataset of the module docstring; returns its folder."""
    import numpy as np
    import SimpleITK as sitk
    from tqdm import tqdm

    from nnunet_mm.phantom import case_seed, write_nnunet_raw

    folder = write_nnunet_raw(raw, dataset_id=DATASET_ID, name="SynthBench", num_training=preset.tumour_cases,
                              num_test=0, seed=seed, shape_zyx=tuple(preset.shape), phases=PHASES, overwrite=True,
                              **PHANTOM)

    def write(identifier: str, case, images: dict, label, images_folder: str, labels_folder: str) -> None:
        (folder / images_folder).mkdir(exist_ok=True)
        (folder / labels_folder).mkdir(exist_ok=True)
        for channel, phase in enumerate(PHASES):
            sitk.WriteImage(case.reference_geometry.to_sitk(np.round(images[phase]).astype(np.int16)),
                            str(folder / images_folder / f"{identifier}_{channel:04d}.nii.gz"), useCompression=True)
        sitk.WriteImage(case.reference_geometry.to_sitk(label.astype(np.uint8)),
                        str(folder / labels_folder / f"{identifier}.nii.gz"), useCompression=True)

    for index in tqdm(range(preset.normal_cases), desc="normal cases", unit="case"):
        case, images, label = healed_case(case_seed(seed + 1, index), tuple(preset.shape))
        write(f"normal_{index:03d}", case, images, label, "imagesTr", "labelsTr")
    patterns = {}
    for index in tqdm(range(preset.test_cases), desc="test cases (foreign tumours)", unit="case"):
        case_seed_value = case_seed(test_seed, index)
        case, images, label = healed_case(case_seed_value, tuple(preset.shape))
        label, patterns[f"test_{index:03d}"] = paint_foreign_tumours(
            images, label, case, np.random.default_rng([test_seed, index, 7]), num_lesions=(2, 4))
        write(f"test_{index:03d}", case, images, label, "imagesTs", "labelsTs")
    dataset_json = json.loads((folder / "dataset.json").read_text(encoding="utf-8"))
    dataset_json["numTraining"] = preset.tumour_cases + preset.normal_cases
    (folder / "dataset.json").write_text(json.dumps(dataset_json, indent=2), encoding="utf-8")
    (folder / "test_tumour_patterns.json").write_text(json.dumps(patterns, indent=2), encoding="utf-8")
    return folder


def foreign_lesions(preset: Preset, test_seed: int) -> list[tuple[str, str, object]]:
    """(case, pattern, mask) of every test lesion, regenerated exactly as :func:`write_dataset` made them."""
    import numpy as np

    from nnunet_mm.phantom import case_seed

    lesions = []
    for index in range(preset.test_cases):
        case, images, label = healed_case(case_seed(test_seed, index), tuple(preset.shape))
        masks: list = []
        _, patterns = paint_foreign_tumours(images, label, case, np.random.default_rng([test_seed, index, 7]),
                                            num_lesions=(2, 4), lesion_masks=masks)
        lesions += [(f"test_{index:03d}", pattern, mask) for pattern, mask in zip(patterns, masks)]
    return lesions


def detection_by_pattern(lesions: list, records: list[dict], output: Path) -> dict:
    """Per arm and generator-B pattern: the share of test lesions the predictions touch (pooled over seeds) and
    the mean share of each lesion's voxels predicted as tumour."""
    import numpy as np
    import SimpleITK as sitk

    table: dict = {}
    for record in records:
        folder = output / "runs" / record["arm"] / f"seed{record['seed']}" / "predictions"
        predictions = {}
        for case, pattern, mask in lesions:
            if case not in predictions:
                predictions[case] = sitk.GetArrayFromImage(sitk.ReadImage(str(folder / f"{case}.nii.gz"))) == TUMOUR
            covered = float(predictions[case][mask].mean())
            entry = table.setdefault(record["arm"], {}).setdefault(pattern, {"lesions": 0, "detected": 0,
                                                                              "covered": []})
            entry["lesions"] += 1
            entry["detected"] += int(covered > 0)
            entry["covered"].append(covered)
    return {arm: {pattern: {"lesions": e["lesions"], "recall": round(e["detected"] / e["lesions"], 3),
                            "mean_covered": round(float(np.mean(e["covered"])), 3)}
                  for pattern, e in sorted(by_pattern.items())} for arm, by_pattern in table.items()}


def prepare_data(preset: Preset, *, seed: int, test_seed: int, num_processes: int, device: str,
                 models: bool = True) -> None:
    """Write the data, plan once (narrower U-Net for the CPU preset), preprocess, and (``models``) train the
    diffusion models and write the pool; each part skipped when it was done with the same settings."""
    from batchgenerators.utilities.file_and_folder_operations import load_json, save_json
    from nnunetv2.experiment_planning.plan_and_preprocess_api import (extract_fingerprints, plan_experiments,
                                                                       preprocess)

    raw = Path(os.environ["nnUNet_raw"])
    preprocessed = Path(os.environ["nnUNet_preprocessed"]) / DATASET_NAME
    marker = Path(os.environ["nnUNet_preprocessed"]) / "bench_synthesis_data.json"
    settings = json.loads(json.dumps({"preset": asdict(preset), "seed": seed, "test_seed": test_seed,
                                      "phantom": PHANTOM, "foreign": FOREIGN_PATTERNS}))
    if not (marker.is_file() and json.loads(marker.read_text(encoding="utf-8")) == settings):
        write_dataset(raw, preset, seed=seed, test_seed=test_seed)
        extract_fingerprints([DATASET_ID], num_processes=num_processes)
        plan_experiments([DATASET_ID])
        plans_file = preprocessed / "nnUNetPlans.json"
        plans = load_json(str(plans_file))
        if preset.base_features:
            arch = plans["configurations"][preset.configuration]["architecture"]["arch_kwargs"]
            arch["features_per_stage"] = [min(preset.base_features * 2 ** i, 320) for i in range(arch["n_stages"])]
        save_json(plans, str(plans_file), sort_keys=False)
        preprocess([DATASET_ID], configurations=(preset.configuration,), num_processes=(num_processes,))
        for stale in ("nnunet_mm_synthesis",):
            shutil.rmtree(preprocessed / stale, ignore_errors=True)
        marker.write_text(json.dumps(settings), encoding="utf-8")
    if models:
        train_synthesis_models(preset, device)


def _nnunet_mm(*arguments: str) -> None:
    import subprocess

    command = [str(Path(sys.executable).with_name("nnunet_mm")), *arguments]
    print("[bench_synthesis] " + " ".join(command), flush=True)
    subprocess.run(command, check=True)


def train_synthesis_models(preset: Preset, device: str) -> dict:
    """Autoencoder, latent diffusion model and pool, each once (through the user's commands); their wall times."""
    preprocessed = Path(os.environ["nnUNet_preprocessed"]) / DATASET_NAME
    models = preprocessed / "nnunet_mm_synthesis"
    times_file = models / "bench_times.json"
    times = json.loads(times_file.read_text(encoding="utf-8")) if times_file.is_file() else {}
    common = ["-d", str(DATASET_ID), "-c", preset.configuration, "-device", device]
    a, d = preset.autoencoder, preset.diffusion
    steps = [
        ("autoencoder", models / "autoencoder", ["train-autoencoder", *common, "--steps", str(a["steps"]),
                                                 "--batch-size", str(a["batch_size"]), "--patch-size",
                                                 *map(str, a["patch_size"]), "--channels", *map(str, a["channels"]),
                                                 "--latent-channels", str(a["latent_channels"]), "--norm-groups",
                                                 str(a["norm_num_groups"]), "--adversarial-start",
                                                 str(a["adversarial_start"]), "--discriminator-layers",
                                                 str(a["discriminator_layers"]), "--checkpoint-every", "100000"]),
        ("diffusion", models / "latent_diffusion", ["train-diffusion", *common, "--steps", str(d["steps"]),
                                                    "--batch-size", str(d["batch_size"]), "--patch-size",
                                                    *map(str, d["patch_size"]), "--channels",
                                                    *map(str, d["channels"]), "--norm-groups",
                                                    str(d["norm_num_groups"]), "--head-channels",
                                                    str(d["num_head_channels"]), "--inference-steps",
                                                    str(d["num_inference_steps"]), "--checkpoint-every", "100000"]),
        ("pool", models / f"pool_{preset.configuration}", ["synth-pool", *common, "-n", str(preset.pool_size)]),
    ]
    for name, folder, arguments in steps:
        if name in times and folder.is_dir():
            continue
        start = time.perf_counter()
        _nnunet_mm(*arguments, "--overwrite")
        times[name] = round(time.perf_counter() - start, 1)
        times_file.parent.mkdir(parents=True, exist_ok=True)
        times_file.write_text(json.dumps(times, indent=2), encoding="utf-8")
    return times


# ------------------------------------------------------------------------------------------------------------------
# runs


class SynthesisTimer:
    """Times ``SynthTumorTrainer.insert_synthetic_tumours`` (CUDA-synchronised) per step."""

    def __init__(self):
        self.seconds_per_step: list[float] = []
        self.seconds_when_active: list[float] = []

    def __enter__(self):
        import torch

        from nnunet_mm.synthesis.trainer import SynthTumorTrainer

        self.original = original = SynthTumorTrainer.insert_synthetic_tumours
        timer = self

        def timed(trainer, data, targets):
            if trainer.device.type == "cuda":
                torch.cuda.synchronize(trainer.device)
            start = time.perf_counter()
            result = original(trainer, data, targets)
            if trainer.device.type == "cuda":
                torch.cuda.synchronize(trainer.device)
            elapsed = time.perf_counter() - start
            timer.seconds_per_step.append(elapsed)
            if result[2].any():
                timer.seconds_when_active.append(elapsed)
            return result

        SynthTumorTrainer.insert_synthetic_tumours = timed
        return self

    def __exit__(self, *exc) -> None:
        from nnunet_mm.synthesis.trainer import SynthTumorTrainer

        SynthTumorTrainer.insert_synthetic_tumours = self.original


def run_arm(name: str, seed: int, preset: Preset, output: Path, device: str) -> dict:
    """Train one arm with one seed (skipped when its run.json exists) and predict the test cases."""
    folder = output / "runs" / name / f"seed{seed}"
    if (folder / "run.json").is_file():
        return json.loads((folder / "run.json").read_text(encoding="utf-8"))
    shutil.rmtree(folder, ignore_errors=True)
    record = run_arm_training(name, seed, preset, folder, device)
    raw = Path(os.environ["nnUNet_raw"]) / DATASET_NAME
    start = time.perf_counter()
    benchlib.predict_folder(folder / "model", raw / "imagesTs", folder / "predictions", device_name=device)
    record["predict_seconds"] = round(time.perf_counter() - start, 1)
    (folder / "run.json").write_text(json.dumps(record, indent=2), encoding="utf-8")
    print(json.dumps(record), flush=True)
    return record


def run_arm_training(name: str, seed: int, preset: Preset, folder: Path, device: str) -> dict:
    """Train one arm with one seed into ``folder/model``; its record (timing, synthesis cost)."""
    import numpy as np

    from nnunet_mm.settings import read_settings
    from nnunet_mm.synthesis.settings import SYNTHESIS_KEY

    arm = ARMS[name]
    preprocessed = Path(os.environ["nnUNet_preprocessed"]) / DATASET_NAME
    dataset_json = json.loads((preprocessed / "dataset.json").read_text(encoding="utf-8"))
    settings = read_settings(dataset_json, str(preprocessed / "dataset.json")).method(SYNTHESIS_KEY)
    attributes = {"synthetic_probability": arm.probability,
                  "synthesis_settings": dataclasses.replace(settings, synthesizer=arm.synthesizer,
                                                            misalign_synthetic=arm.misalign_synthetic)}
    with SynthesisTimer() as timer:
        trainer, timing, _ = benchlib.train("SynthTumorTrainer", DATASET_NAME, device_name=device,
                                            epochs=preset.epochs, iterations=preset.iterations,
                                            configuration=preset.configuration, attributes=attributes, seed=seed,
                                            output_folder_base=folder / "model")
    return {"arm": name, "seed": seed, **asdict(arm), **timing,
            "synthesis_ms_mean_per_step": round(1000 * float(np.mean(timer.seconds_per_step)), 2)
            if timer.seconds_per_step else None,
            "synthesis_ms_median_when_active": round(1000 * float(np.median(timer.seconds_when_active)), 2)
            if timer.seconds_when_active else None}


def measure_costs(arms: list[str], steps: int, preset: Preset, output: Path, device: str) -> int:
    """Time ``steps`` training steps of each arm (seed 0, nothing predicted): median step and mean synthesis time per
    step, into ``OUTPUT/costs.json`` and a printed table (online vs pooled synthesis)."""
    costs = {}
    for name in arms:
        short = dataclasses.replace(preset, epochs=1, iterations=steps)
        folder = output / "costs" / name
        shutil.rmtree(folder, ignore_errors=True)
        record = run_arm_training(name, 0, short, folder, device)
        costs[name] = record
    (output / "costs.json").write_text(json.dumps(costs, indent=2), encoding="utf-8")
    lines = ["| arm | steps | step ms (median) | synthesis ms per step (mean) | synthesis ms when active (median) |",
             "|---|---|---|---|---|"]
    for name, r in costs.items():
        lines.append(f"| {name} | {r['steps']} | {r['step_ms_median']} | {r['synthesis_ms_mean_per_step']} | "
                     f"{r['synthesis_ms_median_when_active']} |")
    print("\n".join(lines))
    return 0


def compare_runs(arms: list[str], seeds: list[int], output: Path, *, baseline: str = "real",
                 folder: str = "compare") -> dict | None:
    """``nnunet_mm compare`` of every arm against ``baseline`` over the runs that exist, into ``OUTPUT/folder``."""
    from nnunet_mm.evaluation.compare import compare_arms
    from nnunet_mm.evaluation.report import comparison_json, write_report
    from nnunet_mm.evaluation.runs import collect_arm

    raw = Path(os.environ["nnUNet_raw"]) / DATASET_NAME
    runs = {arm: [output / "runs" / arm / f"seed{s}" / "predictions" for s in seeds
                  if (output / "runs" / arm / f"seed{s}" / "run.json").is_file()] for arm in arms}
    runs = {arm: folders for arm, folders in runs.items() if folders}
    if baseline not in runs or len(runs) < 2:
        return None
    collected = [collect_arm(arm, folders, dataset_json=raw / "dataset.json") for arm, folders in runs.items()]
    comparison = compare_arms(collected, raw / "labelsTs", baseline=baseline, dataset_json=raw / "dataset.json",
                              progress=False)
    write_report(comparison, output / folder, overwrite=True)
    return comparison_json(comparison)


def _summary_cell(summary: dict | None) -> str:
    if summary is None or summary.get("dice_mean") is None:
        return "–"
    text = f"{summary['dice_mean']:.3f}"
    difference = summary.get("difference_to_baseline")
    if difference and difference.get("mean") is not None:
        low, high = difference["ci_low"], difference["ci_high"]
        text += f" ({100 * difference['mean']:+.1f} pt" + ("" if low is None else
                                                            f" [{100 * low:+.1f}, {100 * high:+.1f}]") + ")"
    return text


def overview(comparison: dict, records: list[dict], times: dict) -> list[str]:
    lines = ["| arm | runs | tumour Dice (Δ vs real [95 % CI]) | liver Dice (Δ) | tumour recall · FP/case | "
             "train min | step s (median) | synthesis ms/step (mean) |", "|---|---|---|---|---|---|---|---|"]
    for arm, tumour in comparison["summary"]["tumor"].items():
        runs = [r for r in records if r["arm"] == arm]
        liver = comparison["summary"]["liver"].get(arm)
        mean = (lambda key: sum(r[key] for r in runs if r.get(key) is not None)
                / max(1, sum(1 for r in runs if r.get(key) is not None)))
        lines.append(f"| {arm} | {tumour['num_runs']} | {_summary_cell(tumour)} | {_summary_cell(liver)} | "
                     f"{tumour['lesion_recall']:.2f} · {tumour['false_positives_per_case']:.2f} | "
                     f"{mean('train_seconds') / 60:.1f} | {mean('step_ms_median') / 1000:.2f} | "
                     f"{mean('synthesis_ms_mean_per_step'):.0f} |")
    if times:
        lines += ["", "One-off costs: " + ", ".join(f"{k} {v:.0f} s" for k, v in times.items())]
    return lines


@figure_style()
def save_test_tumour_figure(output: Path) -> None:
    """Training tumours (generator A) next to the foreign test tumours (generator B), every phase."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    import SimpleITK as sitk

    raw = Path(os.environ["nnUNet_raw"]) / DATASET_NAME
    rows = []
    for images, labels, count in (("imagesTr", "labelsTr", 2), ("imagesTs", "labelsTs", 3)):
        for label_file in sorted((raw / labels).glob("*.nii.gz")):
            label = sitk.GetArrayFromImage(sitk.ReadImage(str(label_file)))
            if (label == TUMOUR).any() and sum(r[0] == images for r in rows) < count:
                z = int(np.argmax((label == TUMOUR).sum((1, 2))))
                case = label_file.name[:-7]
                phases = [sitk.GetArrayFromImage(sitk.ReadImage(str(raw / images / f"{case}_{c:04d}.nii.gz")))[z]
                          for c in range(len(PHASES))]
                rows.append((images, case, z, phases, label[z] == TUMOUR))
    fig, axes = plt.subplots(len(rows), len(PHASES), figsize=(2.2 * len(PHASES), 2.3 * len(rows)), squeeze=False)
    for row, (where, case, z, phases, mask) in enumerate(rows):
        for column, image in enumerate(phases):
            axes[row, column].imshow(image, cmap="gray", vmin=-50, vmax=250)
            axes[row, column].contour(mask, levels=[0.5], colors="orange", linewidths=0.6)
            axes[row, column].set_title(f"{'train' if where == 'imagesTr' else 'TEST'} {case} z{z} {PHASES[column]}",
                                        fontsize=7)
            axes[row, column].axis("off")
    fig.suptitle("training tumours (phantom generator A) vs held-out test tumours (generator B); orange: tumour",
                 fontsize=8)
    fig.tight_layout()
    fig.savefig(output / "test_tumours.png", dpi=90)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--preset", choices=sorted(PRESETS), default="cpu")
    parser.add_argument("--output", type=Path, required=True, help="work and result folder (reused: finished runs "
                                                                   "are not repeated)")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--arms", nargs="+", choices=list(ARMS), default=list(ARMS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--data-seed", type=int, default=11, help="generator seed of the training cases")
    parser.add_argument("--test-seed", type=int, default=12, help="generator seed of the test cases")
    parser.add_argument("--smoke", action="store_true", help="tiny data, models and schedule: checks that it runs")
    parser.add_argument("-np", type=int, default=2, help="processes for planning and preprocessing")
    parser.add_argument("--report-only", action="store_true", help="train nothing: compare the runs that exist")
    parser.add_argument("--cost-steps", type=int, default=None,
                        help="only time N training steps of each arm (seed 0): step and synthesis cost, no Dice")
    args = parser.parse_args(argv)

    preset = SMOKE if args.smoke else PRESETS[args.preset]
    args.output.mkdir(parents=True, exist_ok=True)
    benchlib.set_nnunet_paths(args.output / "work")
    prepare_data(preset, seed=args.data_seed, test_seed=args.test_seed, num_processes=args.np, device=args.device,
                 models=bool({"diffusion", "pool"} & set(args.arms)))
    save_test_tumour_figure(args.output)
    if args.cost_steps:
        return measure_costs(args.arms, args.cost_steps, preset, args.output, args.device)
    for seed in [] if args.report_only else args.seeds:  # seed by seed: a stopped run still has complete seeds
        for arm in args.arms:
            print(f"[bench_synthesis] {arm} / seed {seed}", flush=True)
            run_arm(arm, seed, preset, args.output, args.device)
    records = [json.loads(f.read_text(encoding="utf-8")) for f in sorted((args.output / "runs").glob("*/seed*/run.json"))]
    comparison = compare_runs(list(ARMS), args.seeds, args.output)
    by_pattern = detection_by_pattern(foreign_lesions(preset, args.test_seed),
                                      [r for r in records if r["seed"] in args.seeds], args.output)
    # item 2 of issue 19: synthetic samples misaligned (default) or kept aligned, paired against each other
    misalignment = compare_runs(["handcrafted", "handcrafted_aligned"], args.seeds, args.output,
                                baseline="handcrafted", folder="compare_misalign_synthetic")
    times_file = Path(os.environ["nnUNet_preprocessed"]) / DATASET_NAME / "nnunet_mm_synthesis" / "bench_times.json"
    times = json.loads(times_file.read_text(encoding="utf-8")) if times_file.is_file() else {}
    report = {"command": " ".join(sys.argv), "preset": asdict(preset), "data_seed": args.data_seed,
              "test_seed": args.test_seed, "one_off_seconds": times, "runs": records, "comparison": comparison,
              "misalign_synthetic_comparison": misalignment, "detection_by_pattern": by_pattern}
    (args.output / "bench_synthesis.json").write_text(json.dumps(report, indent=2, default=str), encoding="utf-8")
    lines = [f"# Synthetic-tumour experiment ({'smoke' if args.smoke else args.preset} preset)", ""]
    if comparison is not None:
        lines += overview(comparison, records, times) + ["", (args.output / "compare" / "compare.md").read_text(encoding="utf-8")]
    if by_pattern:
        patterns = sorted({p for per_arm in by_pattern.values() for p in per_arm})
        lines += ["", "## Test lesions by generator-B pattern: recall (share of lesions touched) · mean share of "
                      "each lesion's voxels predicted as tumour, pooled over seeds", "",
                  "| arm | " + " | ".join(patterns) + " |", "|---|" + "---|" * len(patterns)]
        for arm, per_pattern in by_pattern.items():
            cells = [f"{per_pattern[p]['recall']:.2f} · {per_pattern[p]['mean_covered']:.2f} "
                     f"(n={per_pattern[p]['lesions']})" if p in per_pattern else "–" for p in patterns]
            lines.append(f"| {arm} | " + " | ".join(cells) + " |")
    if misalignment is not None:
        lines += ["", "## Synthetic samples misaligned (handcrafted) vs kept aligned (handcrafted_aligned)", "",
                  (args.output / "compare_misalign_synthetic" / "compare.md").read_text(encoding="utf-8")]
    (args.output / "bench_synthesis.md").write_text("\n".join(lines), encoding="utf-8")
    print(encodable("\n".join(lines)))
    return 0


if __name__ == "__main__":
    from nnunet_mm.io.console import tolerate_unencodable_output

    tolerate_unencodable_output()
    sys.exit(main())
