"""The CMC experiment: do unlabeled cases help CMCTrainer when only 10 % of the training cases are labelled?

Scenarios (each source dataset fully labelled, written once; held-out test cases from another generator seed):

* ``paired``: co-registered multi-phase liver phantoms (portal-venous reference + arterial, ``nnunet_mm.phantom``),
  two channels, so CMC runs one stream per channel and compares them voxelwise (CAC in one frame);
* ``unpaired``: the AMOS 2022 layout of the converter tests (CT and MR-like scans of *different* phantoms, one
  channel, modality per case), converted with ``Dataset504_AMOS``; its labelled validation cases are the test set.

Per scenario the source is planned once (nnU-Net's default planner); the label-fraction datasets
(``nnunet_mm label-fraction``: 10 % labelled, drawn per modality, the rest moved to ``imagesUnl``) are preprocessed
with a copy of those plans, so every arm trains the same network on the same patches. Arms (fold ``all``, the same
schedule, ``--seeds`` seeds each):

==============================  ======================================================================================
``full``                        ``CMCTrainer``, every training case labelled
``few``                         ``CMCTrainer``, the 10 % labelled cases only (no unlabeled cases)
``few_unlabeled``               ``CMCTrainer``, 10 % labelled + the rest unlabeled: CSC + CAC (the method)
``few_unlabeled_control``       as ``few_unlabeled``, both consistency weights 0 (the unlabeled forward still runs)
``csc_only``                    as ``few_unlabeled``, CAC weight 0
``cac_only``                    as ``few_unlabeled``, CSC weight 0
``few_unlabeled_after_start``   as ``few_unlabeled``, ramps stretched over the epochs after the start
``mean_teacher``                ``CMCMeanTeacherTrainer``: the same network and unlabeled batches, mean-teacher
                                consistency instead of CSC + CAC (the standard semi-supervised reference)
``stock_full``                  ``nnUNetTrainer`` (plain U-Net), every training case labelled: what the data allow
``*_20pct``                     ``few``, ``few_unlabeled``, ``mean_teacher``, the control and the single-term
                                ablations with 20 % of the labels (the paper's second setting), compared with
                                ``few_20pct``
==============================  ======================================================================================

Consistency terms start at ``SEMI_START`` of the schedule (the paper's 0.7 of 500 epochs leaves a short CPU schedule
almost no semi-supervised steps); the ramps are the paper's, over the whole run. After every epoch the weights
predict the unlabeled cases of the few-label split (their labels are held out: ``labelsUnl_heldout``) on their
preprocessed images, and the Dice is logged per epoch (``unlabeled_dice`` in each ``run.json``).

``nnunet_mm compare`` then scores the held-out test predictions: every arm against ``few`` (the goal: ``few_unlabeled``
≥ ``few`` + 0.05 Dice with the interval excluding 0, ≥ 95 % of ``full``) and ``few_unlabeled`` against
``mean_teacher``. Runs already done are skipped, so the experiment can be continued arm by arm.

    python bench/bench_cmc.py --preset cpu --output bench_out/cmc                           # 2-core box
    python bench/bench_cmc.py --preset cpu --output bench_out/cmc --scenarios paired --arms full few --seeds 0
    python bench/bench_cmc.py --preset gpu --output bench_out/cmc_gpu --device cuda          # 3D, full size
    python bench/bench_cmc.py --smoke --output /tmp/cmc_smoke                                # every arm, a minute

Output in ``--output``: ``bench_cmc.json`` (settings, runs, comparisons), ``bench_cmc.md`` (the tables),
``bench_cmc.png`` (Dice on the unlabeled cases per epoch), ``compare/<scenario>/<baseline>/compare.{json,md,png}``.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import benchlib

from nnunet_mm.io.console import encodable
from nnunet_mm.io.figure_style import figure_style

SOURCE_IDS = {"paired": 740, "unpaired": 750}
PLANS = "nnUNetPlans"
FRACTION = 0.1  # the setting: source +1 few labels + unlabeled, +2 the same few labels alone
SECOND_FRACTION = 0.2  # the paper's second setting: source +3 and +4
SEMI_OFFSET = {FRACTION: 1, SECOND_FRACTION: 3}
SEMI_START = 0.3
PHANTOM = dict(phases=("pv", "art"), misregistration=False, lesion_kinds=("metastasis",), num_lesions=(1, 3),
               noise_std_hu=(6.0, 10.0))
AMOS_FIXTURE_ORGANS = (1, 2, 3, 6, 8, 9)


@dataclass(frozen=True)
class Preset:
    configuration: dict[str, str]  # per scenario
    shape: tuple[int, int, int]  # phantom z y x (paired scenario)
    unpaired_grid: tuple[tuple[int, int, int], tuple[float, float, float]]  # AMOS layout: shape, spacing (z y x)
    num_training: int
    num_test: int
    epochs: int
    iterations: dict[str, int]  # per epoch, per scenario
    batch_size: int | None  # replaces the planned batch size (None: nnU-Net's plans)


PRESETS = {
    "cpu": Preset({"paired": "2d", "unpaired": "2d"}, (12, 64, 64), ((12, 64, 64), (3.0, 1.25, 1.25)),
                  num_training=20, num_test=12, epochs=20, iterations={"paired": 25, "unpaired": 40}, batch_size=4),
    "gpu": Preset({"paired": "3d_fullres", "unpaired": "3d_fullres"}, (48, 128, 128),
                  ((48, 128, 128), (2.0, 1.5, 1.5)), num_training=60, num_test=30, epochs=100,
                  iterations={"paired": 250, "unpaired": 250}, batch_size=None),
}
SMOKE = Preset({"paired": "2d", "unpaired": "2d"}, (8, 48, 48), ((12, 32, 32), (3.0, 2.5, 2.5)), num_training=10,
               num_test=3, epochs=2, iterations={"paired": 2, "unpaired": 2}, batch_size=2)


@dataclass(frozen=True)
class Arm:
    trainer: str
    dataset_offset: int  # 0: all labels, 1 (3): 10 % (20 %) labels + unlabeled, 2 (4): 10 % (20 %) labels alone
    attributes: tuple[tuple[str, object], ...] = ()

    @property
    def fraction(self) -> float:
        return SECOND_FRACTION if self.dataset_offset in (3, 4) else FRACTION


ARMS = {
    "full": Arm("CMCTrainer", 0),
    "few": Arm("CMCTrainer", 2),
    "few_unlabeled": Arm("CMCTrainer", 1),
    "few_unlabeled_control": Arm("CMCTrainer", 1, (("consistency_scales", (0.0, 0.0)),)),
    "csc_only": Arm("CMCTrainer", 1, (("consistency_scales", (1.0, 0.0)),)),
    "cac_only": Arm("CMCTrainer", 1, (("consistency_scales", (0.0, 1.0)),)),
    "few_unlabeled_after_start": Arm("CMCTrainer", 1, (("consistency_ramp", "after_start"),)),
    "mean_teacher": Arm("CMCMeanTeacherTrainer", 1),
    "stock_full": Arm("nnUNetTrainer", 0),
    "few_20pct": Arm("CMCTrainer", 4),
    "few_20pct_unlabeled": Arm("CMCTrainer", 3),
    "mean_teacher_20pct": Arm("CMCMeanTeacherTrainer", 3),
    "control_20pct": Arm("CMCTrainer", 3, (("consistency_scales", (0.0, 0.0)),)),
    "csc_only_20pct": Arm("CMCTrainer", 3, (("consistency_scales", (1.0, 0.0)),)),
    "cac_only_20pct": Arm("CMCTrainer", 3, (("consistency_scales", (0.0, 1.0)),)),
}


def dataset_name(dataset_id: int) -> str:
    from nnunetv2.utilities.dataset_name_id_conversion import maybe_convert_to_dataset_name

    return maybe_convert_to_dataset_name(dataset_id)


# ------------------------------------------------------------------------------------------------------------------
# data and plans (once per scenario)


def write_source(scenario: str, preset: Preset, *, seed: int, test_seed: int, workdir: Path) -> tuple[int, ...]:
    """The fully labelled source dataset of a scenario in nnUNet_raw; returns the labels to evaluate."""
    dataset_id = SOURCE_IDS[scenario]
    raw = Path(os.environ["nnUNet_raw"])
    if scenario == "paired":
        from nnunet_mm.phantom import write_nnunet_raw
        write_nnunet_raw(raw, dataset_id=dataset_id, name="CMCBench_paired", num_training=preset.num_training,
                         num_test=preset.num_test, seed=seed, test_seed=test_seed, shape_zyx=preset.shape,
                         overwrite=True, **PHANTOM)
        return (1, 2)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "dataset_conversion"))
    import layout_unpaired  # the converter tests' AMOS layout (its own generator per case id)

    # the fixture's 12×32×32 grid at 2.5 mm leaves kidneys ~20 voxels: the same field of view on the preset's grid
    layout_unpaired.SHAPE_ZYX, layout_unpaired.SPACING_ZYX_MM = preset.unpaired_grid
    layout_unpaired._anatomy.cache_clear()

    from nnunet_mm.dataset_conversion.Dataset504_AMOS import convert
    # the fixture seeds each case's phantom with its number (CT ≤ 500 < MR): test numbers differ from training ones
    per_modality, test_per_modality = preset.num_training // 2, max(1, preset.num_test // 2)
    training = tuple(range(1, per_modality + 1)) + tuple(range(501, 501 + per_modality))
    test = tuple(range(100, 100 + test_per_modality)) + tuple(range(600, 600 + test_per_modality))
    source = workdir / "amos_source"
    shutil.rmtree(source, ignore_errors=True)
    layout_unpaired.write_amos(source, training=training, validation=test, test=(), coronal=())
    convert(source, dataset_id=dataset_id, dataset_name="CMCBench_unpaired", include_validation=False, overwrite=True)
    return AMOS_FIXTURE_ORGANS


def _copy_plans(source_id: int, target_id: int) -> None:
    """The source's plans (renamed) and fingerprint, and the target's dataset.json, into
    the target's preprocessed folder: plan once."""
    preprocessed = Path(os.environ["nnUNet_preprocessed"])
    source, target = preprocessed / dataset_name(source_id), preprocessed / dataset_name(target_id)
    target.mkdir(parents=True, exist_ok=True)
    plans = json.loads((source / f"{PLANS}.json").read_text(encoding="utf-8"))
    plans["dataset_name"] = target.name
    (target / f"{PLANS}.json").write_text(json.dumps(plans, indent=2), encoding="utf-8")
    shutil.copy2(source / "dataset_fingerprint.json", target / "dataset_fingerprint.json")
    shutil.copy2(Path(os.environ["nnUNet_raw"]) / target.name / "dataset.json", target / "dataset.json")


