"""The atlas-prior experiment (paper 004, issue 21): does a multi-atlas prior channel help nnU-Net segment a target of
another modality when few targets are labelled, with the priors of new patients made at prediction time?

Data (``nnunet_mm.atlas.phantom_pairs``): labelled CT phantoms are the atlases; targets are other phantoms rendered
MR-like (non-monotonic intensity map, bias field, noise) and moved by known smooth deformations. Up to 10 labelled
training targets; held-out test targets are other phantoms (another generator stream) whose images reach the models
the way a new patient's do: image channel only, in a folder of their own.

Priors (one channel, the organ the atlases label; no tumour channel, :func:`nnunet_mm.atlas.mas.choose_prior_classes`):

* ``mas``: SimpleITK MI registration (rigid → affine → B-spline, the settings of ``nnunet_mm mas``) of K atlases to
  each target, majority fusion; built once for the training targets (``build_mas_dataset``);
* ``learned``: BiRegNet registration trained on the atlases and the N labelled targets of that arm only
  (``train_learned_mas``, fold ``all`` of the N-case dataset), priors from the frozen network, majority fusion;
* ``oracle``: the target's own organ label, shifted (2 voxels in-plane, 1 through-plane, random direction per case)
  and blurred (Gaussian, σ 1.5 voxels): the ceiling of what a good prior can give, not a method.

For ``mas`` and ``learned`` the test targets' priors are made at prediction time by
:func:`nnunet_mm.inference.predict_with_missing_channels` with the model's :func:`~nnunet_mm.atlas.predict.
atlas_prior_channels` (what ``nnunet_mm predict`` does): the model folder's recipe registers the recorded atlases to
each new image. The priors are computed once per recipe and reused by the other runs of the same recipe through
the predictor's own cache (the ``atlas_priors`` folder is copied; the cache checks recipe and image SHA-256).

Arms, for N = 1, 3, 10 labelled targets (the first N), each over ``--seeds``:

==========  ===========================================================================
``image``   stock ``nnUNetTrainer`` on the target image alone (baseline)
``mas``     ``MASPriorTrainer`` on image + SimpleITK MAS prior
``learned`` ``MASPriorTrainer`` on image + learned-registration prior
``oracle``  ``MASPriorTrainer`` on image + oracle prior
==========  ===========================================================================

Ablation (``--arms mas_no_dropout``): ``mas`` without prior dropout (the trainer's ``prior_dropout_probability`` 0
instead of the default 0.3), so every training sample carries its prior.

Planning happens once, on the MAS dataset with 10 targets (2d configuration, nnU-Net's planner); every other dataset
is preprocessed with a copy of those plans (the image-only datasets with the image channel's normalisation only), so
every arm trains the same U-Net on the same patches and schedule. ``nnunet_mm compare`` (paired bootstrap over test
cases, per-case Dice averaged over seeds) compares each arm with ``image`` at each N, on the organ (liver).

    python bench/bench_mas_priors.py --output bench_out/mas_priors                       # CPU preset, 3 seeds
    python bench/bench_mas_priors.py --output bench_out/mas_priors_gpu --preset gpu --device cuda
    python bench/bench_mas_priors.py --output /tmp/mas_smoke --preset smoke              # a minute, every stage once

Runs already predicted are skipped (the experiment continues where it stopped). Output in ``--output``:
``bench_mas_priors.json`` (settings, prior quality, timings, every comparison), ``bench_mas_priors.md`` (the table),
``compare/N<n>/compare.{json,md,png}``.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import benchlib

ATLAS_ID, TARGET_ID, MAS_FULL_ID = 751, 752, 753
ARMS = ("image", "mas", "learned", "oracle", "mas_no_dropout")
DEFAULT_ARMS = ARMS[:4]
#: ablation arms: (dataset of, trainer attributes)
ABLATIONS = {"mas_no_dropout": ("mas", {"prior_dropout_probability": 0.0})}
ARM_BASE_ID = {"image": 760, "mas": 770, "learned": 780, "oracle": 790}  # + index of N
LIVER = 1
CONFIGURATION = "2d"


@dataclass(frozen=True)
class Preset:
    shape: tuple[int, int, int]
    num_atlases: int
    num_test: int
    labelled: tuple[int, ...]
    epochs: int
    iterations: int
    registration_iterations: int
    bspline_iterations: int
    learned_iterations: int


PRESETS = {
    "cpu": Preset((24, 64, 64), num_atlases=5, num_test=8, labelled=(1, 3, 10), epochs=15, iterations=25,
                  registration_iterations=100, bspline_iterations=50, learned_iterations=600),
    "gpu": Preset((48, 128, 128), num_atlases=10, num_test=20, labelled=(1, 3, 10), epochs=100, iterations=250,
                  registration_iterations=100, bspline_iterations=50, learned_iterations=3000),
    "smoke": Preset((16, 32, 32), num_atlases=2, num_test=2, labelled=(1, 2), epochs=1, iterations=2,
                    registration_iterations=5, bspline_iterations=2, learned_iterations=4),
}


def dataset_name(dataset_id: int) -> str:
    from nnunetv2.utilities.dataset_name_id_conversion import convert_id_to_dataset_name

    return convert_id_to_dataset_name(dataset_id)


# ------------------------------------------------------------------------------------------------------------------
# data


def write_data(preset: Preset, output: Path, data_seed: int = 7) -> tuple[Path, Path]:
    """Atlases, labelled targets and held-out test targets (``output/test/{images,labels}``)."""
    from nnunet_mm.atlas.phantom_pairs import write_cross_modality_datasets

    raw = Path(os.environ["nnUNet_raw"])
    atlas, target = write_cross_modality_datasets(
        raw, atlas_id=ATLAS_ID, target_id=TARGET_ID, num_atlases=preset.num_atlases,
        num_target_training=max(preset.labelled), num_target_test=preset.num_test, shape_zyx=preset.shape,
        spacing_zyx_mm=(3.0, 1.5, 1.5), seed=data_seed)
    test = output / "test"
    test.mkdir(parents=True, exist_ok=True)
    shutil.move(str(target / "imagesTs"), str(test / "images"))
    shutil.move(str(target / "labelsTs"), str(test / "labels"))
    return atlas, target


def subset_dataset(source: Path, dataset_id: int, cases: list[str], *, prior_files: dict[str, Path] | None = None,
                   drop_recipe: bool = False) -> Path:
    """A copy of raw dataset ``source`` with only ``cases`` (imagesTr/labelsTr), renamed ``dataset_id``;
    ``prior_files`` (case → file) replace the prior channel 1 of each case (the oracle)."""
    raw = Path(os.environ["nnUNet_raw"])
    name = f"Dataset{dataset_id:03d}_{source.name.split('_', 1)[1]}N{len(cases)}"
    target = raw / name
    shutil.rmtree(target, ignore_errors=True)
    (target / "imagesTr").mkdir(parents=True)
    (target / "labelsTr").mkdir()
    dataset_json = json.loads((source / "dataset.json").read_text(encoding="utf-8"))
    ending = dataset_json["file_ending"]
    for case in cases:
        for image in sorted((source / "imagesTr").glob(f"{case}_*{ending}")):
            shutil.copy2(image, target / "imagesTr" / image.name)
        shutil.copy2(source / "labelsTr" / f"{case}{ending}", target / "labelsTr" / f"{case}{ending}")
        if prior_files is not None:
            shutil.copy2(prior_files[case], target / "imagesTr" / f"{case}_0001{ending}")
    dataset_json["numTraining"] = len(cases)
    dataset_json["name"] = name
    if drop_recipe:
        dataset_json["nnunet_mm"].pop("mas_priors", None)
        dataset_json["nnunet_mm"].pop("registration", None)
        dataset_json["nnunet_mm"]["notes"] = ["channel 1: oracle prior (the true liver label shifted and blurred), "
                                              "bench_mas_priors.py"]
    (target / "dataset.json").write_text(json.dumps(dataset_json, indent=2), encoding="utf-8")
    return target


def oracle_prior(label_file: Path, output_file: Path, *, seed: int) -> Path:
    """The true organ label shifted (2 voxels in-plane, 1 through-plane, random signs) and blurred (σ 1.5 voxels),
    as a float prior on the label's grid."""
    import numpy as np
    import SimpleITK as sitk
    from scipy import ndimage

    reference = sitk.ReadImage(str(label_file))
    organ = (sitk.GetArrayFromImage(reference) == LIVER).astype(np.float32)
    signs = np.random.default_rng(seed).choice([-1, 1], size=3)
    shifted = ndimage.shift(organ, signs * np.array([1, 2, 2]), order=0, mode="constant")
    prior = np.clip(ndimage.gaussian_filter(shifted, 1.5), 0, 1).astype(np.float32)
    image = sitk.GetImageFromArray(prior)
    image.CopyInformation(reference)
    output_file.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(image, str(output_file), True)
    return output_file


