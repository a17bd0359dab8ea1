"""CMCTrainer pieces that need no nnU-Net run: pairing across modalities, self-pairs, the consistency schedule."""
from __future__ import annotations

import torch

from nnunet_mm.cmc.trainer import CMCTrainer


def _trainer(modalities: dict[str, str]) -> CMCTrainer:
    trainer = CMCTrainer.__new__(CMCTrainer)
    trainer.case_modality = modalities
    trainer.paired = False
    trainer.augmentation_generator = torch.Generator().manual_seed(0)
    return trainer


def test_pairs_mix_modalities_when_the_batch_has_both():
    trainer = _trainer({"ct1": "CT", "ct2": "CT", "mr1": "MR", "mr2": "MR"})
    order = trainer._pair_order(["ct1", "mr1", "ct2", "mr2"]).tolist()
    keys = ["ct1", "mr1", "ct2", "mr2"]
    pairs = [(keys[a], keys[b]) for a, b in zip(order[:2], order[2:])]
    assert all(trainer.case_modality[a] != trainer.case_modality[b] for a, b in pairs)


def test_self_pairs_copy_the_first_stream_and_respect_the_probability():
    trainer = _trainer({})
    trainer.self_pairing_probability = 1.0
    data = torch.randn(4, 1, 8, 8)
    first, second = trainer._streams(data, torch.arange(4))
    assert torch.equal(first, second)
    trainer.self_pairing_probability = 0.0
    first, second = trainer._streams(data, torch.arange(4))
    assert torch.equal(first, data[:2]) and torch.equal(second, data[2:])


def test_consistency_terms_start_at_the_configured_epoch():
    trainer = _trainer({})
    trainer.num_epochs, trainer.semi_start_fraction = 10, 0.7
    trainer.current_epoch = 6
    assert trainer.consistency_weights() == (0.0, 0.0)
    trainer.current_epoch = 7
    w_csc, w_cac = trainer.consistency_weights()
    assert 0 < w_csc < 0.01 and w_cac == 1.0


def test_paired_two_channel_step_uses_unlabeled_cases_with_gradients(tmp_path, monkeypatch, quick_fingerprint):
    """The paired regime end to end in-process: label-fraction dataset of two co-registered phases, unlabeled
    cases preprocessed, one CMC step with both consistency terms switched on."""
    import os

    import numpy as np
    from batchgenerators.utilities.file_and_folder_operations import load_json
    from nnunetv2.experiment_planning.plan_and_preprocess_api import plan_experiments, preprocess

    from nnunet_mm.cmc.label_fraction import make_label_fraction_dataset
    from nnunet_mm.phantom import write_nnunet_raw
    from nnunet_mm.cmc.unlabeled import preprocess_unlabeled

    for name, sub in (("nnUNet_raw", "raw"), ("nnUNet_preprocessed", "pre"), ("nnUNet_results", "res")):
        monkeypatch.setenv(name, str(tmp_path / sub))
    monkeypatch.setenv("nnUNet_n_proc_DA", "1")
    write_nnunet_raw(tmp_path / "raw", dataset_id=582, name="Paired", num_training=4, seed=4, shape_zyx=(12, 32, 32),
                     phases=("pv", "art"), misregistration=False)
    make_label_fraction_dataset(582, 0.5, target_id=583)
    quick_fingerprint(583)
    plan_experiments([583])
    preprocess([583], configurations=("3d_fullres",), num_processes=(1,))
    preprocess_unlabeled(583, "3d_fullres")

    base = next((tmp_path / "pre").glob("Dataset583_*"))
    plans = load_json(str(base / "nnUNetPlans.json"))
    plans["continue_training"] = False
    os.environ["nnUNet_n_proc_DA"] = "0"  # single-threaded loaders in this process (monkeypatch restores it)
    trainer = CMCTrainer(plans, "3d_fullres", "all", load_json(str(base / "dataset.json")), torch.device("cpu"))
    trainer.initialize()
    assert trainer.paired
    loader, _ = trainer.get_dataloaders()
    trainer.dataloader_unlabeled = trainer._make_unlabeled_loader()
    trainer.current_epoch = int(0.85 * trainer.num_epochs)  # between the start and the end: both terms weighted
    assert all(weight > 0 for weight in trainer.consistency_weights())
    before = [p.detach().clone() for p in trainer.cmc_network.encoder.parameters()]
    result = trainer.train_step(next(loader))
    assert np.isfinite(result["loss"]) and result["csc_loss"] > 0 and np.isfinite(result["cac_loss"])
    after = list(trainer.cmc_network.encoder.parameters())
    assert any(not torch.equal(b, a) for b, a in zip(before, after))

    # resuming (what `nnUNetv2_train ... --c` does: a new trainer loads the checkpoint) restores the extra logs, and
    # the next epoch appends to them and rebuilds the unlabeled loader
    trainer.current_epoch = 0
    trainer.on_train_epoch_end([result])
    trainer.save_checkpoint(str(tmp_path / "checkpoint_latest.pth"))
    resumed = CMCTrainer({**plans, "continue_training": True}, "3d_fullres", "all", load_json(str(base / "dataset.json")), torch.device("cpu"))
    resumed.load_checkpoint(str(tmp_path / "checkpoint_latest.pth"))
    logged = resumed.logger.local_logger.my_fantastic_logging
    assert resumed.current_epoch == 1
    assert logged["csc_loss"] == [float(result["csc_loss"])] and logged["cac_loss"] == [float(result["cac_loss"])]
    resumed.dataloader_unlabeled = resumed._make_unlabeled_loader()
    assert next(resumed.dataloader_unlabeled)["data"].shape[1] == 2
    resumed.on_train_epoch_end([{**result, "csc_loss": np.float32(0.5)}])
    assert logged["csc_loss"] == [float(result["csc_loss"]), 0.5]
