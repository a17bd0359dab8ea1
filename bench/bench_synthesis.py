"""Synthetic-tumour mixing (Diff4MMLiTS, paper 002): real-only vs handcrafted (vs diffusion) on few tumour cases.

Data: the multi-phase phantom (``nnunet_mm.phantom``, channels pv/art/del/nc, labels 1 liver, 2 tumour), written as
an nnU-Net raw dataset with ``--tumour-cases`` (≤ 5) labelled tumour cases plus ``--normal-cases`` tumour-free
"normal" cases and ``--test-cases`` tumour cases in imagesTs. A normal case is a phantom whose tumour voxels (the
label dilated by 2 voxels, per phase on that phase's own label) are refilled with that phase's liver HU plus noise of
the phantom's level — an ideal inpainter standing in for the NCG stage — and whose label says liver there.

Arms, all ``SynthTumorTrainer`` on fold ``all`` with the same plans, schedule, loss (Dice + 0.5·CE), misalignment
and dropout, so only the synthesis differs:

* ``real``: p = 0 (real data only);
* ``handcrafted``: p = 0.5, handcrafted synthesizer, statistics fitted from the training tumours;
* ``diffusion`` (``--arms ... diffusion``): p = 0.5, the latent-diffusion synthesizer; needs the models trained
  beforehand into ``<preprocessed>/nnunet_mm_synthesis/latent_diffusion`` (``nnunet_mm`` part B commands).

Measured: nnU-Net's tumour and liver Dice on the test cases (nnU-Net's predictor and evaluation), training wall
time, median ``train_step`` time (CUDA-synchronised) and the time of the synthesis inside it (mean per step, and
median over the steps where a sample received tumours).
Issue goals: +8 tumour Dice points over ``real``; step time ≤ 1.1× (``handcrafted`` vs ``real``, whose step equals
MultiModalTrainer's). Output: ``<output>/bench_synthesis.json``, ``.md`` and ``.png``.

    python bench/bench_synthesis.py --output bench_out/synthesis                                  # GPU, defaults
    nice -n 10 python bench/bench_synthesis.py --output /tmp/synth --device cpu -c 2d --epochs 6 --iterations 10 \\
        --shape 12 64 64 --normal-cases 5 --test-cases 4                                          # CPU, small
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

import benchlib

from nnunet_mm.io.figure_style import figure_style

DATASET_ID = 740
DATASET_NAME = f"Dataset{DATASET_ID}_SynthBench"
PHASES = ("pv", "art", "del", "nc")


def _healed_case(seed: int, shape: tuple[int, int, int]):
    """(images per phase on the reference grid, label) of a phantom with its tumours replaced by liver."""
    import numpy as np
    from scipy import ndimage

    from nnunet_mm.phantom import HU_BY_TISSUE, PHASE_NAMES, make_case

    case = make_case(seed, shape_zyx=shape, phases=PHASES)
    rng = np.random.default_rng(seed)
    images = {}
    for phase in PHASES:
        image = case.image_on_reference_grid(phase).astype(np.float32)
        region = ndimage.binary_dilation(case.label_on_reference_grid(phase) == 2, iterations=2)
        liver_hu = HU_BY_TISSUE["liver"][PHASE_NAMES.index(phase)]
        image[region] = liver_hu + rng.normal(0.0, 12.0, int(region.sum()))
        images[phase] = image.astype(np.int16)
    label = np.where(case.label == 2, 1, case.label).astype(np.uint8)
    return case, images, label


def write_dataset(raw: Path, *, tumour_cases: int, normal_cases: int, test_cases: int, shape: list[int],
                  seed: int) -> Path:
    """Write the raw dataset described in the module docstring; returns its folder."""
    import SimpleITK as sitk
    from tqdm import tqdm

    from nnunet_mm.phantom import case_seed, write_nnunet_raw

    folder = write_nnunet_raw(raw, dataset_id=DATASET_ID, name="SynthBench", num_training=tumour_cases,
                              num_test=test_cases, seed=seed, shape_zyx=tuple(shape), phases=PHASES, overwrite=True)
    for index in tqdm(range(normal_cases), desc="normal cases", unit="case"):
        case, images, label = _healed_case(case_seed(seed + 1, index), tuple(shape))
        identifier = f"normal_{index:03d}"
        for channel, phase in enumerate(PHASES):
            sitk.WriteImage(case.reference_geometry.to_sitk(images[phase]),
                            str(folder / "imagesTr" / f"{identifier}_{channel:04d}.nii.gz"), useCompression=True)
        sitk.WriteImage(case.reference_geometry.to_sitk(label), str(folder / "labelsTr" / f"{identifier}.nii.gz"),
                        useCompression=True)
    dataset_json = json.loads((folder / "dataset.json").read_text())
    dataset_json["numTraining"] = tumour_cases + normal_cases
    (folder / "dataset.json").write_text(json.dumps(dataset_json, indent=2))
    return folder


class SynthesisTimer:
    """Times ``SynthTumorTrainer.insert_synthetic_tumours`` during training (CUDA-synchronised), per step."""

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


def run_arm(arm: str, args: argparse.Namespace, raw_folder: Path) -> dict:
    import dataclasses

    import numpy as np
    import torch

    from nnunet_mm.synthesis.settings import SynthesisSettings

    torch.manual_seed(args.seed)
    attributes: dict = {"synthetic_probability": 0.0 if arm == "real" else args.probability}
    if arm == "diffusion":
        attributes["synthesis_settings"] = dataclasses.replace(SynthesisSettings(), synthesizer="diffusion")
    with SynthesisTimer() as timer:
        trainer, timing, _ = benchlib.train("SynthTumorTrainer", DATASET_NAME, device_name=args.device,
                                         epochs=args.epochs, iterations=args.iterations, configuration=args.c,
                                         attributes=attributes)
    result = {"arm": arm, **timing,
              "synthesis_ms_mean_per_step": round(1000 * float(np.mean(timer.seconds_per_step)), 2),
              "synthesis_ms_median_when_active": round(1000 * float(np.median(timer.seconds_when_active)), 2)
              if timer.seconds_when_active else None}
    dice = benchlib.predict_and_evaluate(trainer, raw_folder / "imagesTs", raw_folder / "labelsTs",
                                         Path(args.output) / f"pred_{arm}", device_name=args.device,
                                         labels_to_evaluate=[1, 2])
    result.update({"liver_dice": round(dice[1], 4), "tumour_dice": round(dice[2], 4)})
    print(json.dumps(result), flush=True)
    return result


@figure_style()
def write_report(results: list[dict], args: argparse.Namespace, output: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    real = next((r for r in results if r["arm"] == "real"), None)
    for r in results:
        if real is not None and r is not real:
            r["tumour_dice_gain_points"] = round(100 * (r["tumour_dice"] - real["tumour_dice"]), 2)
            r["step_time_ratio_vs_real"] = round(r["step_ms_median"] / real["step_ms_median"], 3)
    summary = {"command": " ".join(sys.argv), "device": args.device, "configuration": args.c,
               "schedule": {"epochs": args.epochs, "iterations": args.iterations},
               "data": {"tumour_cases": args.tumour_cases, "normal_cases": args.normal_cases,
                        "test_cases": args.test_cases, "shape_zyx": args.shape},
               "results": results}
    (output / "bench_synthesis.json").write_text(json.dumps(summary, indent=2))
    lines = ["| arm | tumour Dice | liver Dice | Δ tumour (points) | step ms (median) | step ratio | synthesis ms "
             "per step (mean) | synthesis ms when active (median) | train s |", "|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r['arm']} | {r['tumour_dice']:.3f} | {r['liver_dice']:.3f} | "
                     f"{r.get('tumour_dice_gain_points', '–')} | {r['step_ms_median']} | "
                     f"{r.get('step_time_ratio_vs_real', '–')} | {r['synthesis_ms_mean_per_step']} | "
                     f"{r['synthesis_ms_median_when_active'] or '–'} | {r['train_seconds']} |")
    (output / "bench_synthesis.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    figure, axis = plt.subplots(figsize=(4 + len(results), 3))
    names = [r["arm"] for r in results]
    axis.bar([i - 0.2 for i in range(len(names))], [r["tumour_dice"] for r in results], 0.4, label="tumour")
    axis.bar([i + 0.2 for i in range(len(names))], [r["liver_dice"] for r in results], 0.4, label="liver")
    axis.set_xticks(range(len(names)), names)
    axis.set_ylabel("test Dice")
    axis.set_ylim(0, 1)
    axis.legend()
    axis.set_title(f"{args.tumour_cases} tumour + {args.normal_cases} normal cases, {args.epochs}×{args.iterations} "
                   f"it, {args.device}", fontsize=8)
    figure.tight_layout()
    figure.savefig(output / "bench_synthesis.png", dpi=110)
    plt.close(figure)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--output", type=Path, required=True, help="work and result folder")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    parser.add_argument("--device", default="cuda", choices=("cuda", "cpu"), help="[default: cuda]")
    parser.add_argument("-c", default="3d_fullres", choices=("2d", "3d_fullres"), help="[default: 3d_fullres]")
    parser.add_argument("--arms", nargs="+", default=["real", "handcrafted"],
                        choices=("real", "handcrafted", "diffusion"), help="[default: real handcrafted]")
    parser.add_argument("--tumour-cases", type=int, default=5, help="labelled tumour cases, <= 5 [default: 5]")
    parser.add_argument("--normal-cases", type=int, default=20, help="tumour-free cases [default: 20]")
    parser.add_argument("--test-cases", type=int, default=10, help="[default: 10]")
    parser.add_argument("--shape", type=int, nargs=3, default=[48, 128, 128], metavar=("Z", "Y", "X"),
                        help="phantom grid [default: 48 128 128]")
    parser.add_argument("--epochs", type=int, default=50, help="[default: 50]")
    parser.add_argument("--iterations", type=int, default=100, help="per epoch [default: 100]")
    parser.add_argument("--probability", type=float, default=0.5, help="p of the synthetic arms [default: 0.5]")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if not 1 <= args.tumour_cases <= 5:
        parser.error(f"--tumour-cases must be 1..5 (the few-tumour regime), got {args.tumour_cases}.")
    if args.tumour_cases + args.normal_cases < 5:
        parser.error("nnU-Net needs at least 5 training cases (tumour + normal).")
    output = args.output.absolute()
    if output.exists() and any(output.iterdir()):
        if not args.overwrite:
            parser.error(f"{output} exists and is not empty; pass --overwrite or choose another folder.")
        shutil.rmtree(output)
    output.mkdir(parents=True, exist_ok=True)
    benchlib.set_nnunet_paths(output)
    os.environ.setdefault("nnUNet_compile", "f")
    start = time.perf_counter()
    raw_folder = write_dataset(Path(os.environ["nnUNet_raw"]), tumour_cases=args.tumour_cases,
                               normal_cases=args.normal_cases, test_cases=args.test_cases, shape=args.shape,
                               seed=args.seed)
    benchlib.plan_and_preprocess(DATASET_ID, args.c, num_processes=2)
    results = [run_arm(arm, args, raw_folder) for arm in args.arms]
    write_report(results, args, output)
    print(f"total {time.perf_counter() - start:.0f} s; wrote {output / 'bench_synthesis.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