def prior_dice(prior_files: dict[str, Path], label_folder: Path) -> float:
    """Mean Dice of the prior thresholded at 0.5 against the true organ label."""
    import numpy as np
    import SimpleITK as sitk

    from nnunet_mm.evaluation.metrics import dice

    values = [dice(sitk.GetArrayFromImage(sitk.ReadImage(str(label_folder / f"{case}.nii.gz"))) == LIVER,
                   sitk.GetArrayFromImage(sitk.ReadImage(str(file))) >= 0.5)
              for case, file in sorted(prior_files.items())]
    return round(float(np.mean(values)), 4)


def prepare(preset: Preset, output: Path, device: str, num_processes: int, *, data_seed: int = 7,
            learned_for: tuple[int, ...] = ()) -> dict:
    """Write every dataset, build the priors, plan once, preprocess everything; skipped when done (a marker).

    ``data_seed`` is the phantom generator's seed (7 for the reported experiment; another seed is a replicate on new
    atlases, targets and test targets). The learned networks (one per N, the costliest step) are built only for the N
    in ``learned_for``, and added to a prepared folder when a later run asks for them (preprocessed with the same
    plans).
    """
    marker = output / "prepared.json"
    if marker.is_file():
        record = json.loads(marker.read_text(encoding="utf-8"))
        if record.get("data_seed", 7) != data_seed:
            raise SystemExit(f"{output} was prepared with --data-seed {record.get('data_seed', 7)}; use another "
                             f"--output for seed {data_seed}")
    else:
        record = prepare_without_learned(preset, output, num_processes, data_seed)
        marker.write_text(json.dumps(record, indent=2), encoding="utf-8")
    missing = [n for n in learned_for if n not in learned_built(record)]
    if missing:
        names = [build_learned(record, preset, output, device, n) for n in missing]
        preprocess_with_shared_plans(record, names, num_processes)
        record["learned_built"] = sorted(learned_built(record) + missing)
        marker.write_text(json.dumps(record, indent=2), encoding="utf-8")
    return record