def _set_batch_size(dataset_id: int, configuration: str, batch_size: int | None) -> None:
    if batch_size is None:
        return
    plans_file = Path(os.environ["nnUNet_preprocessed"]) / dataset_name(dataset_id) / f"{PLANS}.json"
    plans = json.loads(plans_file.read_text(encoding="utf-8"))
    plans["configurations"][configuration]["batch_size"] = batch_size
    plans_file.write_text(json.dumps(plans, indent=2), encoding="utf-8")


def prepare_data(scenario: str, preset: Preset, *, seed: int, test_seed: int, num_processes: int,
                 workdir: Path) -> tuple[int, ...]:
    """Write the source, plan it once, derive and preprocess the label-fraction datasets; skipped when done."""
    source_id = SOURCE_IDS[scenario]
    marker = Path(os.environ["nnUNet_preprocessed"]) / f"bench_cmc_{scenario}.json"
    # what defines the data (not the schedule: --epochs and the arms share the prepared data)
    data = {k: v for k, v in asdict(preset).items() if k not in ("epochs", "iterations")}
    settings = json.loads(json.dumps({"preset": data, "seed": seed, "test_seed": test_seed,
                                      "fraction": FRACTION, "phantom": PHANTOM}))
    if marker.is_file() and json.loads(marker.read_text(encoding="utf-8"))["settings"] == settings:
        return tuple(json.loads(marker.read_text(encoding="utf-8"))["labels"])
    configuration = preset.configuration[scenario]
    labels = write_source(scenario, preset, seed=seed, test_seed=test_seed, workdir=workdir)
    benchlib.plan_and_preprocess(source_id, configuration, num_processes)
    _set_batch_size(source_id, configuration, preset.batch_size)
    make_fraction_datasets(source_id, FRACTION, configuration, num_processes)
    marker.write_text(json.dumps({"settings": settings, "labels": list(labels)}), encoding="utf-8")
    return labels


