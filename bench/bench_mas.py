"""Cross-modality multi-atlas priors on phantoms: registration accuracy, seconds per pair, fusion, segmentation Dice.

Atlases are labelled CT phantoms; targets are other phantoms rendered "MR-like" (non-monotonic intensity map, bias
field, noise) and moved by known smooth deformations (:mod:`nnunet_mm.atlas.phantom_pairs`). Measured:

1. **Registration accuracy**: foreground Dice of each atlas label on the target label, unregistered (scanner
   geometry) and after SimpleITK MI rigid → affine → B-spline registration, and after the learned BiRegNet;
2. **seconds per atlas-target pair** of each backend (goals: ≤ 60 s on 2 CPU cores with SimpleITK, ≤ 1 s on a GPU
   for the learned one);
3. **fusion**: Dice of the fused label (majority, STAPLE, locally weighted, SimNet) on the target label;
4. **segmentation**: nnU-Net trained on ``--num-target-training`` labelled targets without priors (nnUNetTrainer) and
   with prior channels (MASPriorTrainer), same plans and schedule, fold ``all``, Dice on the test targets (goal +10).

Output: ``<output>/bench_mas.json`` and ``bench_mas.png``.

    python bench/bench_mas.py --output bench_out/mas --device cuda                             # GPU defaults
    python bench/bench_mas.py --output /tmp/mas --device cpu --shape 16 32 32 --num-atlases 3 \\
        --num-target-test 2 --learned-iterations 100 --simnet-iterations 50 --epochs 2 --iterations 10  # CPU
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from pathlib import Path

from nnunet_mm.evaluation.metrics import dice, mean_of_defined
from nnunet_mm.io.figure_style import figure_style

ATLAS_ID, TARGET_ID, MAS_ID, LEARNED_ID = 741, 742, 743, 744


def _set_paths(workdir: Path) -> None:
    for name, sub in (("nnUNet_raw", "raw"), ("nnUNet_preprocessed", "preprocessed"), ("nnUNet_results", "results")):
        os.environ[name] = str(workdir / sub)
        (workdir / sub).mkdir(parents=True, exist_ok=True)


def _summary(folder: Path) -> dict:
    return json.loads((folder / "nnunet_mm_qa" / "mas_summary.json").read_text(encoding="utf-8"))


def _mean_fg_dice(entries: list[dict]) -> dict[str, float]:
    """Mean Dice per foreground class ("1" liver, "2" tumour) over entries ``{"1": d, "2": d}`` (undefined skipped)."""
    return {name: round(mean_of_defined(e.get(key) for e in entries), 4)
            for key, name in (("1", "liver"), ("2", "tumour"))}


def _unregistered_dice(atlas: Path, target: Path) -> dict[str, float]:
    """Dice per class of atlas labels on target labels in scanner geometry (no registration), over all pairs."""
    import SimpleITK as sitk

    entries = []
    for target_label in sorted((target / "labelsTr").glob("*.nii.gz")) + sorted((target / "labelsTs").glob("*.nii.gz")):
        truth = sitk.ReadImage(str(target_label))
        t = sitk.GetArrayFromImage(truth)
        for atlas_label in sorted((atlas / "labelsTr").glob("*.nii.gz")):
            moved = sitk.GetArrayFromImage(sitk.Resample(sitk.ReadImage(str(atlas_label)), truth,
                                                         sitk.Transform(), sitk.sitkNearestNeighbor, 0))
            entries.append({str(k): dice(t == k, moved == k) for k in (1, 2)})
    return _mean_fg_dice(entries)


def fusion_and_registration(args, atlas: Path, target: Path) -> dict:
    from nnunet_mm.atlas.mas import MASSettings, SimpleITKRegistration, build_mas_dataset
    from nnunet_mm.atlas.registration import RegistrationSettings

    backend = SimpleITKRegistration(RegistrationSettings(iterations=args.reg_iterations,
                                                         bspline_iterations=args.bspline_iterations,
                                                         num_threads=args.threads))
    raw = Path(os.environ["nnUNet_raw"])
    report: dict = {"unregistered_pair_dice": _unregistered_dice(atlas, target), "fusion": {}}
    for fusion in ("majority", "staple", "local"):
        start = time.perf_counter()
        folder = build_mas_dataset(target, atlas, output_id=MAS_ID, output_name=f"MAS_{fusion}",
                                   settings=MASSettings(num_atlases=args.num_atlases, fusion=fusion),
                                   backend=backend, output_root=raw, overwrite=True)
        summary = _summary(folder)
        cases = summary["cases"].values()
        if fusion == "majority":
            report["simpleitk_seconds_per_pair"] = round(summary["mean_seconds_per_pair"], 3)
            report["simpleitk_pair_dice"] = _mean_fg_dice([d for c in cases for d in c["atlas_dice"]])
        report["fusion"][fusion] = {"fused_dice": _mean_fg_dice([c["fused_dice"] for c in cases]),
                                    "seconds": round(time.perf_counter() - start, 1)}
        if fusion != args.segmentation_fusion:
            shutil.rmtree(folder)
        else:
            report["segmentation_dataset"] = folder.name
    return report


def learned(args, atlas: Path, target: Path) -> dict:
    from nnunet_mm.atlas.learned import LearnedMASConfig, load_learned_mas, train_learned_mas
    from nnunet_mm.atlas.mas import MASSettings, build_mas_dataset

    model = Path(os.environ["nnUNet_results"]) / "mas_model"
    config = LearnedMASConfig(grid_shape=tuple(args.shape), num_levels=args.levels)
    training = train_learned_mas(atlas, target, model, config=config, iterations=args.learned_iterations,
                                 simnet_iterations=args.simnet_iterations, device=args.device, overwrite=True)
    backend, simnet = load_learned_mas(model, device=args.device)
    report = {"train_seconds": round(training["total_seconds"], 1),
              "train_pair_dice_before_after": [round(v, 4) for v in training["train_pair_dice_before_after"]]}
    for fusion in ("majority", "simnet"):
        folder = build_mas_dataset(target, atlas, output_id=LEARNED_ID, output_name=f"Learned_{fusion}",
                                   settings=MASSettings(num_atlases=args.num_atlases, fusion=fusion),
                                   backend=backend, simnet=simnet, output_root=Path(os.environ["nnUNet_raw"]),
                                   cache_dir=Path(os.environ["nnUNet_results"]) / "learned_cache", overwrite=True)
        summary = _summary(folder)
        cases = summary["cases"].values()
        if fusion == "majority":
            report["seconds_per_pair"] = round(summary["mean_seconds_per_pair"], 4)
            report["pair_dice"] = _mean_fg_dice([d for c in cases for d in c["atlas_dice"]])
        report[f"fused_dice_{fusion}"] = _mean_fg_dice([c["fused_dice"] for c in cases])
        shutil.rmtree(folder)
    return report


def segmentation(args, dataset_name: str, dataset_id: int, trainer_name: str) -> dict:
    """Plan, train ``trainer_name`` on fold 'all', predict imagesTs, Dice per label."""
    import torch
    from batchgenerators.utilities.file_and_folder_operations import load_json
    from nnunetv2.evaluation.evaluate_predictions import compute_metrics_on_folder
    from nnunetv2.experiment_planning.plan_and_preprocess_api import extract_fingerprints, plan_experiments, \
        preprocess
    from nnunetv2.imageio.simpleitk_reader_writer import SimpleITKIO
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
    from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name

    extract_fingerprints([dataset_id], num_processes=args.num_processes)
    plan_experiments([dataset_id])
    preprocess([dataset_id], configurations=("3d_fullres",), num_processes=(args.num_processes,))
    preprocessed = Path(os.environ["nnUNet_preprocessed"]) / dataset_name
    plans = load_json(preprocessed / "nnUNetPlans.json")
    plans["continue_training"] = False
    dataset_json = load_json(preprocessed / "dataset.json")
    trainer = recursive_find_trainer_class_by_name(trainer_name)(plans=plans, configuration="3d_fullres", fold="all",
                                                                 dataset_json=dataset_json,
                                                                 device=torch.device(args.device))
    trainer.num_epochs, trainer.num_iterations_per_epoch = args.epochs, args.iterations
    trainer.num_val_iterations_per_epoch = max(1, args.iterations // 5)
    start = time.perf_counter()
    trainer.run_training()
    train_seconds = time.perf_counter() - start
    raw = Path(os.environ["nnUNet_raw"]) / dataset_name
    output = Path(os.environ["nnUNet_results"]) / dataset_name / f"predictions_{trainer_name}"
    predictor = nnUNetPredictor(device=torch.device(args.device), allow_tqdm=False)
    predictor.initialize_from_trained_model_folder(str(Path(trainer.output_folder_base)), use_folds=("all",))
    predictor.predict_from_files(str(raw / "imagesTs"), str(output), save_probabilities=False, overwrite=True,
                                 num_processes_preprocessing=1, num_processes_segmentation_export=1)
    metrics = compute_metrics_on_folder(str(raw / "labelsTs"), str(output), str(output / "summary.json"),
                                        SimpleITKIO(), dataset_json["file_ending"], [1, 2], num_processes=1)
    means = {int(k): v for k, v in metrics["mean"].items()}
    return {"trainer": trainer_name, "dataset": dataset_name, "train_seconds": round(train_seconds, 1),
            "dice_liver": round(float(means[1]["Dice"]), 4), "dice_tumour": round(float(means[2]["Dice"]), 4)}


@figure_style()
def save_chart(report: dict, png: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    reg = report["registration"]
    bars = {"unregistered": reg["unregistered_pair_dice"]["liver"],
            "SimpleITK pair": reg["simpleitk_pair_dice"]["liver"]}
    bars.update({f"fused {k}": v["fused_dice"]["liver"] for k, v in reg["fusion"].items()})
    if "learned" in report:
        bars["BiRegNet pair"] = report["learned"]["pair_dice"]["liver"]
        bars["fused SimNet"] = report["learned"]["fused_dice_simnet"]["liver"]
    figure, axes = plt.subplots(1, 2, figsize=(11, 3.8), gridspec_kw={"width_ratios": [2, 1]})
    drawn = axes[0].bar(range(len(bars)), list(bars.values()))
    axes[0].bar_label(drawn, fmt="%.2f", fontsize=7)
    axes[0].set_xticks(range(len(bars)), list(bars), rotation=30, ha="right", fontsize=7)
    axes[0].set_ylabel("liver Dice on target labels")
    if report.get("segmentation"):
        names = [r["trainer"] for r in report["segmentation"]]
        liver = [r["dice_liver"] for r in report["segmentation"]]
        tumour = [r["dice_tumour"] for r in report["segmentation"]]
        axes[1].bar([i - 0.2 for i in range(len(names))], liver, 0.4, label="liver")
        axes[1].bar([i + 0.2 for i in range(len(names))], tumour, 0.4, label="tumour")
        axes[1].set_xticks(range(len(names)), names, fontsize=7)
        axes[1].legend(fontsize=7)
        axes[1].set_title("segmentation, test targets", fontsize=8)
    figure.suptitle(f"{report['device']}, {report['num_atlases']} atlases", fontsize=9)
    figure.tight_layout()
    figure.savefig(png, dpi=110)
    plt.close(figure)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--output", required=True, type=Path, help="work and report folder (replaced)")
    parser.add_argument("--device", default="cuda", help="torch device [cuda]")
    parser.add_argument("--shape", type=int, nargs=3, default=[32, 64, 64], help="phantom grid z y x [32 64 64]")
    parser.add_argument("--spacing", type=float, nargs=3, default=[3.0, 1.5, 1.5], help="mm [3 1.5 1.5]")
    parser.add_argument("--num-atlases", type=int, default=5)
    parser.add_argument("--num-target-training", type=int, default=3, help="labelled target cases [3]")
    parser.add_argument("--num-target-test", type=int, default=6)
    parser.add_argument("--reg-iterations", type=int, default=100)
    parser.add_argument("--bspline-iterations", type=int, default=50)
    parser.add_argument("--threads", type=int, default=0, help="SimpleITK threads [all]")
    parser.add_argument("--levels", type=int, default=3, help="BiRegNet/SimNet levels [3]")
    parser.add_argument("--learned-iterations", type=int, default=1500, help="BiRegNet steps, 0 skips [1500]")
    parser.add_argument("--simnet-iterations", type=int, default=2000)
    parser.add_argument("--segmentation-fusion", default="majority", choices=("majority", "staple", "local"))
    parser.add_argument("--epochs", type=int, default=50, help="nnU-Net epochs, 0 skips segmentation [50]")
    parser.add_argument("--iterations", type=int, default=100, help="nnU-Net iterations per epoch [100]")
    parser.add_argument("--num-processes", type=int, default=2)
    args = parser.parse_args(argv)

    from nnunet_mm.atlas.phantom_pairs import write_cross_modality_datasets

    if args.output.exists():
        shutil.rmtree(args.output)
    _set_paths(args.output)
    atlas, target = write_cross_modality_datasets(
        Path(os.environ["nnUNet_raw"]), atlas_id=ATLAS_ID, target_id=TARGET_ID, num_atlases=args.num_atlases,
        num_target_training=args.num_target_training, num_target_test=args.num_target_test,
        shape_zyx=tuple(args.shape), spacing_zyx_mm=tuple(args.spacing), seed=7)
    report: dict = {"device": args.device, "num_atlases": args.num_atlases, "args": {k: str(v) for k, v in
                                                                                    vars(args).items()}}
    report_file = args.output / "bench_mas.json"

    def record(key: str, value) -> None:  # written after every stage, so a run cut short keeps what it measured
        report[key] = value
        print(json.dumps({key: value}, indent=1), flush=True)
        report_file.write_text(json.dumps(report, indent=2), encoding="utf-8")

    record("registration", fusion_and_registration(args, atlas, target))
    if args.learned_iterations > 0:
        record("learned", learned(args, atlas, target))
    if args.epochs > 0:
        record("segmentation", [segmentation(args, target.name, TARGET_ID, "nnUNetTrainer")])
        record("segmentation", report["segmentation"] + [
            segmentation(args, report["registration"]["segmentation_dataset"], MAS_ID, "MASPriorTrainer")])
    save_chart(report, args.output / "bench_mas.png")
    print(f"wrote {args.output / 'bench_mas.json'} and bench_mas.png")
    return 0


if __name__ == "__main__":
    from nnunet_mm.io.console import tolerate_unencodable_output

    tolerate_unencodable_output()
    raise SystemExit(main())