def learned_built(record: dict) -> list[int]:
    """The N whose learned prior datasets exist (older records say ``true`` for every N of the preset)."""
    built = record.get("learned_built", True)
    if built is True:
        return list(record["preset"]["labelled"])
    return [] if built is False else list(built)


def prepare_without_learned(preset: Preset, output: Path, num_processes: int, data_seed: int) -> dict:
    """Data, the SimpleITK MAS priors, the oracle priors, the image/mas/oracle dataset of every N, plans, and
    preprocessing."""
    from nnunet_mm.atlas.mas import MASSettings, SimpleITKRegistration, build_mas_dataset
    from nnunet_mm.atlas.registration import RegistrationSettings

    record: dict = {"preset": asdict(preset), "data_seed": data_seed, "learned_built": [], "datasets": {},
                    "seconds": {}, "prior_dice_train": {}}
    atlas, target = write_data(preset, output, data_seed)
    raw = Path(os.environ["nnUNet_raw"])
    cases = sorted(p.name[: -len(".nii.gz")] for p in (target / "labelsTr").glob("*.nii.gz"))
    start = time.perf_counter()
    simpleitk = SimpleITKRegistration(RegistrationSettings(iterations=preset.registration_iterations,
                                                           bspline_iterations=preset.bspline_iterations,
                                                           num_threads=num_processes))
    mas_full = build_mas_dataset(target, atlas, output_id=MAS_FULL_ID, output_name="PhantomMRTarget_MAS",
                                 settings=MASSettings(num_atlases=preset.num_atlases, fusion="majority"),
                                 backend=simpleitk, output_root=raw, cache_dir=output / "mas_cache")
    record["seconds"]["mas_build"] = round(time.perf_counter() - start, 1)
    record["prior_dice_train"]["mas"] = prior_dice({c: mas_full / "imagesTr" / f"{c}_0001.nii.gz" for c in cases},
                                                   target / "labelsTr")
    oracle_files = {c: oracle_prior(target / "labelsTr" / f"{c}.nii.gz", output / "oracle" / f"{c}_0001.nii.gz",
                                    seed=i) for i, c in enumerate(cases)}
    record["prior_dice_train"]["oracle"] = prior_dice(oracle_files, target / "labelsTr")
    for index, n in enumerate(preset.labelled):
        chosen = cases[:n]
        datasets = {"image": subset_dataset(target, ARM_BASE_ID["image"] + index, chosen),
                    "mas": subset_dataset(mas_full, ARM_BASE_ID["mas"] + index, chosen),
                    "oracle": subset_dataset(mas_full, ARM_BASE_ID["oracle"] + index, chosen,
                                             prior_files=oracle_files, drop_recipe=True)}
        record["datasets"][f"N{n}"] = {arm: folder.name for arm, folder in datasets.items()}
    plan_once(record, num_processes)
    preprocess_with_shared_plans(record, [name for datasets in record["datasets"].values()
                                          for name in datasets.values()], num_processes)
    return record


