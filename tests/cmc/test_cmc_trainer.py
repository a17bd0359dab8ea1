"""CMCTrainer, built the nnU-Net way on the session's planned phantom: pairing across modalities, self-pairs, the
consistency schedule, unlabeled cases (one meaning), the semi-supervised terms inside the shared training step,
resuming, and the reference channel that ``nnUNetv2_predict`` rebuilds from the weights."""
from __future__ import annotations

import math
import shutil

import numpy as np
import pytest
import SimpleITK as sitk
import torch

import nnunet_mm.cmc.trainer as cmc_trainer
from nnunet_mm.cmc.trainer import CMCTrainer
from planned_phantom import DATASET_NAME, PHANTOM_ID

MODALITIES = {"ct1": "CT", "ct2": "CT", "mr1": "MR", "mr2": "MR"}


def _unpaired_trainer(kit, modalities: dict[str, str]) -> CMCTrainer:
    """A single-channel (unpaired) CMCTrainer whose block gives each case's modality."""
    dataset_json = kit.dataset_json({"per_case_modality": modalities, "seed": 0}, channel_names={"0": "CT"})
    del dataset_json["nnunet_mm"]["phase_names"]  # the phantom names its two phases
    return kit.trainer(CMCTrainer, dataset_json=dataset_json)


def test_pairs_mix_modalities_when_the_batch_has_both(trainer_kit):
    trainer = _unpaired_trainer(trainer_kit, MODALITIES)
    assert not trainer.paired and trainer.case_modality == MODALITIES
    keys = ["ct1", "mr1", "ct2", "mr2"]
    order = trainer._pair_order(keys).tolist()
    pairs = [(keys[a], keys[b]) for a, b in zip(order[:2], order[2:])]
    assert all(MODALITIES[a] != MODALITIES[b] for a, b in pairs)


def test_self_pairs_copy_the_first_stream_and_respect_the_probability(trainer_kit):
    trainer = _unpaired_trainer(trainer_kit, {})
    data = torch.randn(4, 1, 8, 8)
    trainer.self_pairing_probability = 1.0
    first, second = trainer._streams(data, trainer._pairs(range(4)))
    assert torch.equal(first, second)
    trainer.self_pairing_probability = 0.0
    first, second = trainer._streams(data, trainer._pairs(range(4)))
    assert torch.equal(first, data[:2]) and torch.equal(second, data[2:])


def _labelled_by_sample(batch_size: int) -> dict:
    """A batch whose sample i shows value i everywhere and is labelled i % 3 (so images identify samples)."""
    data = torch.arange(batch_size, dtype=torch.float32).view(-1, 1, 1, 1).expand(-1, 1, 32, 32).clone()
    label = (torch.arange(batch_size) % 3).view(-1, 1, 1, 1).expand(-1, 1, 32, 32).float()
    targets = [label, label[:, :, ::2, ::2], label[:, :, ::4, ::4]]
    return {"data": data, "target": targets, "keys": [f"case{i}" for i in range(batch_size)]}


@pytest.mark.parametrize("batch_size", [4, 5])
def test_every_stream_is_supervised_with_the_label_of_the_sample_it_holds(trainer_kit, monkeypatch, batch_size):
    """Self-pairs (here all of them) train their second stream on its own label, and an odd batch's leftover
    sample is trained (paired with itself) instead of dropped."""
    trainer = _unpaired_trainer(trainer_kit, {})
    trainer.self_pairing_probability = 1.0 if batch_size == 4 else 0.0
    streams, supervised = [], []
    network_forward = trainer.network.forward
    monkeypatch.setattr(trainer.network, "forward", lambda *args, **kwargs: streams.extend(kwargs["streams"])
                        or network_forward(*args, **kwargs))
    monkeypatch.setattr(trainer, "loss", lambda output, target: supervised.append(target[0].detach().clone())
                        or 0.0 * sum(o.sum() for o in output))
    trainer.train_step(_labelled_by_sample(batch_size))
    held = [stream[:, 0, 0, 0].long() for stream in streams]  # the sample index each position of a stream holds
    for stream, target in zip(held, supervised):
        assert torch.equal(target[:, 0, 0, 0].long(), stream % 3)
    if batch_size == 4:  # every pair a self-pair
        assert torch.equal(held[0], held[1])
    else:  # no self-pairs drawn: every sample of the odd batch is trained
        assert sorted(set(torch.cat(held).tolist())) == list(range(batch_size))