def prepare_second_fraction(scenario: str, preset: Preset, num_processes: int) -> None:
    """The 20 % datasets of an already prepared scenario, with the same plans; skipped when done."""
    marker = Path(os.environ["nnUNet_preprocessed"]) / f"bench_cmc_{scenario}_second_fraction.json"
    source_marker = Path(os.environ["nnUNet_preprocessed"]) / f"bench_cmc_{scenario}.json"
    if marker.is_file() and marker.read_text(encoding="utf-8") == source_marker.read_text(encoding="utf-8"):
        return
    make_fraction_datasets(SOURCE_IDS[scenario], SECOND_FRACTION, preset.configuration[scenario], num_processes)
    marker.write_text(source_marker.read_text(encoding="utf-8"), encoding="utf-8")


def make_fraction_datasets(source_id: int, fraction: float, configuration: str, num_processes: int) -> None:
    """``fraction`` of the labels + the rest unlabeled, and the same labels alone, preprocessed with the source's
    plans (the unlabeled cases with ``nnunet_mm preprocess-unlabeled``)."""
    from batchgenerators.utilities.file_and_folder_operations import load_json, save_json
    from nnunetv2.experiment_planning.plan_and_preprocess_api import preprocess_dataset

    from nnunet_mm.cmc.label_fraction import make_label_fraction_dataset
    from nnunet_mm.cmc.settings import UNLABELED_DIR_KEY
    from nnunet_mm.cmc.unlabeled import preprocess_unlabeled
    from nnunet_mm.settings import BLOCK_KEY, block_of

    semi_id = source_id + SEMI_OFFSET[fraction]
    semi = make_label_fraction_dataset(source_id, fraction, target_id=semi_id, overwrite=True)
    supervised = make_label_fraction_dataset(source_id, fraction, target_id=semi_id + 1,
                                             target_name=semi.name.split("_", 1)[1] + "_supervised", overwrite=True)
    shutil.rmtree(supervised / "imagesUnl")  # the same labelled cases, and no unlabeled ones
    dataset_json_file = str(supervised / "dataset.json")
    dataset_json = load_json(dataset_json_file)
    dataset_json[BLOCK_KEY] = {k: v for k, v in block_of(dataset_json, dataset_json_file).items()
                               if k != UNLABELED_DIR_KEY}
    save_json(dataset_json, dataset_json_file, sort_keys=False)
    for target_id in (semi_id, semi_id + 1):
        _copy_plans(source_id, target_id)
        preprocess_dataset(target_id, PLANS, configurations=(configuration,), num_processes=(num_processes,))
    preprocess_unlabeled(semi_id, configuration, num_processes=num_processes)