def build_learned(record: dict, preset: Preset, output: Path, device: str, n: int) -> str:
    """N's learned arm: BiRegNet trained on the atlases and N's labelled targets, its priors as a raw dataset."""
    from nnunet_mm.atlas.learned import LearnedMASConfig, load_learned_mas, train_learned_mas
    from nnunet_mm.atlas.mas import MASSettings, build_mas_dataset

    raw = Path(os.environ["nnUNet_raw"])
    index = list(record["preset"]["labelled"]).index(n)
    start = time.perf_counter()
    model = output / "learned" / f"N{n}"
    atlas = next(raw.glob(f"Dataset{ATLAS_ID:03d}_*"))
    training = train_learned_mas(atlas, raw / record["datasets"][f"N{n}"]["image"], model,
                                 config=LearnedMASConfig(grid_shape=preset.shape, num_levels=3),
                                 iterations=preset.learned_iterations, simnet_iterations=0, device=device,
                                 fold="all", overwrite=True, show_progress=False)
    backend, _ = load_learned_mas(model, device=device)
    folder = build_mas_dataset(
        raw / record["datasets"][f"N{n}"]["image"], atlas, output_id=ARM_BASE_ID["learned"] + index,
        output_name=f"PhantomMRTarget_LearnedN{n}",
        settings=MASSettings(num_atlases=preset.num_atlases, fusion="majority"), backend=backend,
        output_root=raw, cache_dir=output / "learned_cache" / f"N{n}", show_progress=False)
    record["seconds"][f"learned_N{n}"] = round(time.perf_counter() - start, 1)
    record.setdefault("learned_pair_dice_before_after", {})[f"N{n}"] = [
        round(v, 4) for v in training["train_pair_dice_before_after"]]
    record["datasets"][f"N{n}"]["learned"] = folder.name
    return folder.name