def test_deep_supervision_off_trains_with_the_unlabeled_terms(trainer_kit):
    _add_unlabeled_cases(trainer_kit)
    trainer = trainer_kit.trainer(CMCTrainer, block={"seed": 0}, initialize=False)
    trainer.enable_deep_supervision = False
    trainer.initialize()
    trainer.on_train_start()
    trainer.current_epoch = int(0.85 * trainer.num_epochs)
    result = trainer.train_step(next(trainer.dataloader_train))
    assert np.isfinite(result["loss"]) and result["csc_loss"] > 0 and result["cac_loss"] > 0


def test_consistency_compares_every_stream_with_the_reference_channel(trainer_kit, monkeypatch):
    _add_unlabeled_cases(trainer_kit)
    trainer = trainer_kit.trainer(CMCTrainer, block={"seed": 0, "reference_channel": 1})
    trainer.on_train_start()
    trainer.current_epoch = int(0.85 * trainer.num_epochs)
    anchors, bottlenecks = [], []
    network_forward = trainer.network.forward
    monkeypatch.setattr(trainer.network, "forward", lambda *args, **kwargs: bottlenecks.append(
        network_forward(*args, **kwargs)) or bottlenecks[-1])
    original = cmc_trainer.csc_loss
    monkeypatch.setattr(cmc_trainer, "csc_loss", lambda a, b, t: anchors.append((a, b)) or original(a, b, t))
    trainer.train_step(next(trainer.dataloader_train))
    assert len(anchors) == 1  # two channels: the reference stream against the other one
    streams = bottlenecks[0]["bottleneck"]
    num_labeled = streams[0].shape[0] - anchors[0][0].shape[0]
    assert torch.equal(anchors[0][0], streams[1][num_labeled:])  # channel 1, the reference, is the anchor
    assert torch.equal(anchors[0][1], streams[0][num_labeled:])


def test_consistency_terms_start_at_the_configured_epoch_with_the_papers_ramps(trainer_kit):
    """The paper: from epoch 350 of 500, w_csc = exp(-5(1 - e/500)^2) = 0.64 and w_cac = (cos(pi e/500) + 1)/2 =
    0.21 at the start; "after_start" stretches both over the window (0.007 and 1 at the start)."""
    trainer = trainer_kit.trainer(CMCTrainer, initialize=False)
    trainer.num_epochs, trainer.semi_start_fraction = 500, 0.7  # t = e / 499 (the last epoch reaches 1)
    trainer.current_epoch = 349
    assert trainer.consistency_weights() == (0.0, 0.0)
    trainer.current_epoch = 350
    assert trainer.consistency_weights() == pytest.approx((0.6376, 0.2061), abs=5e-3)
    trainer.current_epoch = 499
    assert trainer.consistency_weights() == pytest.approx((1.0, 0.0), abs=1e-6)
    trainer.consistency_ramp = "after_start"
    trainer.current_epoch = 350
    w_csc, w_cac = trainer.consistency_weights()
    assert w_csc == pytest.approx(math.exp(-5)) and w_cac == 1.0


# ----------------------------------------------------------------------------------------------------------------
# unlabeled cases


def _add_unlabeled_cases(kit, folder_name: str = "imagesUnl") -> None:
    """Two labeled cases' images, renamed, as the raw dataset's unlabeled cases; preprocessed for ``2d``."""
    from nnunet_mm.cmc.unlabeled import preprocess_unlabeled

    folder = kit.raw / folder_name
    folder.mkdir()
    for index, case in enumerate(kit.case_ids[:2]):
        for image in sorted((kit.raw / "imagesTr").glob(f"{case}_*.nii.gz")):
            shutil.copyfile(image, folder / image.name.replace(case, f"unlabeled_{index:03d}"))
    preprocess_unlabeled(PHANTOM_ID, "2d")


def _log(trainer) -> str:
    return open(trainer.log_file, encoding="utf-8").read()


