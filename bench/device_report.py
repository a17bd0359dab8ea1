"""The device check's two Python steps (``bench/device_check.sh`` runs them): a time-boxed CMG vs stock quality run,
and the merge of every part into ``device_check.json`` and ``device_check.png``.

``quality``: ``bench/bench_cmg.py`` on the misregistered scenario, arms ``stock`` and ``cmg``, one seed, with the
largest schedule that fits ``--budget-s`` (``--preset auto``): ``short`` (the CPU preset's 2D data, 8 epochs of 25
iterations) from 240 s on, else ``smoke`` (bench_cmg's ``--smoke``: checks that both arms train and predict, the
Dice values mean nothing) from 60 s on, else nothing (recorded as skipped). nnU-Net's compile is switched off for
this part unless ``--compile`` (the schedule is too short to repay a compilation per arm; the speed part measures
with compile on). Writes ``<output>/bench_cmg.json`` (bench_cmg's) and ``<output>/quality_settings.json``.

``report``: reads the parts' results (``<work>/speed/bench_trainers.json``, ``<work>/compile/bench_compile.json``,
``<work>/quality/``) and the status the shell script recorded for each part (``<work>/status/<part>.json``: exit
code, seconds, time limit), and writes into ``--output``:

* ``device_check.json``: ``environment`` (GPU, torch, CUDA, cuDNN, package versions, nnU-Net variables), ``parts``
  (per part: ``status`` ok / failed / timed out / skipped, ``seconds``, ``limit_s``, the tail of its log unless ok,
  and its full result, partial when the part was stopped), ``summary`` (per trainer: the ratios to stock, peak memory
  against the planner's estimate, graph breaks and recompiles; the issue's goals beside the measured values; the
  quality comparison) — the summary is printed too;
* ``device_check.png``: ms/iteration ratio to stock per trainer with the goal lines, predict ratio, peak memory
  against the estimate, graph breaks and recompiles.

Both files are written atomically (a reader sees the old file or the new one).

    python bench/device_report.py quality --output /tmp/q --device cuda --budget-s 200
    python bench/device_report.py report --output OUT --work WORK
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import subprocess
import sys
import time
from pathlib import Path

from nnunet_mm.io.figure_style import figure_style
from nnunet_mm.io.staging import atomic_file

PARTS = ("prepare", "speed", "compile", "quality")
TIMED_OUT_CODES = (124, 137)  # coreutils timeout: 124 after SIGTERM, 128+9 when --kill-after had to SIGKILL
LOG_TAIL_CHARS = 4000
QUALITY_ARMS = ("stock", "cmg")
QUALITY_MIN_SHORT_S, QUALITY_MIN_SMOKE_S = 240, 60

# ------------------------------------------------------------------------------------------------------------------
# quality


def quality_preset(budget_s: float, choice: str):
    """(name, bench_cmg preset or None) for the time left (see the module docstring)."""
    import bench_cmg

    short = bench_cmg.Preset("2d", (12, 64, 64), num_training=16, num_test=16, epochs=8, iterations=25)
    if choice == "auto":
        choice = "short" if budget_s >= QUALITY_MIN_SHORT_S else "smoke" if budget_s >= QUALITY_MIN_SMOKE_S else "skip"
    presets = {"short": short, "smoke": bench_cmg.SMOKE, **bench_cmg.PRESETS, "skip": None}
    return choice, presets[choice]


def run_quality(args: argparse.Namespace) -> int:
    import bench_cmg

    output = Path(args.output).resolve()
    output.mkdir(parents=True, exist_ok=True)
    name, preset = quality_preset(args.budget_s, args.preset)
    settings = {"preset": name, "budget_s": args.budget_s, "arms": list(QUALITY_ARMS), "scenario": "misregistered",
                "seeds": [0], "compile": args.compile,
                "meaning": {"short": "a short schedule: a rough first look, not the experiment's result",
                            "smoke": "plumbing only: both arms train and predict; the Dice values mean nothing"}
                .get(name, "")}
    if preset is not None:
        from dataclasses import asdict
        settings["schedule"] = asdict(preset)
    _write_json(output / "quality_settings.json", settings)
    if preset is None:
        print(f"quality: {args.budget_s:.0f} s left, less than the {QUALITY_MIN_SMOKE_S} s a smoke run needs: skipped")
        return 0
    if not args.compile:
        os.environ["nnUNet_compile"] = "f"
    bench_cmg.PRESETS["device_check"] = preset
    argv = ["--preset", "device_check", "--output", str(output), "--device", args.device,
            "--scenarios", "misregistered", "--arms", *QUALITY_ARMS, "--seeds", "0", "-np", str(args.np)]
    print(f"quality: preset {name} ({preset}), {args.budget_s:.0f} s budget", flush=True)
    return bench_cmg.main(argv)


def quality_summary(folder: Path) -> dict:
    """Tumour and liver Dice per arm at the end of the schedule, the difference to stock, the run costs."""
    settings = _read_json(folder / "quality_settings.json") or {}
    result = _read_json(folder / "bench_cmg.json")
    summary: dict = {"preset": settings.get("preset"), "meaning": settings.get("meaning")}
    if result is None:
        return summary
    final = ((result.get("comparisons") or {}).get("misregistered") or {}).get("all")
    if final:
        for label in ("tumor", "liver"):
            for arm, values in (final.get("summary", {}).get(label) or {}).items():
                difference = values.get("difference_to_baseline") or {}
                summary.setdefault(arm, {})[label] = {
                    "dice_mean": values.get("dice_mean"), "difference_to_stock": difference.get("mean"),
                    "ci": [difference.get("ci_low"), difference.get("ci_high")] if difference else None,
                    "lesion_recall": values.get("lesion_recall")}
    for run in result.get("runs", []):
        summary.setdefault(run["arm"], {})["run"] = {k: run.get(k) for k in ("train_seconds", "step_ms_median",
                                                                               "parameters")}
    return summary


# ------------------------------------------------------------------------------------------------------------------
# report


def _read_json(path: Path):
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _write_json(path: Path, content) -> None:
    with atomic_file(path) as partial:
        partial.write_text(json.dumps(content, indent=2, default=str), encoding="utf-8")


def _log_tail(path: Path, limit: int = LOG_TAIL_CHARS) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")[-limit:]
    except OSError:
        return f"(no log at {path})"


def _version(distribution: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def environment() -> dict:
    """Where the check ran: machine, GPU, torch/CUDA/cuDNN, package versions, the variables that change results."""
    env = {"hostname": socket.gethostname(), "platform": platform.platform(), "python": sys.version.split()[0],
           "cpu_count": os.cpu_count(),
           "variables": {k: os.environ.get(k) for k in ("nnUNet_n_proc_DA", "nnUNet_def_n_proc", "nnUNet_compile",
                                                        "OMP_NUM_THREADS", "CUDA_VISIBLE_DEVICES")},
           "versions": {name: _version(name) for name in ("torch", "nnunetv2", "monai", "numpy", "triton",
                                                          "dynamic_network_architectures", "batchgenerators",
                                                          "nnunet_mm")}}
    try:
        import torch

        env["torch"] = torch.__version__
        env["cuda"] = torch.version.cuda
        env["cuda_available"] = torch.cuda.is_available()
        if torch.cuda.is_available():
            properties = torch.cuda.get_device_properties(0)
            env.update(gpu=torch.cuda.get_device_name(0), gpu_memory_gb=round(properties.total_memory / 1024 ** 3, 1),
                       gpu_count=torch.cuda.device_count(), cudnn=torch.backends.cudnn.version(),
                       capability=".".join(map(str, torch.cuda.get_device_capability(0))))
    except Exception as error:  # noqa: BLE001 - the report must come back whatever the environment
        env["torch_error"] = repr(error)
    try:
        env["driver"] = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                       capture_output=True, text=True, timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        env["driver"] = None
    try:
        env["git_commit"] = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10,
                                           cwd=Path(__file__).resolve().parent).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        env["git_commit"] = None
    return env


RESULT_FILES = {"speed": "speed/bench_trainers.json", "compile": "compile/bench_compile.json",
                "quality": "quality/bench_cmg.json"}


def part_report(name: str, work: Path, logs: Path) -> dict:
    """One part: its status (from the exit code the shell recorded), seconds, log tail unless ok, and result."""
    status = _read_json(work / "status" / f"{name}.json")
    if status is None:
        return {"status": "not run", "reason": "the shell recorded no status for this part"}
    part = {"seconds": status.get("seconds"), "limit_s": status.get("limit_s")}
    if status.get("skipped"):
        part.update(status="skipped", reason=status["skipped"])
        return part
    rc = status.get("rc")
    part["exit_code"] = rc
    part["status"] = "ok" if rc == 0 else "timed out" if rc in TIMED_OUT_CODES else "failed"
    if part["status"] != "ok":
        part["log_tail"] = _log_tail(logs / f"{name}.log")
    if name == "prepare":
        return part
    if name == "quality":
        part["result"] = quality_summary(work / "quality")
        if part["status"] == "ok" and part["result"].get("preset") == "skip":
            part.update(status="skipped", reason="too little time left for even a smoke run")
        return part
    result = _read_json(work / RESULT_FILES[name])
    if result is None:
        if part["status"] == "ok":
            part.update(status="failed", reason=f"no result file {RESULT_FILES[name]}",
                        log_tail=_log_tail(logs / f"{name}.log"))
    else:
        part["result"] = result
        for record in result.get("results", []):
            if record.get("status") == "running":  # the part was stopped while this trainer ran
                record.update(status="interrupted", error=f"the {name} part was stopped ({part['status']}, exit "
                                                          f"{rc}) while this trainer ran")
        part["partial"] = part["status"] != "ok" or any(r.get("status") != "ok" for r in result.get("results", []))
    return part


def _last_line(text: str | None) -> str | None:
    lines = (text or "").strip().splitlines()
    return lines[-1] if lines else None


def summarise(parts: dict, env: dict, device_type: str) -> dict:
    """Per trainer: speed, memory and compile figures; the goals; the quality comparison; the parts' statuses."""
    speed = (parts.get("speed", {}).get("result") or {}).get("results", [])
    compiled = (parts.get("compile", {}).get("result") or {}).get("results", [])
    trainers: dict[str, dict] = {}
    for r in speed:
        estimate = r.get("memory_estimate") or {}
        trainers.setdefault(r["trainer"], {}).update({
            "speed_status": r.get("status"), "speed_error": _last_line(r.get("error")),
            "gpu_only_ms": r.get("ms_per_it_no_dataloading"),
            "gpu_only_ratio": r.get("ms_per_it_no_dataloading_ratio"),
            "with_da_ms": r.get("ms_per_it_with_dataloading"),
            "with_da_ratio": r.get("ms_per_it_with_dataloading_ratio"),
            "predict_s": r.get("predict_s_per_case"), "predict_ratio": r.get("predict_s_per_case_ratio"),
            "peak_gb": r.get("peak_memory_gb"), "estimate_gb": estimate.get("estimate_gb"),
            "peak_vs_estimate": r.get("peak_memory_vs_estimate"), "warmup_s": r.get("warmup_s"),
            "recompiles_while_timing": r.get("recompiles_during_timing")})
    for r in compiled:
        trainers.setdefault(r["trainer"], {}).update({
            "compile_status": r.get("status"),
            "compile_error": _last_line(r.get("error")),
            "train_graph_breaks": (r.get("training_forward") or {}).get("breaks"),
            "inference_graph_breaks": (r.get("inference_forward") or {}).get("breaks"),
            "frames_per_step": r.get("frames_per_step"), "recompiles": r.get("recompiles"),
            "autocast_gradient_cosine": (r.get("precision") or {}).get("gradient_cosine"),
            "autocast_finite": (r.get("precision") or {}).get("finite")})
    goals = (parts.get("speed", {}).get("result") or {}).get("goals", [])
    return {"device": env.get("gpu") or f"cpu ({env.get('cpu_count')} cores)", "device_type": device_type,
            "note": None if device_type == "cuda" else
            "CPU dry run: the numbers check the plumbing and mean nothing for the GPU goals",
            "parts": {name: {"status": p.get("status"), "seconds": p.get("seconds"), "limit_s": p.get("limit_s")}
                      for name, p in parts.items()},
            "trainers": trainers, "goals": goals,
            "quality": (parts.get("quality", {}).get("result") or None)}