def plan_once(record: dict, num_processes: int) -> None:
    """nnU-Net's planner on the 10-target MAS dataset (the plans every dataset is preprocessed with)."""
    from nnunetv2.experiment_planning.plan_and_preprocess_api import extract_fingerprints, plan_experiments

    preprocessed = Path(os.environ["nnUNet_preprocessed"])
    planned = record["datasets"][list(record["datasets"])[-1]]["mas"]
    planned_id = int(planned[len("Dataset"):].split("_")[0])
    extract_fingerprints([planned_id], num_processes=num_processes)
    plan_experiments([planned_id])
    record["planned"] = planned
    configuration = json.loads((preprocessed / planned / "nnUNetPlans.json").read_text(
        encoding="utf-8"))["configurations"][CONFIGURATION]
    record["plans"] = {"patch_size": configuration["patch_size"], "batch_size": configuration["batch_size"],
                       "features_per_stage": configuration["architecture"]["arch_kwargs"]["features_per_stage"]}


def preprocess_with_shared_plans(record: dict, names: list[str], num_processes: int) -> None:
    """Copy the planned dataset's plans (2d only) to each dataset in ``names`` and preprocess it with them; an
    image-only dataset keeps the image channel's normalisation only, everything else identical."""
    from nnunetv2.experiment_planning.plan_and_preprocess_api import preprocess

    preprocessed = Path(os.environ["nnUNet_preprocessed"])
    planned = record.get("planned") or record["datasets"][list(record["datasets"])[-1]]["mas"]
    plans = json.loads((preprocessed / planned / "nnUNetPlans.json").read_text(encoding="utf-8"))
    plans["configurations"] = {CONFIGURATION: plans["configurations"][CONFIGURATION]}
    image_only = {datasets["image"] for datasets in record["datasets"].values()}
    for name in names:
        folder = preprocessed / name
        folder.mkdir(parents=True, exist_ok=True)
        copy = json.loads(json.dumps(plans))
        copy["dataset_name"] = name
        fingerprint = json.loads((preprocessed / planned / "dataset_fingerprint.json").read_text(encoding="utf-8"))
        if name in image_only:
            configuration = copy["configurations"][CONFIGURATION]
            configuration["normalization_schemes"] = configuration["normalization_schemes"][:1]
            configuration["use_mask_for_norm"] = configuration["use_mask_for_norm"][:1]
            copy["foreground_intensity_properties_per_channel"] = {
                "0": copy["foreground_intensity_properties_per_channel"]["0"]}
            fingerprint["foreground_intensity_properties_per_channel"] = {
                "0": fingerprint["foreground_intensity_properties_per_channel"]["0"]}
        (folder / "nnUNetPlans.json").write_text(json.dumps(copy, indent=2), encoding="utf-8")
        (folder / "dataset_fingerprint.json").write_text(json.dumps(fingerprint, indent=2), encoding="utf-8")
        shutil.copy2(Path(os.environ["nnUNet_raw"]) / name / "dataset.json", folder / "dataset.json")
        preprocess([int(name[len("Dataset"):].split("_")[0])], configurations=(CONFIGURATION,),
                   num_processes=(num_processes,))


# ------------------------------------------------------------------------------------------------------------------
# runs


def test_inputs(arm: str, output: Path) -> Path:
    """The test targets as a model receives them: the image only, plus the oracle prior for the oracle arm."""
    folder = output / "test" / ("inputs_oracle" if arm == "oracle" else "images")
    if arm == "oracle" and not folder.is_dir():
        staging = folder.with_name(folder.name + ".partial")
        shutil.rmtree(staging, ignore_errors=True)
        shutil.copytree(output / "test" / "images", staging)
        for index, label in enumerate(sorted((output / "test" / "labels").glob("*.nii.gz"))):
            oracle_prior(label, staging / label.name.replace(".nii.gz", "_0001.nii.gz"), seed=1000 + index)
        staging.rename(folder)
    return folder