def test_training_is_semi_supervised_exactly_when_unlabeled_cases_were_preprocessed(trainer_kit):
    trainer = trainer_kit.trainer(CMCTrainer)
    assert trainer.unlabeled_cases_folder() is None
    assert "CMC trains supervised only" in _log(trainer)
    assert f"nnunet_mm preprocess-unlabeled -d {DATASET_NAME} -c 2d" in _log(trainer)

    _add_unlabeled_cases(trainer_kit)  # the default folder, imagesUnl: no key in the block needed
    folder = trainer.unlabeled_cases_folder()
    assert folder == trainer_kit.preprocessed / "nnUNetPlans_2d_unlabeled"
    assert (f"nnunet_mm CMC: 2 unlabeled case(s) from {folder} (preprocessed from the raw dataset's imagesUnl/); "
            f"the consistency terms start at epoch 700 of 1000.") in _log(trainer)


def test_the_log_states_the_pairing_and_the_consistency_schedule_of_paired_channels(trainer_kit):
    """The paper's schedule on nnU-Net's 1000 epochs: start at 700, t = e / 999."""
    log = _log(trainer_kit.trainer(CMCTrainer, block={"seed": 0}))
    assert "nnunet_mm CMC: pairing: paired channels, one stream per channel (0 (pv), 1 (art)); the reference " \
           "stream 0 (pv) is the anchor" in log
    t = 700 / 999
    w_csc, w_cac = math.exp(-5 * (1 - t) ** 2), (math.cos(math.pi * t) + 1) / 2
    assert (f"nnunet_mm CMC: consistency: from epoch 700 of 1000 (semi_start_fraction 0.7), only with preprocessed "
            f"unlabeled cases; w_csc = 1.0 * exp(-5(1-t)^2) (ramp-up), w_cac = 1.0 * (cos(pi t)+1)/2 (ramp-down), "
            f"t over the whole run (consistency_ramp 'whole_run'): w_csc {w_csc:.3f}, w_cac {w_cac:.3f} at epoch "
            f"700; 1.000, 0.000 at epoch 999; CSC temperature 0.5") in log


def test_the_log_states_the_modalities_and_self_pairs_of_unpaired_data(trainer_kit):
    log = _log(_unpaired_trainer(trainer_kit, MODALITIES))
    assert ("nnunet_mm CMC: pairing: unpaired single-channel cases (labeled cases per modality: CT 2, MR 2); "
            "batches drawn in equal shares per modality") in log
    assert "25% of the labeled pairs self-pairs (unlabeled pairs never)" in log


def test_a_declared_unlabeled_folder_that_was_not_preprocessed_refuses_to_train(trainer_kit):
    trainer = trainer_kit.trainer(CMCTrainer, block={"unlabeled_dir": "myUnlabeled"})
    with pytest.raises(FileNotFoundError, match=f"'myUnlabeled'.*'nnunet_mm preprocess-unlabeled -d {DATASET_NAME} "
                                                f"-c 2d'"):
        trainer.on_train_start()


@pytest.mark.parametrize("kept_term", ["csc", "cac"])
def test_each_unlabeled_term_trains_the_shared_encoder_in_the_shared_step(trainer_kit, monkeypatch, kept_term):
    """With nnU-Net's supervised loss zeroed and the other consistency term switched off, the kept term alone
    must reach the encoder through MultiModalTrainer's step (the public code's bug: it never back-propagates
    them), and it must not before the semi-supervised start epoch."""
    _add_unlabeled_cases(trainer_kit)
    trainer = trainer_kit.trainer(CMCTrainer, block={"seed": 0})
    trainer.on_train_start()
    assert trainer.paired and trainer.dataloader_unlabeled is not None
    calls = []
    hook = CMCTrainer.compute_loss
    monkeypatch.setattr(CMCTrainer, "compute_loss", lambda self, *args: calls.append(1) or hook(self, *args))
    monkeypatch.setattr(trainer, "loss", lambda output, target: 0.0 * sum(o.sum() for o in output))
    switched_off = "cac_loss" if kept_term == "csc" else "csc_loss"
    monkeypatch.setattr(cmc_trainer, switched_off, lambda *args, **kwargs: torch.zeros(()))

    def encoder_gradient() -> float:
        return sum(float(p.grad.abs().sum()) for p in trainer.unwrapped_network.encoder.parameters()
                   if p.grad is not None)

    trainer.current_epoch = int(0.85 * trainer.num_epochs)  # between the start and the end: both terms weighted
    assert all(weight > 0 for weight in trainer.consistency_weights())
    result = trainer.train_step(next(trainer.dataloader_train))
    assert len(calls) == 1
    assert result[f"{kept_term}_loss"] > 0 and np.isfinite(result["loss"])
    assert encoder_gradient() > 0

    trainer.current_epoch = 0  # before the start: no unlabeled batch, no gradient at all
    result = trainer.train_step(next(trainer.dataloader_train))
    assert result[f"{kept_term}_loss"] == 0 and encoder_gradient() == 0