def summary_lines(summary: dict) -> list[str]:
    """The summary as printed: device and parts, one JSON line per trainer, the goals, the quality comparison."""
    lines = [f"device check on {summary['device']}" + (f" -- {summary['note']}" if summary.get("note") else ""),
             "parts: " + json.dumps(summary["parts"])]
    lines += [f"{name}: {json.dumps(values, default=str)}" for name, values in summary["trainers"].items()]
    lines += goal_lines(summary)
    if summary.get("quality"):
        lines.append("quality: " + json.dumps(summary["quality"], default=str))
    return lines


def goal_lines(summary: dict) -> list[str]:
    on_gpu = summary["device_type"] == "cuda"
    label = "measured" if on_gpu else "measured on CPU (says nothing about the goal)"
    lines = [f"{'goal':<72} {label}"]
    for goal in summary["goals"]:
        value = goal.get("measured")
        verdict = "" if goal.get("met") is None or not on_gpu else " ok" if goal["met"] else " MISSED"
        text = ("not measured" + ("" if on_gpu else " on a GPU")) if value is None else f"{value:.3f}{verdict}"
        lines.append(f"{goal['goal']:<72} {text}")
    return lines


@figure_style()
def save_figure(summary: dict, png: Path) -> None:
    """Four panels: ms/it ratio to stock (goal lines), predict ratio, peak memory vs estimate, graph breaks."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_trainers import MEMORY_GOAL_TOLERANCE, PREDICT_GOAL, SPEED_GOALS

    trainers = summary["trainers"]
    names = list(trainers)
    x = np.arange(len(names))
    short = [n.replace("Trainer", "") or n for n in names]

    def values(key):
        return np.array([np.nan if trainers[n].get(key) is None else float(trainers[n][key]) for n in names])

    fig, axes = plt.subplots(2, 2, figsize=(14, 9))
    (speed_axis, predict_axis), (memory_axis, compile_axis) = axes
    for axis, offset, key, label in ((speed_axis, -0.2, "gpu_only_ratio", "GPU only (fixed batch)"),
                                     (speed_axis, 0.2, "with_da_ratio", "with data augmentation")):
        bars = axis.bar(x + offset, np.nan_to_num(values(key)), width=0.4, label=label)
        axis.bar_label(bars, labels=[f"{v:.2f}" if not np.isnan(v) else "n/a" for v in values(key)], fontsize=7)
    for i, name in enumerate(names):
        if name in SPEED_GOALS:
            speed_axis.hlines(SPEED_GOALS[name], i - 0.45, i + 0.45, colors="red", linestyles="--")
    speed_axis.axhline(1.0, color="grey", lw=0.8)
    speed_axis.set_title("ms/iteration, ratio to nnUNetTrainer (red: goal, GPU only)", fontsize=9)

    predict = values("predict_ratio")
    bars = predict_axis.bar(x, np.nan_to_num(predict), width=0.6, color="tab:green")
    predict_axis.bar_label(bars, labels=[f"{v:.2f}" if not np.isnan(v) else "n/a" for v in predict], fontsize=7)
    predict_axis.axhline(PREDICT_GOAL, color="red", ls="--", label=f"goal {PREDICT_GOAL}x")
    predict_axis.axhline(1.0, color="grey", lw=0.8)
    predict_axis.set_title("predict s/case (sliding window, mirroring), ratio to nnUNetTrainer", fontsize=9)

    peak, estimate = values("peak_gb"), values("estimate_gb")
    memory_axis.bar(x - 0.2, np.nan_to_num(peak), width=0.4, label="peak max_memory_allocated")
    memory_axis.bar(x + 0.2, np.nan_to_num(estimate), width=0.4, label="planner's estimate")
    memory_axis.errorbar(x + 0.2, np.nan_to_num(estimate), yerr=MEMORY_GOAL_TOLERANCE * np.nan_to_num(estimate),
                         fmt="none", ecolor="red", capsize=4, label=f"goal: within {MEMORY_GOAL_TOLERANCE:.0%}")
    if np.all(np.isnan(peak)):
        memory_axis.text(0.02, 0.95, "peak memory not measured (no CUDA)", transform=memory_axis.transAxes,
                         ha="left", va="top", fontsize=9)
    memory_axis.set_ylabel("GB")
    memory_axis.set_title("training memory: measured peak vs the planner's estimate", fontsize=9)

    for offset, key, label in ((-0.27, "train_graph_breaks", "breaks, training forward"),
                               (0.0, "inference_graph_breaks", "breaks, inference forward"),
                               (0.27, "recompiles", "recompiles over the steps")):
        data = values(key)
        bars = compile_axis.bar(x + offset, np.nan_to_num(data), width=0.27, label=label)
        compile_axis.bar_label(bars, labels=[f"{v:.0f}" if not np.isnan(v) else "n/a" for v in data], fontsize=7)
    counts = np.concatenate([values(k) for k in ("train_graph_breaks", "inference_graph_breaks", "recompiles")])
    compile_axis.set_ylim(0, max(1.0, float(np.nanmax(counts)) * 1.15) if not np.all(np.isnan(counts)) else 1.0)
    compile_axis.set_title("torch.compile readiness (0 everywhere is the goal)", fontsize=9)

    for axis in axes.flat:
        axis.set_xticks(x, short, rotation=20, fontsize=8)
        axis.legend(fontsize=7)
    parts = ", ".join(f"{name} {p['status']}" for name, p in summary["parts"].items())
    title = f"device check on {summary['device']}: {parts}"
    if summary.get("note"):
        title += f"\n{summary['note']}"
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    with atomic_file(png) as partial:
        fig.savefig(partial, dpi=100, format="png")
    plt.close(fig)


def run_report(args: argparse.Namespace) -> int:
    output, work = Path(args.output).resolve(), Path(args.work).resolve()
    logs = output / "logs"
    env = environment()
    parts = {name: part_report(name, work, logs) for name in PARTS}
    device_type = args.device.split(":")[0]
    summary = summarise(parts, env, device_type)
    report = {"created": time.strftime("%Y-%m-%d %H:%M:%S"), "options": json.loads(args.options or "{}"),
              "environment": env, "summary": summary, "parts": parts}
    _write_json(output / "device_check.json", report)
    try:
        save_figure(summary, output / "device_check.png")
    except Exception as error:  # noqa: BLE001 - the JSON is what matters; say why there is no figure
        report["figure_error"] = repr(error)
        _write_json(output / "device_check.json", report)
        print(f"device_check.png not written: {error!r}")
    print("\n".join(summary_lines(summary)))
    print(f"wrote {output / 'device_check.json'} and {output / 'device_check.png'}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    quality = commands.add_parser("quality", help="time-boxed CMG vs stock run")
    quality.add_argument("--output", required=True)
    quality.add_argument("--device", default="cuda")
    quality.add_argument("--budget-s", type=float, required=True, help="seconds this part may take")
    quality.add_argument("--preset", default="auto", choices=("auto", "short", "smoke", "cpu", "gpu", "skip"))
    quality.add_argument("--compile", action="store_true", help="keep nnU-Net's torch.compile on")
    quality.add_argument("-np", type=int, default=2, help="processes for planning and preprocessing")
    report = commands.add_parser("report", help="merge the parts into device_check.json and device_check.png")
    report.add_argument("--output", required=True)
    report.add_argument("--work", required=True)
    report.add_argument("--device", default="cuda")
    report.add_argument("--options", default=None, help="the shell script's options, as JSON")
    args = parser.parse_args(argv)
    return run_quality(args) if args.command == "quality" else run_report(args)


if __name__ == "__main__":
    from nnunet_mm.io.console import tolerate_unencodable_output

    tolerate_unencodable_output()
    sys.exit(main())