def run(arm: str, n: int, seed: int, preset: Preset, record: dict, output: Path, device: str) -> dict:
    """Train one arm at N labelled targets with one seed and predict the test targets (skipped when done)."""
    import torch

    from nnunet_mm.atlas.predict import PRIORS_DIR, atlas_prior_channels
    from nnunet_mm.inference import predict_with_missing_channels

    folder = output / "runs" / f"N{n}" / arm / f"seed{seed}"
    if (folder / "run.json").is_file():
        return json.loads((folder / "run.json").read_text(encoding="utf-8"))
    shutil.rmtree(folder, ignore_errors=True)
    data_arm, attributes = ABLATIONS.get(arm, (arm, None))
    name = record["datasets"][f"N{n}"][data_arm]
    trainer_name = "nnUNetTrainer" if arm == "image" else "MASPriorTrainer"
    _, timing, _ = benchlib.train(trainer_name, name, device_name=device, epochs=preset.epochs,
                                  iterations=preset.iterations, configuration=CONFIGURATION, seed=seed,
                                  output_folder_base=folder / "model", attributes=attributes)
    predictions = folder / "predictions"
    start = time.perf_counter()
    if arm == "image":
        benchlib.predict_folder(folder / "model", test_inputs(arm, output), predictions, device_name=device)
        sources = {}
    else:
        cache = prior_cache(output, data_arm, name)
        if arm != "oracle" and (cache / PRIORS_DIR).is_dir():  # the predictor's own cache (recipe + image SHA-256)
            shutil.copytree(cache / PRIORS_DIR, predictions / PRIORS_DIR)
        derived = atlas_prior_channels(folder / "model", device=device, show_progress=False)
        report = predict_with_missing_channels(test_inputs(arm, output), predictions, folder / "model",
                                               folds=("all",), device=torch.device(device), allow_tqdm=False,
                                               derived=derived)
        sources = {case: r.get("derived") for case, r in report.items()}
        if arm != "oracle" and not (cache / PRIORS_DIR).is_dir():
            shutil.copytree(predictions / PRIORS_DIR, cache / PRIORS_DIR)
    result = {"arm": arm, "N": n, "seed": seed, "dataset": name, **timing,
              "predict_seconds": round(time.perf_counter() - start, 1), "prior_sources": sources}
    (folder / "run.json").write_text(json.dumps(result, indent=2), encoding="utf-8")
    print(json.dumps(result), flush=True)
    return result


def prior_cache(output: Path, arm: str, name: str) -> Path:
    """Where the test targets' priors of a recipe are kept between runs: one folder per recipe (the SimpleITK MAS
    recipe is the same at every N; a learned one differs with its network)."""
    import hashlib

    dataset_json = json.loads((Path(os.environ["nnUNet_raw"]) / name / "dataset.json").read_text(encoding="utf-8"))
    recipe = json.dumps(dataset_json["nnunet_mm"].get("mas_priors"), sort_keys=True)
    return output / "prior_cache" / f"{arm}_{hashlib.sha256(recipe.encode()).hexdigest()[:12]}"


def test_prior_dice(output: Path, n: int, record: dict) -> dict[str, float]:
    """Dice of the priors the test targets got at prediction time (thresholded at 0.5) on their organ label."""
    result = {}
    for arm in ("mas", "learned"):
        if arm not in record["datasets"][f"N{n}"]:
            continue
        folder = prior_cache(output, arm, record["datasets"][f"N{n}"][arm]) / "atlas_priors"
        files = {p.name[: -len("_0001.nii.gz")]: p for p in folder.glob("*_0001.nii.gz")}
        if files:
            result[arm] = prior_dice(files, output / "test" / "labels")
    oracle = {p.name[: -len("_0001.nii.gz")]: p for p in (output / "test" / "inputs_oracle").glob("*_0001.nii.gz")}
    if oracle:
        result["oracle"] = prior_dice(oracle, output / "test" / "labels")
    return result


def compare_n(n: int, seeds: list[int], output: Path) -> dict | None:
    """``nnunet_mm compare`` of the arms at N labelled targets against ``image`` (liver only)."""
    from nnunet_mm.evaluation.compare import compare_arms
    from nnunet_mm.evaluation.report import comparison_json, write_report
    from nnunet_mm.evaluation.runs import collect_arm

    dataset_json = Path(os.environ["nnUNet_raw"]) / dataset_name(TARGET_ID) / "dataset.json"
    runs = {arm: [output / "runs" / f"N{n}" / arm / f"seed{s}" / "predictions" for s in seeds
                  if (output / "runs" / f"N{n}" / arm / f"seed{s}" / "run.json").is_file()] for arm in ARMS}
    runs = {arm: folders for arm, folders in runs.items() if folders}
    if "image" not in runs or len(runs) < 2:
        return None
    arms = [collect_arm(arm, folders, dataset_json=dataset_json) for arm, folders in runs.items()]
    comparison = compare_arms(arms, output / "test" / "labels", baseline="image", labels=[LIVER],
                              dataset_json=dataset_json, progress=False)
    write_report(comparison, output / "compare" / f"N{n}", overwrite=True)
    return comparison_json(comparison)