# ------------------------------------------------------------------------------------------------------------------
# runs


def unlabeled_case_ids(scenario: str, fraction: float) -> list[str]:
    """The cases whose labels the few-label split holds out (they are training cases of the source)."""
    folder = Path(os.environ["nnUNet_raw"]) / dataset_name(SOURCE_IDS[scenario] + SEMI_OFFSET[fraction]) / \
        "labelsUnl_heldout"
    return sorted(p.name.split(".")[0] for p in folder.iterdir())


def dice_on_preprocessed_cases(trainer, weights: dict, source_id: int, case_ids: list[str],
                               labels: tuple[int, ...]) -> dict[str, float]:
    """Mean Dice per label of ``weights`` on the source's preprocessed images of ``case_ids`` (nnU-Net's sliding
    window, no mirroring), against their preprocessed labels."""
    import numpy as np
    import torch
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
    from nnunetv2.training.dataloading.nnunet_dataset import nnUNetDatasetBlosc2

    folder = Path(os.environ["nnUNet_preprocessed"]) / dataset_name(source_id) / \
        trainer.configuration_manager.data_identifier
    dataset = nnUNetDatasetBlosc2(str(folder), case_ids)
    network = getattr(trainer, "unwrapped_network", trainer.network)  # nnUNetTrainer has no such property
    network.load_state_dict(weights)
    trainer.set_deep_supervision_enabled(False)  # full-resolution output only, as nnU-Net's predictor builds it
    network.eval()
    predictor = nnUNetPredictor(use_mirroring=False, device=trainer.device, allow_tqdm=False, verbose=False)
    predictor.manual_initialization(network, trainer.plans_manager, trainer.configuration_manager, None,
                                    trainer.dataset_json, type(trainer).__name__, None)
    per_label: dict[str, list[float]] = {str(label): [] for label in labels}
    for case in case_ids:
        data, seg, _, _ = dataset.load_case(case)
        with torch.no_grad():
            logits = predictor.predict_sliding_window_return_logits(torch.from_numpy(np.asarray(data)).float())
        prediction = logits.argmax(0).cpu().numpy()
        reference = np.asarray(seg)[0]
        for label in labels:
            predicted, true = prediction == label, reference == label
            if true.sum() + predicted.sum():
                per_label[str(label)].append(float(2 * (predicted & true).sum() / (predicted.sum() + true.sum())))
    return {label: round(float(np.mean(values)), 4) if values else None for label, values in per_label.items()}