def test_the_extra_logs_survive_resuming(trainer_kit, tmp_path):
    """What ``nnUNetv2_train ... --c`` does: a new trainer loads the checkpoint, its log keeps csc and cac."""
    trainer = trainer_kit.trainer(CMCTrainer)
    trainer.on_train_epoch_end([{"loss": np.float32(1.0), "csc_loss": np.float32(0.25), "cac_loss": np.float32(0.5)}])
    assert "nnunet_mm: csc 0.2500" in _log(trainer)
    trainer.save_checkpoint(str(tmp_path / "checkpoint_latest.pth"))
    resumed = CMCTrainer({**trainer_kit.plans(), "continue_training": True}, "2d", "all",
                         trainer_kit.dataset_json(), torch.device("cpu"))
    resumed.load_checkpoint(str(tmp_path / "checkpoint_latest.pth"))
    logged = resumed.logger.local_logger.my_fantastic_logging
    assert resumed.current_epoch == 1 and logged["csc_loss"] == [0.25] and logged["cac_loss"] == [0.5]
    resumed.on_train_epoch_end([{"loss": np.float32(1.0), "csc_loss": np.float32(0.75), "cac_loss": np.float32(0)}])
    assert logged["csc_loss"] == [0.25, 0.75]


# ----------------------------------------------------------------------------------------------------------------
# the reference channel at inference


def _predict(predictor, images: list[list[str]], output_folder) -> tuple[np.ndarray, np.ndarray]:
    """nnU-Net's prediction from files (no worker processes): (segmentation, probabilities) of the one case."""
    output_folder.mkdir(parents=True)
    case = output_folder / "prediction"
    predictor.predict_from_files_sequential(images, [str(case)], save_probabilities=True)
    return (sitk.GetArrayFromImage(sitk.ReadImage(f"{case}.nii.gz")), np.load(f"{case}.npz")["probabilities"])


def test_nnunet_predict_rebuilds_the_reference_channel_from_the_weights(trainer_kit, tmp_path):
    """Train with reference channel 1, then predict with nnU-Net's predictor from the model folder (it rebuilds the
    network from the plans, reference 0, and loads the checkpoint): same result as the trained network in-process."""
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    def predictor() -> nnUNetPredictor:
        return nnUNetPredictor(use_mirroring=False, perform_everything_on_device=False, device=torch.device("cpu"),
                               allow_tqdm=False)

    trainer = trainer_kit.trainer(CMCTrainer, block={"reference_channel": 1, "seed": 0})
    trainer.on_train_start()
    for _ in range(2):
        trainer.train_step(next(trainer.dataloader_train))
    trainer.on_train_end()  # checkpoint_final.pth beside nnU-Net's copies of plans.json and dataset.json
    case = trainer_kit.case_ids[0]
    images = [[str(trainer_kit.raw / "imagesTr" / f"{case}_{channel:04d}.nii.gz") for channel in range(2)]]
    outputs = [tmp_path / name for name in ("from_folder", "in_process", "channel_0")]

    from_folder = predictor()
    from_folder.initialize_from_trained_model_folder(trainer.output_folder_base, use_folds=("all",))
    assert from_folder.network.reference_channel == 1
    segmentation, probabilities = _predict(from_folder, images, outputs[0])

    trainer.set_deep_supervision_enabled(False)
    in_process = predictor()
    in_process.manual_initialization(trainer.network, trainer.plans_manager, trainer.configuration_manager,
                                     [trainer.network.state_dict()], trainer.dataset_json, "CMCTrainer",
                                     trainer.inference_allowed_mirroring_axes)
    expected_segmentation, expected_probabilities = _predict(in_process, images, outputs[1])
    np.testing.assert_array_equal(segmentation, expected_segmentation)
    np.testing.assert_allclose(probabilities, expected_probabilities, rtol=1e-5, atol=1e-6)

    trainer.unwrapped_network.set_reference_channel(0)  # what the predictor did before the channel was stored
    _, channel_0 = _predict(in_process, [images[0]], outputs[2])
    assert not np.allclose(channel_0, expected_probabilities, atol=1e-3)  # so the comparison above can fail