def table(results: dict) -> list[str]:
    lines = ["| N labelled | arm | runs | liver Dice (Δ vs image [95 % CI]) | cases better | prior Dice (test) | "
             "train min |", "|---|---|---|---|---|---|---|"]
    for n, entry in results["by_n"].items():
        summary = (entry.get("comparison") or {}).get("summary", {}).get("liver", {})
        for arm in ARMS:
            cell = summary.get(arm)
            if cell is None:
                continue
            text = f"{cell['dice_mean']:.3f}"
            difference = cell.get("difference_to_baseline")
            better = "–"
            if difference and difference.get("mean") is not None:
                text += (f" ({difference['mean']:+.3f}" + ("" if difference.get("ci_low") is None else
                         f" [{difference['ci_low']:+.3f}, {difference['ci_high']:+.3f}]") + ")")
                better = f"{difference['better']}/{difference['num_cases']}"
            runs = [r for r in entry["runs"] if r["arm"] == arm]
            minutes = sum(r["train_seconds"] for r in runs) / max(1, len(runs)) / 60
            prior = entry.get("test_prior_dice", {}).get(ABLATIONS.get(arm, (arm,))[0])
            lines.append(f"| {n} | {arm} | {cell['num_runs']} | {text} | {better} | "
                         f"{'–' if prior is None else f'{prior:.3f}'} | {minutes:.1f} |")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--output", required=True, type=Path, help="work and report folder (kept: runs resume)")
    parser.add_argument("--preset", choices=sorted(PRESETS), default="cpu")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--labelled", type=int, nargs="+", default=None, help="N values to run [preset's]")
    parser.add_argument("--arms", nargs="+", choices=ARMS, default=list(DEFAULT_ARMS),
                        help="arms to run [the four main arms; mas_no_dropout is an ablation]")
    parser.add_argument("--num-processes", type=int, default=1)
    parser.add_argument("--data-seed", type=int, default=7,
                        help="phantom generator seed [7, the reported experiment; another seed is a replicate]")
    parser.add_argument("--report-only", action="store_true", help="compare the runs that exist, train nothing")
    args = parser.parse_args(argv)

    preset = PRESETS[args.preset]
    args.output.mkdir(parents=True, exist_ok=True)
    benchlib.set_nnunet_paths(args.output)
    labelled = args.labelled or list(preset.labelled)
    record = prepare(preset, args.output, args.device, args.num_processes, data_seed=args.data_seed,
                     learned_for=tuple(labelled) if "learned" in args.arms and not args.report_only else ())
    all_runs = []
    if not args.report_only:
        for seed in args.seeds:
            for n in labelled:
                for arm in args.arms:
                    all_runs.append(run(arm, n, seed, preset, record, args.output, args.device))
    results = {"preset": args.preset, "settings": asdict(preset), "prepared": record, "by_n": {}}
    for n in labelled:
        runs = [json.loads(p.read_text(encoding="utf-8")) for p in sorted((args.output / "runs" / f"N{n}").glob("*/seed*/run.json"))]
        results["by_n"][str(n)] = {"runs": runs, "test_prior_dice": test_prior_dice(args.output, n, record),
                                   "comparison": compare_n(n, args.seeds, args.output)}
    (args.output / "bench_mas_priors.json").write_text(json.dumps(results, indent=2), encoding="utf-8")
    lines = table(results)
    (args.output / "bench_mas_priors.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    from nnunet_mm.io.console import tolerate_unencodable_output

    tolerate_unencodable_output()
    sys.exit(main())