def run_arm(name: str, scenario: str, seed: int, preset: Preset, labels: tuple[int, ...], output: Path,
            device: str, monitor_cases: int) -> dict:
    """Train one arm once (one seed), log Dice on the unlabeled cases per epoch, predict the test cases."""
    import time

    arm = ARMS[name]
    run_folder = output / "runs" / scenario / name / f"seed{seed}"
    record_file = run_folder / "run.json"
    if record_file.is_file():
        return json.loads(record_file.read_text(encoding="utf-8"))
    source_id = SOURCE_IDS[scenario]
    dataset_id = source_id + arm.dataset_offset
    epochs = tuple(range(1, preset.epochs + 1))
    trainer, timing, snapshots = benchlib.train(
        arm.trainer, dataset_name(dataset_id), device_name=device, epochs=preset.epochs,
        iterations=preset.iterations[scenario], configuration=preset.configuration[scenario],
        output_folder_base=run_folder / "model",
        seed=seed, snapshot_epochs=epochs, attributes={"semi_start_fraction": SEMI_START, **dict(arm.attributes)})
    monitored = unlabeled_case_ids(scenario, arm.fraction)[:monitor_cases]
    unlabeled_dice = {epoch: dice_on_preprocessed_cases(trainer, snapshots[epoch], source_id, monitored, labels)
                      for epoch in epochs}
    start = time.perf_counter()
    images = Path(os.environ["nnUNet_raw"]) / dataset_name(source_id) / "imagesTs"
    benchlib.predict_folder(run_folder / "model", images, run_folder / "test", device_name=device,
                            weights=snapshots[preset.epochs])
    record = {"arm": name, "scenario": scenario, "seed": seed, "trainer": arm.trainer,
              "dataset": dataset_name(dataset_id), "attributes": {k: v for k, v in arm.attributes},
              "parameters": sum(p.numel() for p in trainer.network.parameters()),
              "monitored_unlabeled_cases": monitored, "unlabeled_dice": unlabeled_dice,
              "predict_seconds": round(time.perf_counter() - start, 1), **timing}
    shutil.rmtree(run_folder / "model" / "fold_all", ignore_errors=True)  # checkpoints: not needed afterwards
    record_file.write_text(json.dumps(record, indent=2), encoding="utf-8")
    return record


def compare_scenario(scenario: str, labels: tuple[int, ...], seeds: list[int], output: Path) -> dict:
    """``nnunet_mm compare``: every arm against ``few``; ``few_unlabeled`` against ``mean_teacher``."""
    from nnunet_mm.evaluation.compare import compare_arms
    from nnunet_mm.evaluation.report import comparison_json, write_report
    from nnunet_mm.evaluation.runs import collect_arm

    raw = Path(os.environ["nnUNet_raw"]) / dataset_name(SOURCE_IDS[scenario])
    runs = {}
    for arm in ARMS:
        folders = [output / "runs" / scenario / arm / f"seed{s}" for s in seeds]
        runs[arm] = [folder / "test" for folder in folders if (folder / "run.json").is_file()]
    runs = {arm: folders for arm, folders in runs.items() if folders}
    results = {}
    first = [arm for arm in runs if ARMS[arm].fraction == FRACTION]
    second = ["full"] + [arm for arm in runs if ARMS[arm].fraction == SECOND_FRACTION]
    for baseline, arms in (("few", first), ("mean_teacher", ["mean_teacher", "few_unlabeled"]),
                           ("few_20pct", second)):
        arms = [arm for arm in arms if arm in runs]
        if baseline not in arms or len(arms) < 2:
            continue
        collected = [collect_arm(arm, runs[arm], dataset_json=raw / "dataset.json") for arm in arms]
        comparison = compare_arms(collected, raw / "labelsTs", baseline=baseline, labels=list(labels),
                                  dataset_json=raw / "dataset.json", progress=False)
        write_report(comparison, output / "compare" / scenario / baseline, overwrite=True)
        results[baseline] = comparison_json(comparison)
    return results


