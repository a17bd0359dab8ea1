"""The ``_debug`` trainers: one schedule for all, nnU-Net's constructor, and only their genuine differences."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from nnunet_mm.training.debug import DebugSchedule


def _trainer_shim():
    """The shim module nnU-Net imports by class name (``trainers/nnunet_mm_trainers.py``), loaded without putting
    its folder on ``sys.path``."""
    spec = importlib.util.spec_from_file_location(
        "nnunet_mm_trainers_under_test", Path(__file__).parents[2] / "trainers" / "nnunet_mm_trainers.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


nnunet_mm_trainers = _trainer_shim()

DEBUG_TRAINERS = sorted(name for name in dir(nnunet_mm_trainers) if name.endswith("_debug"))
PRIOR_BLOCK = {"modalities": {"1": "atlas_prior:liver"}}


def _base(name: str) -> type:
    """The trainer a variant is built on: a plugin trainer, or stock nnU-Net's ``nnUNetTrainer``."""
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    return nnUNetTrainer if name == "nnUNetTrainer" else getattr(nnunet_mm_trainers, name)


def test_every_trainer_has_a_debug_variant_on_the_shared_schedule():
    trainers = {name for name in dir(nnunet_mm_trainers) if name.endswith("Trainer")} | {"nnUNetTrainer"}
    assert {f"{name}_debug" for name in trainers} == set(DEBUG_TRAINERS)
    for name in DEBUG_TRAINERS:
        debug = getattr(nnunet_mm_trainers, name)
        assert debug.__mro__[1:3] == (DebugSchedule, _base(name[:-len("_debug")])), name
        assert debug.__doc__, name


@pytest.mark.parametrize("name", ["nnUNetTrainer_demo", "MultiModalTrainer_demo"])
def test_the_demo_trainers_differ_from_their_base_only_in_the_schedule(trainer_kit, name):
    from nnunet_mm.training.debug import DemoSchedule

    trainer_class = getattr(nnunet_mm_trainers, name)
    assert trainer_class.__mro__[1:3] == (DemoSchedule, _base(name[:-len("_demo")]))
    assert [k for k in vars(trainer_class) if not k.startswith("__")] == []
    trainer = trainer_kit.trainer(trainer_class, initialize=False)
    assert (trainer.num_epochs, trainer.num_iterations_per_epoch, trainer.num_val_iterations_per_epoch) == (10, 25, 5)


@pytest.mark.parametrize("name", DEBUG_TRAINERS)
def test_debug_trainers_are_built_with_nnunets_arguments_and_the_debug_schedule(trainer_kit, name):
    trainer_class = getattr(nnunet_mm_trainers, name)
    dataset_json = trainer_kit.dataset_json(PRIOR_BLOCK if name.startswith("MASPrior") else None)
    if name.startswith("MASPrior"):
        dataset_json["channel_names"]["1"] = "noNorm"
    trainer = trainer_kit.trainer(trainer_class, dataset_json=dataset_json, initialize=False)
    assert (trainer.num_epochs, trainer.num_iterations_per_epoch, trainer.num_val_iterations_per_epoch) == (2, 4, 2)
    assert set(trainer.my_init_kwargs) == {"plans", "configuration", "fold", "dataset_json", "device"}
    assert trainer.output_folder_base.endswith(f"{name}__nnUNetPlans__2d")  # checkpoints store the class name


def test_the_debug_variants_differ_only_where_a_two_epoch_run_needs_it(trainer_kit):
    cmc = trainer_kit.trainer(nnunet_mm_trainers.CMCTrainer_debug, initialize=False)
    assert cmc.consistency_weights()[0] > 0  # consistency from the first epoch
    weak = trainer_kit.trainer(nnunet_mm_trainers.WeakLabelTrainer_debug,
                               block={"weak_supervision": {"refinement_interval": 50}}, initialize=False)
    assert weak.refinement_interval == 1  # refines after the first epoch, whatever dataset.json says

