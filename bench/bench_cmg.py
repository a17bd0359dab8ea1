"""The CMG experiment: does cross-modal guidance beat stock nnU-Net on misregistered multi-phase data?

Data (calibrated so that stock nnU-Net lands where a difference can show, never tuned to a method): four-phase
liver phantoms (``nnunet_mm.phantom``) whose 2–4 lesions are all HCC-like, i.e. faint in the annotated
portal-venous reference phase (−20 HU against the liver, under 5–8 HU of noise) and conspicuous in the arterial
phase (+60 HU). Calibration, stock nnU-Net, misregistered scenario, CPU preset, seed 0: with 12–18 HU of noise and
1–3 lesions tumour Dice stayed 0.00 at every milestone (nothing to compare); with 5–8 HU and 2–4 lesions it is 0.00
/ 0.39 / 0.63 at a third / two thirds / all of the schedule. Two scenarios from the same anatomy:

* ``misregistered``: every other phase is moved by a rigid offset (up to 3 mm through-plane and 6 mm in-plane), a
  smooth deformation (3 mm) and an extra lesion-local shift (2–5 mm); every phase's own label is written
  (``labelsTr_phases``), so CMG supervises each phase with its own label;
* ``aligned``: the same anatomy with the phases aligned (CMG must not lose where there is nothing to win back).

Held-out test cases come from another generator seed. Planning happens once, on the misregistered scenario: the
aligned and the reference-only datasets are preprocessed with a copy of those plans, and the CMG ablations are
configurations added to the same plans that share its preprocessed data. Arms:

============================  ==================================================================================
``reference_only``            stock nnU-Net on the annotated phase alone (1 channel)
``stock``                     stock nnU-Net (``nnUNetTrainer``) on all phases
``multimodal``                ``MultiModalTrainer`` (misalignment + modality dropout where the data declares
                              separately acquired channels)
``cmg``                       ``CMGTrainer``, per-phase labels where the scenario has them (``<c>_phases``)
``cmg_reference_label``       ``CMGTrainer`` with every phase trained on the reference label
``cmg_no_guidance``           as ``cmg``, guidance modulation off (``CMGUNet(guidance=False)``)
``cmg_stock_width``           as ``cmg``, every stream as wide as the stock U-Net
``cmg_fuse_all``              as ``cmg``, Multi-Scale Fusion at every stage below full resolution (not only the
                              three deepest), so the other phases reach the reference stream at fine scales
``cmg_mean_auxiliary``        as ``cmg``, the auxiliary heads together weigh as much as the reference head
                              (``auxiliary_reduction = "mean"``) instead of each head weighing 1
============================  ==================================================================================

Every arm trains ``--seeds`` times on fold ``all`` with the same schedule; the weights at a third, two thirds and
all of the schedule predict the held-out cases (nnU-Net's predictor, mirroring on), and ``nnunet_mm compare``
reports Dice and lesion-wise detection against ``stock`` with paired bootstrap intervals over cases (per-case
values averaged over seeds). Runs already predicted are skipped, so the experiment can be continued arm by arm.

    python bench/bench_cmg.py --preset cpu --output bench_out/cmg                # 2-core CPU box
    python bench/bench_cmg.py --preset gpu --output bench_out/cmg_gpu --device cuda   # full size, 3D
    python bench/bench_cmg.py --preset cpu --output /tmp/cmg_smoke --smoke       # a minute: every arm runs once

Output in ``--output``: ``bench_cmg.json`` (settings, timings, every comparison), ``bench_cmg.md`` (the tables),
``compare/<scenario>/<milestone>/compare.{json,md,png}``.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import shutil
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import benchlib

from nnunet_mm.io.console import encodable

SCENARIO_IDS = {"misregistered": 720, "aligned": 721}
REFERENCE_ONLY_ID = 722
PLANS = "nnUNetPlans"
NO_GUIDANCE, STOCK_WIDTH, FUSE_ALL = "_cmg_noguidance", "_cmg_stockwidth", "_cmg_fuseall"

# the data, the same for every arm (see the module docstring for why)
PHANTOM = dict(lesion_kinds=("hcc",), num_lesions=(2, 4), noise_std_hu=(5.0, 8.0),
               max_translation_zyx_mm=(3.0, 6.0, 6.0))


@dataclass(frozen=True)
class Preset:
    configuration: str
    shape: tuple[int, int, int]
    num_training: int
    num_test: int
    epochs: int
    iterations: int


PRESETS = {
    # measured on the 2-core box: stock 0.54 s per iteration, CMG 1.27 s (2.4×), CMG at stock width 3.0 s (5.6×)
    "cpu": Preset("2d", (12, 64, 64), num_training=16, num_test=16, epochs=12, iterations=25),
    "gpu": Preset("3d_fullres", (48, 128, 128), num_training=60, num_test=30, epochs=100, iterations=250),
}
SMOKE = Preset("2d", (8, 48, 48), num_training=4, num_test=3, epochs=3, iterations=2)


@dataclass(frozen=True)
class Arm:
    trainer: str
    configuration_suffix: str = ""  # added to the preset's configuration
    reference_only: bool = False
    phase_labels: bool = True  # use the '_phases' configuration where the scenario has per-phase labels
    attributes: tuple[tuple[str, object], ...] = ()  # trainer attributes set after construction


ARMS = {
    "reference_only": Arm("nnUNetTrainer", reference_only=True, phase_labels=False),
    "stock": Arm("nnUNetTrainer", phase_labels=False),
    "multimodal": Arm("MultiModalTrainer", phase_labels=False),
    "cmg": Arm("CMGTrainer"),
    "cmg_reference_label": Arm("CMGTrainer", phase_labels=False),
    "cmg_no_guidance": Arm("CMGTrainer", NO_GUIDANCE),
    "cmg_stock_width": Arm("CMGTrainer", STOCK_WIDTH),
    "cmg_fuse_all": Arm("CMGTrainer", FUSE_ALL),
    "cmg_mean_auxiliary": Arm("CMGTrainer", attributes=(("auxiliary_reduction", "mean"),)),
}


def dataset_name(dataset_id: int) -> str:
    from nnunetv2.utilities.dataset_name_id_conversion import maybe_convert_to_dataset_name

    return maybe_convert_to_dataset_name(dataset_id)


# ------------------------------------------------------------------------------------------------------------------
# data and plans (once)


def prepare_data(preset: Preset, *, seed: int, test_seed: int, num_processes: int) -> None:
    """Write both scenarios and the reference-only dataset, plan once, preprocess everything with those plans."""
    from nnunet_mm.phantom import write_nnunet_raw

    raw = Path(os.environ["nnUNet_raw"])
    marker = Path(os.environ["nnUNet_preprocessed"]) / "bench_cmg_data.json"
    settings = json.loads(json.dumps({"preset": asdict(preset), "seed": seed, "test_seed": test_seed,
                                      "phantom": PHANTOM}))  # as JSON writes it (tuples become lists)
    if marker.is_file() and json.loads(marker.read_text(encoding="utf-8")) == settings:
        for dataset_id in SCENARIO_IDS.values():  # cheap, and arms may have been added since
            add_ablation_configurations(dataset_id, preset.configuration)
        return
    for scenario, dataset_id in SCENARIO_IDS.items():
        write_nnunet_raw(raw, dataset_id=dataset_id, name=f"CMGBench_{scenario}", num_training=preset.num_training,
                         num_test=preset.num_test, seed=seed, test_seed=test_seed, overwrite=True,
                         shape_zyx=preset.shape, misregistration=scenario == "misregistered",
                         phase_labels=scenario == "misregistered", **PHANTOM)
    _write_reference_only(raw / dataset_name(SCENARIO_IDS["misregistered"]), raw, REFERENCE_ONLY_ID)

    planned = SCENARIO_IDS["misregistered"]
    benchlib.plan_and_preprocess(planned, preset.configuration, num_processes)
    from nnunet_mm.cmg.phase_labels import add_phase_label_configuration

    add_phase_label_configuration(planned, preset.configuration, PLANS, num_processes)
    for other in (SCENARIO_IDS["aligned"], REFERENCE_ONLY_ID):
        _copy_plans(planned, other)
        from nnunetv2.experiment_planning.plan_and_preprocess_api import preprocess_dataset

        preprocess_dataset(other, PLANS, configurations=(preset.configuration,), num_processes=(num_processes,))
    for dataset_id in SCENARIO_IDS.values():
        add_ablation_configurations(dataset_id, preset.configuration)
    marker.write_text(json.dumps(settings), encoding="utf-8")


def _write_reference_only(source: Path, raw: Path, dataset_id: int) -> None:
    """A one-channel copy of a phantom dataset: the annotated reference phase (channel 0) and the labels."""
    target = raw / f"Dataset{dataset_id:03d}_CMGBench_reference_only"
    if target.exists():
        shutil.rmtree(target)
    for folder in ("imagesTr", "imagesTs"):
        (target / folder).mkdir(parents=True)
        for image in sorted((source / folder).glob("*_0000.nii.gz")):
            shutil.copy2(image, target / folder / image.name)
    for folder in ("labelsTr", "labelsTs"):
        shutil.copytree(source / folder, target / folder)
    dataset_json = json.loads((source / "dataset.json").read_text(encoding="utf-8"))
    dataset_json["channel_names"] = {"0": dataset_json["channel_names"]["0"]}
    dataset_json["name"] = target.name
    dataset_json.pop("nnunet_mm", None)
    (target / "dataset.json").write_text(json.dumps(dataset_json, indent=2), encoding="utf-8")


def _copy_plans(source_id: int, target_id: int) -> None:
    """The source dataset's plans (without the ``*_phases`` configurations) into the target's preprocessed folder
    (plan once)."""
    benchlib.copy_plans(dataset_name(source_id), dataset_name(target_id), plans_identifier=PLANS,
                        keep_configuration=lambda name: not name.endswith("_phases"))


def add_ablation_configurations(dataset_id: int, configuration: str) -> None:
    """CMG ablations as configurations of the same plans (same preprocessed data; they inherit from ``<c>_phases``
    where the dataset has per-phase labels): every stream at stock width; guidance off; Multi-Scale Fusion at every
    encoder stage below full resolution instead of the three deepest."""
    from nnunet_mm.cmg.trainer import CMG_CLASS_NAME
    from nnunet_mm.networks.from_plans import slim_features, stream_width_factor

    plans_file = Path(os.environ["nnUNet_preprocessed"]) / dataset_name(dataset_id) / f"{PLANS}.json"
    plans = json.loads(plans_file.read_text(encoding="utf-8"))
    base = configuration + "_phases" if configuration + "_phases" in plans["configurations"] else configuration
    architecture = plans["configurations"][configuration]["architecture"]
    num_phases = len(plans["foreground_intensity_properties_per_channel"])
    stock_features = architecture["arch_kwargs"]["features_per_stage"]
    slim = slim_features(stock_features, stream_width_factor(num_phases))
    n_stages = architecture["arch_kwargs"]["n_stages"]
    variants = {STOCK_WIDTH: dict(features_per_stage=list(stock_features)),
                NO_GUIDANCE: dict(features_per_stage=slim, guidance=False),
                FUSE_ALL: dict(features_per_stage=slim, fusion_levels=n_stages - 1)}
    for suffix, arguments in variants.items():
        cmg_architecture = copy.deepcopy(architecture)
        cmg_architecture["network_class_name"] = CMG_CLASS_NAME
        cmg_architecture["arch_kwargs"].update(arguments)
        plans["configurations"][configuration + suffix] = {"inherits_from": base, "architecture": cmg_architecture}
    plans_file.write_text(json.dumps(plans, indent=2), encoding="utf-8")


def arm_configuration(arm: Arm, scenario: str, configuration: str) -> str:
    if arm.configuration_suffix:
        return configuration + arm.configuration_suffix
    return configuration + "_phases" if arm.phase_labels and scenario == "misregistered" else configuration


# ------------------------------------------------------------------------------------------------------------------
# runs


def milestones(epochs: int) -> dict[str, int]:
    """Epoch counts at a third, two thirds and all of the schedule."""
    return {"third": max(1, round(epochs / 3)), "two_thirds": max(1, round(2 * epochs / 3)), "all": epochs}


def run_arm(name: str, scenario: str, seed: int, preset: Preset, output: Path, device: str) -> dict:
    """Train one arm once (one seed) and predict the held-out cases at every milestone; skipped if done."""
    arm = ARMS[name]
    run_folder = output / "runs" / scenario / name / f"seed{seed}"
    record_file = run_folder / "run.json"
    if record_file.is_file():
        return json.loads(record_file.read_text(encoding="utf-8"))
    dataset_id = REFERENCE_ONLY_ID if arm.reference_only else SCENARIO_IDS[scenario]
    configuration = arm_configuration(arm, scenario, preset.configuration)
    stops = milestones(preset.epochs)
    trainer, timing, snapshots = benchlib.train(
        arm.trainer, dataset_name(dataset_id), device_name=device, epochs=preset.epochs,
        iterations=preset.iterations, configuration=configuration, output_folder_base=run_folder / "model",
        seed=seed, snapshot_epochs=tuple(stops.values()), attributes=dict(arm.attributes))
    images = Path(os.environ["nnUNet_raw"]) / dataset_name(dataset_id) / "imagesTs"
    predict_seconds = {}
    for milestone, epoch in stops.items():
        start = time.perf_counter()
        benchlib.predict_folder(run_folder / "model", images, run_folder / milestone, device_name=device,
                                weights=snapshots[epoch])
        predict_seconds[milestone] = round(time.perf_counter() - start, 1)
    parameters = sum(p.numel() for p in trainer.network.parameters())
    record = {"arm": name, "scenario": scenario, "seed": seed, "trainer": arm.trainer,
              "configuration": configuration, "dataset": dataset_name(dataset_id), "parameters": parameters,
              "milestone_epochs": stops, "predict_seconds": predict_seconds, **timing}
    shutil.rmtree(run_folder / "model" / "fold_all", ignore_errors=True)  # checkpoints: not needed afterwards
    record_file.write_text(json.dumps(record, indent=2), encoding="utf-8")
    return record


def compare_scenario(scenario: str, arms: list[str], seeds: list[int], output: Path) -> dict:
    """``nnunet_mm compare`` of every arm against ``stock`` at each milestone, over the runs that exist."""
    from nnunet_mm.evaluation.compare import compare_arms
    from nnunet_mm.evaluation.report import comparison_json, write_report
    from nnunet_mm.evaluation.runs import collect_arm

    raw = Path(os.environ["nnUNet_raw"]) / dataset_name(SCENARIO_IDS[scenario])
    results = {}
    for milestone in milestones(3):
        runs = {}
        for arm in arms:
            arm_scenario = "misregistered" if ARMS[arm].reference_only else scenario  # the same data in both
            folders = [output / "runs" / arm_scenario / arm / f"seed{s}" for s in seeds]
            runs[arm] = [folder / milestone for folder in folders if (folder / "run.json").is_file()]
        runs = {arm: folders for arm, folders in runs.items() if folders}
        if "stock" not in runs or len(runs) < 2:
            continue
        collected = [collect_arm(arm, folders, dataset_json=raw / "dataset.json") for arm, folders in runs.items()]
        comparison = compare_arms(collected, raw / "labelsTs", baseline="stock", dataset_json=raw / "dataset.json",
                                  progress=False)
        write_report(comparison, output / "compare" / scenario / milestone, overwrite=True)
        results[milestone] = comparison_json(comparison)
    return results


def _dice(summary: dict | None) -> str:
    if summary is None or summary["dice_mean"] is None:
        return "–"
    spread = summary["dice_std_over_runs"]
    return f"{summary['dice_mean']:.3f}" + ("" if spread is None else f" ± {spread:.3f}")


def _difference(summary: dict | None) -> str:
    difference = (summary or {}).get("difference_to_baseline")
    if not difference or difference["mean"] is None:
        return "baseline" if summary else "–"
    low, high = difference["ci_low"], difference["ci_high"]
    interval = "" if low is None else f" [{low:+.3f}, {high:+.3f}]"
    return f"{difference['mean']:+.3f}{interval} ({difference['better']}/{difference['worse']})"


def overview_table(scenario: str, per_milestone: dict, records: list[dict]) -> list[str]:
    """One Markdown table per scenario: tumour Dice at each milestone, the paired tumour and liver differences to
    stock at the end, lesion detection and cost."""
    final = per_milestone.get("all")
    if final is None:
        return []
    lines = ["| arm | runs | tumour Dice 1/3 · 2/3 · all | Δ tumour vs stock, all [95 % CI] (better/worse) | "
             "liver Dice | Δ liver | tumour recall · FP/case | train min | s/it | parameters |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for arm, tumour in final["summary"]["tumor"].items():
        runs = [r for r in records if r["arm"] == arm
                and r["scenario"] == ("misregistered" if ARMS[arm].reference_only else scenario)]
        dice_by_milestone = " · ".join(_dice(per_milestone[m]["summary"]["tumor"].get(arm)).split(" ±")[0]
                                       if m in per_milestone else "–" for m in ("third", "two_thirds", "all"))
        liver = final["summary"]["liver"].get(arm)
        cost = ("–", "–", "–")
        if runs:
            cost = (f"{sum(r['train_seconds'] for r in runs) / len(runs) / 60:.1f}",
                    f"{sum(r['step_ms_median'] for r in runs) / len(runs) / 1000:.2f}", f"{runs[0]['parameters']:,}")
        lines.append(f"| {arm} | {tumour['num_runs']} | {dice_by_milestone} | {_difference(tumour)} | {_dice(liver)} | "
                     f"{_difference(liver).split(' (')[0]} | {tumour['lesion_recall']:.2f} · "
                     f"{tumour['false_positives_per_case']:.2f} | {cost[0]} | {cost[1]} | {cost[2]} |")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="cpu")
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--scenarios", nargs="+", choices=list(SCENARIO_IDS), default=list(SCENARIO_IDS))
    parser.add_argument("--arms", nargs="+", choices=list(ARMS), default=list(ARMS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--data-seed", type=int, default=7, help="generator seed of the training cases")
    parser.add_argument("--test-seed", type=int, default=8, help="generator seed of the held-out cases")
    parser.add_argument("--smoke", action="store_true", help="tiny data and schedule: checks that everything runs")
    parser.add_argument("-np", type=int, default=2, help="processes for planning and preprocessing")
    parser.add_argument("--report-only", action="store_true",
                        help="train nothing: compare the runs that exist and write the report")
    args = parser.parse_args(argv)

    preset = SMOKE if args.smoke else PRESETS[args.preset]
    args.output.mkdir(parents=True, exist_ok=True)
    benchlib.set_nnunet_paths(args.output / "work")
    prepare_data(preset, seed=args.data_seed, test_seed=args.test_seed, num_processes=args.np)
    records = []
    for seed in [] if args.report_only else args.seeds:  # seed by seed, arms in the order given: a stopped run still has complete seeds
        for arm in args.arms:
            for scenario in args.scenarios:
                if scenario == "aligned" and arm in ("cmg_reference_label", "reference_only"):
                    continue  # aligned: the reference label is every phase's label; the reference phase alone is
                    # the same data in both scenarios (its runs are shared)
                print(f"[bench_cmg] {scenario} / {arm} / seed {seed}", flush=True)
                records.append(run_arm(arm, scenario, seed, preset, args.output, args.device))
    comparisons = {scenario: compare_scenario(scenario, list(ARMS), args.seeds, args.output)
                   for scenario in args.scenarios}
    report = {"preset": asdict(preset), "phantom": PHANTOM,
              "data_seed": args.data_seed, "test_seed": args.test_seed,
              "runs": [json.loads(f.read_text(encoding="utf-8"))
                      for f in sorted((args.output / "runs").glob("*/*/seed*/run.json"))],
              "comparisons": comparisons}
    (args.output / "bench_cmg.json").write_text(json.dumps(report, indent=2, default=str), encoding="utf-8")
    lines = [f"# CMG experiment ({'smoke' if args.smoke else args.preset} preset)", ""]
    all_records = [json.loads(f.read_text(encoding="utf-8"))
                      for f in sorted((args.output / "runs").glob("*/*/seed*/run.json"))]
    for scenario, per_milestone in comparisons.items():
        lines += [f"## {scenario}: overview (Dice means over cases, per case averaged over seeds)", "",
                  *overview_table(scenario, per_milestone, all_records), ""]
    for scenario, per_milestone in comparisons.items():
        for milestone in per_milestone:
            table = args.output / "compare" / scenario / milestone / "compare.md"
            lines += [f"## {scenario}, weights after {milestone.replace('_', ' ')} of the schedule", "",
                      table.read_text(encoding="utf-8"), ""]
    (args.output / "bench_cmg.md").write_text("\n".join(lines), encoding="utf-8")
    print(encodable("\n".join(lines)))  # Δ and ± as escapes on an ASCII console
    return 0


if __name__ == "__main__":
    from nnunet_mm.io.console import tolerate_unencodable_output

    tolerate_unencodable_output()
    sys.exit(main())