# ------------------------------------------------------------------------------------------------------------------
# report


def _cell(summary: dict | None) -> str:
    if summary is None or summary.get("dice_mean") is None:
        return "–"
    return f"{summary['dice_mean']:.3f}"


def _difference(summary: dict | None) -> str:
    difference = (summary or {}).get("difference_to_baseline")
    if not difference or difference["mean"] is None:
        return "baseline" if summary else "–"
    low, high = difference["ci_low"], difference["ci_high"]
    interval = "" if low is None else f" [{low:+.3f}, {high:+.3f}]"
    return f"{difference['mean']:+.3f}{interval} ({difference['better']}/{difference['worse']})"


def _mean_over_labels(summaries: dict, arm: str) -> float | None:
    values = [s[arm]["dice_mean"] for s in summaries.values() if arm in s and s[arm]["dice_mean"] is not None]
    return sum(values) / len(values) if values else None


def scenario_table(scenario: str, comparison: dict, records: list[dict], baseline: str = "few") -> list[str]:
    """Per arm: runs, Dice per label with the paired difference to ``baseline``, mean over labels, share of
    ``full``, Dice on the unlabeled cases at the end, cost."""
    against = comparison.get(baseline)
    if against is None:
        return []
    summaries = against["summary"]
    label_names = list(summaries)
    full = _mean_over_labels(summaries, "full")
    header = ["arm", "runs", *[f"{n} Dice · Δ vs {baseline} [95 % CI] (better/worse)" for n in label_names],
              "mean Dice", "% of full", "unlabeled-case Dice (end)", "train min"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for arm in ARMS:
        if arm not in summaries[label_names[0]]:
            continue
        runs = [r for r in records if r["arm"] == arm and r["scenario"] == scenario]
        mean = _mean_over_labels(summaries, arm)
        share = f"{100 * mean / full:.0f} %" if full and mean is not None else "–"
        final = [r["unlabeled_dice"][str(max(int(e) for e in r["unlabeled_dice"]))] for r in runs]
        unlabeled = [sum(v for v in d.values() if v is not None) / max(1, sum(v is not None for v in d.values()))
                     for d in final]
        cells = [f"{_cell(summaries[n][arm])} · {_difference(summaries[n][arm])}" for n in label_names]
        lines.append(f"| {arm} | {len(runs)} | " + " | ".join(cells) +
                     f" | {mean:.3f} | {share} | {sum(unlabeled) / len(unlabeled):.3f} | "
                     f"{sum(r['train_seconds'] for r in runs) / len(runs) / 60:.1f} |")
    return lines


@figure_style()
def save_unlabeled_dice_figure(records: list[dict], png: Path) -> None:
    """Mean Dice over labels on the held-out labels of the unlabeled cases, per epoch, per arm (mean over seeds)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scenarios = sorted({r["scenario"] for r in records})
    fig, axes = plt.subplots(1, len(scenarios), figsize=(5.5 * len(scenarios), 4), squeeze=False)
    for axis, scenario in zip(axes[0], scenarios):
        for arm in ARMS:
            runs = [r for r in records if r["arm"] == arm and r["scenario"] == scenario]
            if not runs:
                continue
            epochs = sorted(int(e) for e in runs[0]["unlabeled_dice"])
            curve = []
            for epoch in epochs:
                per_run = [[v for v in r["unlabeled_dice"][str(epoch)].values() if v is not None] for r in runs]
                curve.append(sum(sum(v) / len(v) for v in per_run if v) / max(1, sum(1 for v in per_run if v)))
            axis.plot(epochs, curve, marker="o", markersize=3, label=f"{arm} ({len(runs)})")
        axis.set_title(f"{scenario}: Dice on the unlabeled cases (held-out labels)", fontsize=9)
        axis.set_xlabel("epoch")
        axis.set_ylabel("mean Dice over labels")
        axis.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)


def write_report(args: argparse.Namespace, preset: Preset, comparisons: dict) -> str:
    records = [json.loads(f.read_text(encoding="utf-8")) for f in sorted((args.output / "runs").glob("*/*/seed*/run.json"))]
    report = {"preset": asdict(preset), "fraction": FRACTION, "semi_start": SEMI_START, "phantom": PHANTOM,
              "data_seed": args.data_seed, "test_seed": args.test_seed, "runs": records, "comparisons": comparisons}
    (args.output / "bench_cmc.json").write_text(json.dumps(report, indent=2, default=str), encoding="utf-8")
    lines = [f"# CMC experiment ({'smoke' if args.smoke else args.preset} preset)", ""]
    for scenario, comparison in comparisons.items():
        lines += [f"## {scenario} (Dice means over the test cases, each averaged over an arm's seeds)", "",
                  *scenario_table(scenario, comparison, records), ""]
        if "few_20pct" in comparison:
            lines += [f"### {scenario}, 20 % labels", "",
                      *scenario_table(scenario, comparison, records, baseline="few_20pct"), ""]
        if "mean_teacher" in comparison:
            lines += [f"### {scenario}: few_unlabeled against mean_teacher", "",
                      (args.output / "compare" / scenario / "mean_teacher" / "compare.md").read_text(encoding="utf-8"),
                      ""]
    if records:
        save_unlabeled_dice_figure(records, args.output / "bench_cmc.png")
    text = "\n".join(lines)
    (args.output / "bench_cmc.md").write_text(text, encoding="utf-8")
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="cpu")
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--scenarios", nargs="+", choices=list(SOURCE_IDS), default=list(SOURCE_IDS))
    parser.add_argument("--arms", nargs="+", choices=list(ARMS), default=list(ARMS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--data-seed", type=int, default=7, help="generator seed of the training cases")
    parser.add_argument("--test-seed", type=int, default=8, help="generator seed of the held-out cases")
    parser.add_argument("--monitor-cases", type=int, default=6,
                        help="unlabeled cases whose held-out labels are scored after every epoch [6]")
    parser.add_argument("--smoke", action="store_true", help="tiny data and schedule: checks that everything runs")
    parser.add_argument("-np", type=int, default=2, help="processes for planning and preprocessing")
    parser.add_argument("--epochs", type=int, default=None,
                        help="replaces the preset's number of epochs (with another --output, so that runs of "
                             "different schedules stay apart)")
    parser.add_argument("--second-fraction", action="store_true",
                        help="also prepare the 20 %% datasets (arms *_20pct)")
    parser.add_argument("--report-only", action="store_true",
                        help="train nothing: compare the runs that exist and write the report")
    args = parser.parse_args(argv)

    preset = SMOKE if args.smoke else PRESETS[args.preset]
    if args.epochs is not None:
        preset = replace(preset, epochs=args.epochs)
    args.output = args.output.resolve()
    args.output.mkdir(parents=True, exist_ok=True)
    benchlib.set_nnunet_paths(args.output / "work")
    labels = {scenario: prepare_data(scenario, preset, seed=args.data_seed, test_seed=args.test_seed,
                                     num_processes=args.np, workdir=args.output / "work")
              for scenario in args.scenarios}
    if args.second_fraction or any(ARMS[arm].fraction == SECOND_FRACTION for arm in args.arms if not args.report_only):
        for scenario in args.scenarios:
            prepare_second_fraction(scenario, preset, args.np)
    for seed in [] if args.report_only else args.seeds:  # seed by seed: a stopped experiment has complete seeds
        for arm in args.arms:
            for scenario in args.scenarios:
                print(f"[bench_cmc] {scenario} / {arm} / seed {seed}", flush=True)
                run_arm(arm, scenario, seed, preset, labels[scenario], args.output, args.device, args.monitor_cases)
    comparisons = {scenario: compare_scenario(scenario, labels[scenario], args.seeds, args.output) for scenario in args.scenarios}
    print(encodable(write_report(args, preset, comparisons)))
    return 0


if __name__ == "__main__":
    from nnunet_mm.io.console import tolerate_unencodable_output

    tolerate_unencodable_output()
    sys.exit(main())
