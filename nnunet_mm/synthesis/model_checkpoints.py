"""Model folders of the synthesis networks (inpainter, autoencoder, latent diffusion): resumable training state,
inference weights, configuration and loss curves.

A model folder holds

* ``config.json``: the network and training configuration (plus derived values such as the latent scale);
* ``<name>.safetensors``: the inference weights of each network (read with :func:`load_weights`, safetensors only);
* ``checkpoint_latest.pt``: the training state (network and optimiser state dicts, step, loss history), written
  atomically (temporary file + rename) and read with ``torch.load(..., weights_only=True)``;
* ``losses.png``: the training losses per step.

Nothing here knows of nnU-Net; tensors and dicts in, files out.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import torch

from nnunet_mm.io.figure_style import figure_style

CHECKPOINT_NAME = "checkpoint_latest.pt"
CONFIG_NAME = "config.json"
LOSS_PLOT_NAME = "losses.png"


@dataclass
class TrainingResult:
    """What a training run leaves behind: the model folder, the step reached and the loss history."""

    folder: Path
    step: int
    history: dict[str, list[float]] = field(default_factory=dict)


def prepare_model_folder(folder: Path, *, resume: bool, overwrite: bool) -> dict[str, Any] | None:
    """Create ``folder`` for training; return the saved training state when resuming, else None.

    Raises:
        FileExistsError: the folder already holds a model or checkpoint and neither ``resume`` nor ``overwrite``.
        FileNotFoundError: ``resume`` without a checkpoint in ``folder``.
    """
    folder = Path(folder)
    checkpoint = folder / CHECKPOINT_NAME
    if resume:
        if not checkpoint.is_file():
            raise FileNotFoundError(f"{checkpoint}: no checkpoint to resume from; train without --resume first.")
        return load_training_state(checkpoint)
    existing = [p.name for p in folder.glob("*") if p.suffix in (".pt", ".safetensors", ".json")] \
        if folder.is_dir() else []
    if existing and not overwrite:
        raise FileExistsError(f"{folder} already holds {sorted(existing)}; pass --resume to continue training or "
                              f"--overwrite to start again.")
    folder.mkdir(parents=True, exist_ok=True)
    for name in existing:
        (folder / name).unlink()
    return None


def _atomic_torch_save(obj: Any, path: Path) -> None:
    partial = path.with_name(f".{path.name}.partial")
    torch.save(obj, partial)
    os.replace(partial, path)


def save_training_state(folder: Path, *, step: int, modules: Mapping[str, torch.nn.Module],
                        optimizers: Mapping[str, torch.optim.Optimizer], history: Mapping[str, list[float]],
                        extra: Mapping[str, torch.Tensor] | None = None) -> Path:
    """Write ``checkpoint_latest.pt`` (state dicts, step, loss history) atomically; returns its path."""
    state = {"step": int(step),
             "modules": {name: module.state_dict() for name, module in modules.items()},
             "optimizers": {name: optimizer.state_dict() for name, optimizer in optimizers.items()},
             "history": {name: [float(v) for v in values] for name, values in history.items()},
             "extra": dict(extra or {})}
    path = Path(folder) / CHECKPOINT_NAME
    _atomic_torch_save(state, path)
    return path


def load_training_state(path: Path) -> dict[str, Any]:
    """The dict written by :func:`save_training_state` (``weights_only=True``: tensors and plain containers only)."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - torch raises many types for corrupt files
        raise ValueError(f"{path}: cannot read the training checkpoint: {error}") from None


def restore_training_state(state: Mapping[str, Any], modules: Mapping[str, torch.nn.Module],
                           optimizers: Mapping[str, torch.optim.Optimizer]) -> tuple[int, dict[str, list[float]]]:
    """Load ``state`` into ``modules``/``optimizers``; returns ``(step, history)``."""
    for name, module in modules.items():
        module.load_state_dict(state["modules"][name])
    for name, optimizer in optimizers.items():
        optimizer.load_state_dict(state["optimizers"][name])
    return int(state["step"]), {k: list(v) for k, v in state["history"].items()}


def save_weights(folder: Path, name: str, module: torch.nn.Module) -> Path:
    """Inference weights of ``module`` as ``<folder>/<name>.safetensors`` (atomic)."""
    from safetensors.torch import save_file

    path = Path(folder) / f"{name}.safetensors"
    partial = path.with_name(f".{path.name}.partial")
    save_file({k: v.detach().contiguous().cpu() for k, v in module.state_dict().items()}, str(partial))
    os.replace(partial, path)
    return path


def load_weights(folder: Path, name: str, module: torch.nn.Module) -> torch.nn.Module:
    """Load ``<folder>/<name>.safetensors`` into ``module`` (strict); errors name the file."""
    from safetensors.torch import load_file

    path = Path(folder) / f"{name}.safetensors"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing weights; train the model first (see 'nnunet_mm --help').")
    try:
        module.load_state_dict(load_file(str(path)))
    except Exception as error:  # noqa: BLE001 - safetensors/torch errors differ by version
        raise ValueError(f"{path}: weights do not fit the configuration in {CONFIG_NAME}: {error}") from None
    return module


def write_config(folder: Path, config: Mapping[str, Any]) -> Path:
    """``config.json`` (atomic)."""
    path = Path(folder) / CONFIG_NAME
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(json.dumps(dict(config), indent=2, sort_keys=True), encoding="utf-8")
    os.replace(partial, path)
    return path


def read_config(folder: Path) -> dict[str, Any]:
    """``config.json`` of a model folder; errors name the file."""
    path = Path(folder) / CONFIG_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing; {folder} is not a trained nnunet_mm synthesis model folder.")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not valid JSON ({error}).") from None


@figure_style()
def plot_losses(history: Mapping[str, list[float]], png: Path, title: str) -> Path:
    """Every loss curve of ``history`` against the step, one panel each, as a PNG: every step a marker while the run
    is short, its moving average once it is long, log scale where all values are positive
    (:mod:`nnunet_mm.training.loss_curves`)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from nnunet_mm.training.loss_curves import finish_loss_axis, plot_loss_curve

    curves = {name: np.asarray(values, dtype=float) for name, values in history.items() if len(values)}
    fig, axes = plt.subplots(1, max(1, len(curves)), figsize=(4 * max(1, len(curves)), 3.4), squeeze=False)
    for axis, (name, values) in zip(axes[0], curves.items()):
        plot_loss_curve(axis, values, smoothing_window=max(1, len(values) // 20))
        finish_loss_axis(axis, title=name, num_iterations=len(values), xlabel="step")
    if not curves:
        finish_loss_axis(axes[0, 0], title="losses", num_iterations=0, xlabel="step")
    fig.suptitle(title)
    fig.tight_layout()
    png = Path(png)
    partial = png.with_name(f".{png.stem}.partial.png")
    fig.savefig(partial, dpi=100)
    plt.close(fig)
    os.replace(partial, png)
    return png