def _two_class_probabilities(images: torch.Tensor) -> torch.Tensor:
    """A prediction that follows the image exactly: background 1 - x, foreground x."""
    return torch.cat((1 - images, images), dim=1)


def test_cac_on_paired_channels_compares_predictions_in_one_frame(trainer_kit):
    """Two identical channels, the second misaligned by the augmentation: predictions that follow their images agree
    perfectly once the reference prediction is moved by the known shift (CAC ≈ 0), and disagree voxel by voxel
    without it."""
    from nnunet_mm.cmc.losses import cac_loss

    trainer = trainer_kit.trainer(CMCTrainer, block={"seed": 0, "misalignment": {"probability": 1.0,
                                                                                 "max_translation_mm": [6, 6]},
                                                     "modality_dropout": {"probability": 0.0}})
    image = torch.zeros(2, 1, 32, 32)
    image[:, :, 8:20, 10:22] = 1.0
    augmented, draw = trainer.augment_multimodal(image.expand(-1, 2, -1, -1).clone())
    reference = _two_class_probabilities(augmented[:, :1])
    other = _two_class_probabilities(augmented[:, 1:2])
    in_frames = trainer._in_channel_frames(reference, draw)
    assert in_frames.shape == (2, 2, 2, 32, 32) and torch.equal(in_frames[:, 0], reference)
    assert cac_loss(in_frames[:, 1], other, paired=True) < 0.02
    assert cac_loss(reference, other, paired=True) > 0.1


def test_the_step_compares_the_reference_in_each_channels_frame(trainer_kit, monkeypatch):
    _add_unlabeled_cases(trainer_kit)
    trainer = trainer_kit.trainer(CMCTrainer, block={"seed": 0, "misalignment": {"probability": 1.0}})
    trainer.on_train_start()
    trainer.current_epoch = int(0.85 * trainer.num_epochs)
    compared = []
    original = cmc_trainer.cac_loss
    monkeypatch.setattr(cmc_trainer, "cac_loss", lambda a, b, paired: compared.append((a, b)) or original(
        a, b, paired=paired))
    moved = []
    follow = cmc_trainer.probabilities_following_channels
    monkeypatch.setattr(cmc_trainer, "probabilities_following_channels",
                        lambda probabilities, *args: moved.append(follow(probabilities, *args)) or moved[-1])
    trainer.train_step(next(trainer.dataloader_train))
    assert len(moved) == 1 and len(compared) == 1
    assert torch.equal(compared[0][0], moved[0][:, 1])  # channel 1 is compared with the reference in its frame


def test_unlabeled_pairs_mix_modalities_and_are_never_self_pairs(trainer_kit, monkeypatch):
    _add_unlabeled_cases(trainer_kit)
    modalities = {case: "CT" for case in trainer_kit.case_ids} | {"unlabeled_000": "CT", "unlabeled_001": "MR"}
    trainer = _unpaired_trainer(trainer_kit, modalities)
    trainer.on_train_start()
    trainer.self_pairing_probability = 1.0  # every labeled pair a self-pair; unlabeled pairs still are not
    trainer.current_epoch = int(0.85 * trainer.num_epochs)
    unlabeled = next(trainer.dataloader_unlabeled)  # nnU-Net draws cases with replacement: name them both
    trainer.dataloader_unlabeled = iter([{**unlabeled, "keys": ["unlabeled_000", "unlabeled_001"]}])
    pairs = []
    original = CMCTrainer._pairs
    monkeypatch.setattr(CMCTrainer, "_pairs", lambda self, keys, **kwargs: pairs.append(
        (list(keys), original(self, keys, **kwargs))) or pairs[-1][1])
    trainer.train_step(next(trainer.dataloader_train))
    (labeled_keys, (first, second)), (unlabeled_keys, (u_first, u_second)) = pairs
    assert torch.equal(first, second)  # labeled: self-pairs as asked
    assert not torch.equal(u_first, u_second)
    assert {modalities[unlabeled_keys[i]] for i in (int(u_first[0]), int(u_second[0]))} == {"CT", "MR"}


# ----------------------------------------------------------------------------------------------------------------
# batches drawn per modality


