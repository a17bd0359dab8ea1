"""A CPU dry run of the GPU device check (``bench/device_check.sh``): every part, every trainer, one JSON, one PNG.

The script runs once, as on the GPU machine but with ``--device cpu --tiny`` (4 cases of 16x32x32, two channels, a
narrow U-Net, one timed iteration; speed and compile side by side), in an ASCII locale, with the quality part given
a 1-second limit: that part must come back as timed out while the other parts still report every trainer.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TRAINERS = ("nnUNetTrainer", "MultiModalTrainer", "CMGTrainer", "CMCTrainer", "SynthTumorTrainer",
            "MASPriorTrainer", "WeakLabelTrainer")
SPEED_GOAL_TRAINERS = {"MultiModalTrainer", "CMGTrainer", "CMCTrainer", "SynthTumorTrainer"}


def _ok_or_reason(record: dict, part: str) -> None:
    """A trainer's record in a part: ok, or a status that says why (with the error text)."""
    assert record["status"] == "ok" or (record["status"] in ("failed", "timed out", "skipped") and record.get("error")), \
        f"{part}/{record['trainer']}: {record['status']} without a reason: {record}"


@pytest.mark.slow
def test_device_check_cpu_dry_run_reports_every_part_and_trainer(tmp_path):
    output, work = tmp_path / "out", tmp_path / "work"
    env = {key: value for key, value in os.environ.items()
           if not key.startswith("nnUNet_") and key not in ("PYTHONIOENCODING", "PYTHONUTF8")}
    env.update(PYTHON=sys.executable, nnUNet_n_proc_DA="1", nnUNet_def_n_proc="1", OMP_NUM_THREADS="1",
               LC_ALL="C", LANG="C", PYTHONUTF8="0")  # an ASCII locale, as on many cluster nodes
    start = time.monotonic()
    done = subprocess.run(["bash", "bench/device_check.sh", "--output", str(output), "--device", "cpu", "--tiny",
                           "--workdir", str(work), "--timeout", "quality=1"],
                          cwd=REPO, env=env, capture_output=True, encoding="utf-8", errors="replace", timeout=900)
    seconds = time.monotonic() - start
    assert done.returncode == 0, f"device_check.sh failed:\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"

    # one JSON and one PNG in the output folder (and the parts' logs)
    assert sorted(p.name for p in output.iterdir() if p.is_file()) == ["device_check.json", "device_check.png"]
    assert (output / "device_check.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (output / "device_check.png").stat().st_size > 10_000
    assert {p.name for p in (output / "logs").iterdir()} >= {"prepare.log", "speed.log", "compile.log", "quality.log",
                                                              "report.log"}
    report = json.loads((output / "device_check.json").read_text(encoding="utf-8"))
    parts = report["parts"]
    assert set(parts) == {"prepare", "speed", "compile", "quality"}
    assert parts["prepare"]["status"] == "ok", parts["prepare"].get("log_tail")

    # the part killed by its time limit is recorded as such, with its seconds and log tail ...
    quality = parts["quality"]
    assert quality["status"] == "timed out", quality
    assert quality["limit_s"] == 1 and quality["seconds"] < 30 and quality["exit_code"] in (124, 137)
    assert "log_tail" in quality

    # ... while the other parts report every trainer
    for name in ("speed", "compile"):
        assert parts[name]["status"] == "ok", f"{name}: {parts[name].get('log_tail', '')}"
        assert parts[name]["seconds"] > 0
        assert [r["trainer"] for r in parts[name]["result"]["results"]] == list(TRAINERS)
        for record in parts[name]["result"]["results"]:
            _ok_or_reason(record, name)

    speed = {r["trainer"]: r for r in parts["speed"]["result"]["results"]}
    for trainer, record in speed.items():
        if record["status"] != "ok":
            continue
        assert record["ms_per_it_no_dataloading"] > 0 and record["ms_per_it_with_dataloading"] > 0
        assert record["predict_s_per_case"] > 0
        assert record["ms_per_it_no_dataloading_ratio"] > 0 and record["predict_s_per_case_ratio"] > 0
        assert record["memory_estimate"]["estimate_gb"] > 0  # the planner's estimate, even without a GPU
        assert record.get("peak_memory_gb") is None  # measured on CUDA only
        assert record["compiled"] is False  # nnU-Net's default on the CPU
    assert speed["nnUNetTrainer"]["ms_per_it_no_dataloading_ratio"] == 1.0
    assert speed["CMGTrainer"]["network"] == "CMGUNet" and speed["CMCTrainer"]["network"] == "CMCUNet"

    compiled = {r["trainer"]: r for r in parts["compile"]["result"]["results"]}
    assert parts["compile"]["result"]["backend"] == "eager"
    for trainer, record in compiled.items():
        if record["status"] != "ok":
            continue
        assert record["step_kinds"] == ["real", "empty mask", "real", "all foreground"]
        assert len(record["frames_per_step"]) == 4 and record["frames"] >= 1
        assert record["recompiles"] == record["frames_per_step"][-1] - record["frames_per_step"][0]
        for forward in ("training_forward", "inference_forward"):
            assert record[forward]["graphs"] >= 1 and record[forward]["breaks"] >= 0
        precision = record["precision"]  # the gradient under the step's autocast (bfloat16 on the CPU)
        if trainer == "nnUNetTrainer":
            assert "skipped" in precision
        else:
            assert precision["autocast_dtype"] == "bfloat16" and precision["finite"] is True
            assert -1.0 <= precision["gradient_cosine"] <= 1.0

    # the summary: every trainer, the goals beside the measured values, the environment
    summary = report["summary"]
    assert summary["device_type"] == "cpu" and "mean nothing" in summary["note"]
    assert set(summary["trainers"]) == set(TRAINERS)
    assert {g["trainer"] for g in summary["goals"] if "GPU-only" in g["goal"]} == SPEED_GOAL_TRAINERS
    assert all(g["met"] is None for g in summary["goals"])  # GPU goals are not judged on a CPU
    assert summary["parts"]["quality"]["status"] == "timed out"
    environment = report["environment"]
    assert environment["torch"] and environment["versions"]["nnunetv2"] and environment["cuda_available"] is False
    assert report["options"]["tiny"] is True and report["options"]["timeouts"]["quality"] == "1"
    print(f"device check CPU dry run: {seconds:.0f} s; parts "
          f"{ {name: (p['status'], p['seconds']) for name, p in parts.items()} }")