def test_labeled_batches_hold_every_modality_so_every_pair_mixes_them(trainer_kit):
    """nnU-Net's own get_dataloaders, with the loader drawing per modality: every batch pairs CT with MR (a random
    draw of 2 from 2 CT + 2 MR cases is one modality a third of the time)."""
    from nnunet_mm.cmc.balanced_loader import ModalityBalancedDataLoader

    cases = trainer_kit.case_ids
    modalities = {case: ("CT" if i % 2 else "MR") for i, case in enumerate(cases)}
    trainer = _unpaired_trainer(trainer_kit, modalities)
    trainer.batch_size = 2
    train_loader, val_loader = trainer.get_dataloaders()
    assert isinstance(train_loader.data_loader, ModalityBalancedDataLoader)
    for _ in range(12):
        keys = list(next(train_loader)["keys"])
        first, second = trainer._pairs(keys, self_pairing=False)
        assert {modalities[keys[int(first[0])]], modalities[keys[int(second[0])]]} == {"CT", "MR"}, keys


def test_balanced_draws_shuffle_positions_and_fall_back_to_nnunet_with_one_modality():
    from nnunet_mm.cmc.balanced_loader import balanced_counts, modality_groups

    assert modality_groups(["a", "b", "c"], {"a": "MR", "b": "CT"}) == [["c"], ["b"], ["a"]]
    assert balanced_counts(5, 2) == [3, 2] and balanced_counts(1, 2) == [1, 0] and balanced_counts(4, 1) == [4]


# ----------------------------------------------------------------------------------------------------------------
# the experiment's arms: zero-weight control and the mean-teacher baseline


def test_zero_consistency_scales_run_the_unlabeled_forward_without_its_gradient(trainer_kit, monkeypatch):
    """The control arm: unlabeled cases go through the forward and their terms are logged, but add nothing."""
    _add_unlabeled_cases(trainer_kit)
    trainer = trainer_kit.trainer(CMCTrainer, block={"seed": 0})
    trainer.consistency_scales = (0.0, 0.0)
    trainer.on_train_start()
    monkeypatch.setattr(trainer, "loss", lambda output, target: 0.0 * sum(o.sum() for o in output))
    trainer.current_epoch = int(0.85 * trainer.num_epochs)
    assert trainer.consistency_weights() == (0.0, 0.0) and trainer.semi_supervised_now()
    result = trainer.train_step(next(trainer.dataloader_train))
    assert result["csc_loss"] > 0 and result["cac_loss"] > 0
    assert all(p.grad is None or float(p.grad.abs().sum()) == 0 for p in trainer.unwrapped_network.parameters())
    trainer.on_train_end()


def test_mean_teacher_baseline_pulls_the_student_towards_its_ema_teacher(trainer_kit, monkeypatch):
    """The baseline's only unlabeled term reaches the student (supervised loss zeroed), the teacher is never
    trained by gradient but follows the student's weights after each step."""
    from nnunet_mm.cmc.mean_teacher import CMCMeanTeacherTrainer

    _add_unlabeled_cases(trainer_kit)
    trainer = trainer_kit.trainer(CMCMeanTeacherTrainer, block={"seed": 0})
    trainer.on_train_start()
    monkeypatch.setattr(trainer, "loss", lambda output, target: 0.0 * sum(o.sum() for o in output))
    teacher_before = [p.detach().clone() for p in trainer.teacher.parameters()]
    trainer.current_epoch = int(0.85 * trainer.num_epochs)
    assert trainer.mean_teacher_weight_now() > 0
    result = trainer.train_step(next(trainer.dataloader_train))
    assert result["consistency_loss"] > 0 and np.isfinite(result["loss"])
    assert sum(float(p.grad.abs().sum()) for p in trainer.unwrapped_network.encoder.parameters()
               if p.grad is not None) > 0
    assert all(p.grad is None for p in trainer.teacher.parameters())
    student = list(trainer.unwrapped_network.parameters())
    moved = [not torch.equal(b, a) for b, a in zip(teacher_before, trainer.teacher.parameters())]
    assert any(moved)
    for before, after, s in zip(teacher_before, trainer.teacher.parameters(), student):  # α = 0.99
        torch.testing.assert_close(after, trainer.ema_decay * before + (1 - trainer.ema_decay) * s.detach())
    trainer.current_epoch = 0
    assert trainer.train_step(next(trainer.dataloader_train))["consistency_loss"] == 0
    trainer.on_train_end()
