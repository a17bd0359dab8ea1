"""Tests of nnunet_mm.phantom: seeded multi-phase liver CT phantoms and their dataset writers."""
from __future__ import annotations

import gzip
import json
import statistics
import time

import numpy as np
import pytest
import SimpleITK as sitk
from PIL import Image
from scipy import ndimage

from nnunet_mm import phantom
from nnunet_mm.evaluation.metrics import dice
from nnunet_mm.phantom import HU_BY_TISSUE, LABELS, PHASE_NAMES, make_case

SMALL_SHAPE = (16, 32, 32)


def _hu(tissue: str, phase: str) -> float:
    return HU_BY_TISSUE[tissue][PHASE_NAMES.index(phase)]


def _first_seed_with_only(kind: str) -> int:
    """Smallest seed whose lesions are all of ``kind`` (found by search so the tests survive recipe changes)."""
    for seed in range(200):
        if set(make_case(seed, phases=("pv",)).lesion_kinds) == {kind}:
            return seed
    raise AssertionError(f"no seed below 200 gives only {kind} lesions")


@pytest.fixture(scope="module")
def cases() -> list[phantom.PhantomCase]:
    return [make_case(seed) for seed in range(5)]


# ------------------------------------------------------------------------------------------------ determinism


def test_same_seed_gives_identical_case():
    first, second = make_case(7), make_case(7)
    assert first.lesion_kinds == second.lesion_kinds
    for phase in first.phase_names:
        np.testing.assert_array_equal(first.images[phase], second.images[phase])
        np.testing.assert_array_equal(first.labels[phase], second.labels[phase])
        np.testing.assert_array_equal(first.displacements_zyx_mm[phase], second.displacements_zyx_mm[phase])


def test_different_seeds_give_different_cases():
    first, second = make_case(1), make_case(2)
    assert not np.array_equal(first.label, second.label)
    assert not np.array_equal(first.images["art"], second.images["art"])


def test_reference_phase_does_not_depend_on_the_other_phases():
    four_phases, pv_only = make_case(3), make_case(3, phases=("pv",))
    np.testing.assert_array_equal(four_phases.images["pv"], pv_only.images["pv"])
    np.testing.assert_array_equal(four_phases.label, pv_only.label)


def test_case_arrays_have_documented_dtypes_and_shapes(cases):
    case = cases[0]
    assert case.phase_names == ("pv", "art", "del", "nc")
    assert case.reference_phase == "pv"
    for phase in case.phase_names:
        assert case.images[phase].dtype == np.int16
        assert case.images[phase].shape == (32, 64, 64)
        assert case.labels[phase].dtype == np.uint8
        assert set(np.unique(case.labels[phase])) <= {0, 1, 2}
        assert case.displacements_zyx_mm[phase].shape == (3, 32, 64, 64)
    assert case.images["pv"].min() >= -1024 and case.images["pv"].max() <= 3071


# ------------------------------------------------------------------------------------------------ intensities


@pytest.mark.parametrize("phase", ["pv", "art", "del", "nc"])
def test_mean_liver_hu_follows_the_phase_table(cases, phase):
    means = [case.images[phase][case.labels[phase] == LABELS["liver"]].mean() for case in cases]
    assert abs(np.mean(means) - _hu("liver", phase)) < 15


def test_liver_enhances_from_unenhanced_to_arterial_to_portal_venous(cases):
    liver_mean = {p: np.mean([c.images[p][c.labels[p] == 1].mean() for c in cases]) for p in PHASE_NAMES}
    assert liver_mean["nc"] < liver_mean["art"] < liver_mean["pv"]
    assert abs(liver_mean["pv"] - 115) < 15 and abs(liver_mean["art"] - 80) < 15


def test_hcc_is_brighter_than_liver_in_arterial_and_darker_in_delayed_phase():
    case = make_case(_first_seed_with_only("hcc"))
    for phase, brighter in (("art", True), ("del", False)):
        tumour = case.images[phase][case.labels[phase] == LABELS["tumor"]].mean()
        liver = case.images[phase][case.labels[phase] == LABELS["liver"]].mean()
        assert (tumour > liver + 20) if brighter else (tumour < liver - 5), (phase, tumour, liver)


def test_metastasis_is_darker_than_liver_in_portal_venous_phase():
    case = make_case(_first_seed_with_only("metastasis"))
    tumour = case.images["pv"][case.label == LABELS["tumor"]].mean()
    liver = case.images["pv"][case.label == LABELS["liver"]].mean()
    assert tumour < liver - 25


def test_cyst_stays_near_water_in_every_phase():
    case = make_case(_first_seed_with_only("cyst"))
    for phase in case.phase_names:
        core = ndimage.binary_erosion(case.labels[phase] == LABELS["tumor"])
        assert core.any()
        assert abs(case.images[phase][core].mean() - 10) < 15


def test_aorta_exceeds_250_hu_only_in_arterial_phase():
    case = make_case(0, misregistration=False)
    aorta = ndimage.binary_erosion(case.tissue_map == case.tissue_names.index("aorta"))
    assert case.images["art"][aorta].mean() > 250
    assert case.images["pv"][aorta].mean() < 250


def test_noise_standard_deviation_is_between_10_and_15_hu():
    case = make_case(0, misregistration=False)
    muscle = ndimage.binary_erosion(case.tissue_map == case.tissue_names.index("muscle"), iterations=2)
    for phase in case.phase_names:
        # The 0.7-voxel blur is applied before the noise, so the noise keeps its full standard deviation.
        assert 9 < case.images[phase][muscle].std() < 16


# ------------------------------------------------------------------------------------------------ anatomy


def test_every_case_has_one_to_three_lesions_mostly_inside_the_liver():
    for seed in range(10):
        case = make_case(seed, phases=("pv",))
        assert 1 <= len(case.lesions) <= 3
        assert set(case.lesion_kinds) <= set(phantom.LESION_KINDS)
        for lesion in case.lesions:
            assert lesion.fraction_inside_liver >= 0.95
            assert lesion.num_voxels >= 4
        assert sum(lesion.num_voxels for lesion in case.lesions) == (case.label == LABELS["tumor"]).sum()


def test_lesions_stay_several_voxels_large_on_a_tiny_grid():
    for seed in range(5):
        case = make_case(seed, shape_zyx=(8, 16, 16), phases=("pv",))
        assert all(lesion.num_voxels >= 4 for lesion in case.lesions)


# ------------------------------------------------------------------------------------------------ misregistration


def test_reference_phase_has_zero_displacement(cases):
    for case in cases:
        assert not case.displacements_zyx_mm["pv"].any()
        assert not case.lesion_shifts_zyx_mm["pv"].any()
        assert case.displacements_zyx_mm["art"].any()


def test_organs_stay_aligned_while_tumours_do_not(cases):
    for case in cases:
        for phase in case.phase_names[1:]:
            liver_dice = dice(case.label >= 1, case.labels[phase] >= 1)
            tumour_dice = dice(case.label == 2, case.labels[phase] == 2)
            assert liver_dice > 0.7, (case.seed, phase, liver_dice)
            assert tumour_dice < liver_dice, (case.seed, phase, tumour_dice, liver_dice)


def test_lesion_shift_lowers_tumour_dice(cases):
    shifted, unshifted = [], []
    for case in cases:
        without_shift = make_case(case.seed, lesion_shift_mm=None)
        for phase in case.phase_names[1:]:
            shifted.append(dice(case.label == 2, case.labels[phase] == 2))
            unshifted.append(dice(without_shift.label == 2, without_shift.labels[phase] == 2))
    assert np.mean(shifted) < np.mean(unshifted)


def test_stored_displacement_reproduces_the_warped_label(cases):
    case = cases[1]
    geometry = case.reference_geometry
    for phase in case.phase_names[1:]:
        field_voxels = case.displacements_zyx_mm[phase] / np.asarray(geometry.spacing_zyx_mm)[:, None, None, None]
        indices = np.indices(geometry.shape_zyx, dtype=np.float32) + field_voxels
        pulled = ndimage.map_coordinates(case.label, indices, order=0, mode="nearest")
        np.testing.assert_array_equal(pulled, case.labels[phase])


def test_without_misregistration_every_phase_shares_the_reference_label():
    case = make_case(0, misregistration=False)
    for phase in case.phase_names:
        np.testing.assert_array_equal(case.labels[phase], case.label)
        assert not case.displacements_zyx_mm[phase].any()


# ------------------------------------------------------------------------------------------------ grids


def test_different_grids_give_non_reference_phases_their_own_grid():
    case = make_case(0, different_grids=True)
    reference = case.reference_geometry
    for phase in case.phase_names[1:]:
        geometry = case.geometries[phase]
        assert geometry.spacing_zyx_mm[0] == 5.0 and geometry.spacing_zyx_mm[1:] == reference.spacing_zyx_mm[1:]
        assert case.images[phase].shape == case.labels[phase].shape == geometry.shape_zyx
        assert geometry.shape_zyx[0] != reference.shape_zyx[0]
        assert abs(geometry.shape_zyx[0] * 5.0 - reference.shape_zyx[0] * 3.0) <= 5.0  # about the same extent
        assert geometry.origin_zyx_mm != reference.origin_zyx_mm
        assert case.displacements_zyx_mm[phase].shape == (3,) + reference.shape_zyx
        assert case.label_on_reference_grid(phase).shape == reference.shape_zyx
        assert case.image_on_reference_grid(phase).dtype == np.int16


def test_liver_stays_aligned_after_resampling_a_different_grid_onto_the_reference():
    case = make_case(0, different_grids=True)
    for phase in case.phase_names[1:]:
        assert dice(case.label >= 1, case.label_on_reference_grid(phase) >= 1) > 0.6


def test_to_sitk_carries_spacing_origin_and_identity_direction():
    case = make_case(0, different_grids=True)
    image, label = case.to_sitk("art"), case.label_to_sitk("art")
    geometry = case.geometries["art"]
    for itk_image in (image, label):
        assert itk_image.GetSize() == geometry.shape_zyx[::-1]
        assert itk_image.GetSpacing() == pytest.approx(geometry.spacing_zyx_mm[::-1])
        assert itk_image.GetOrigin() == pytest.approx(geometry.origin_zyx_mm[::-1])
        assert itk_image.GetDirection() == pytest.approx((1, 0, 0, 0, 1, 0, 0, 0, 1))
    assert image.GetPixelID() == sitk.sitkInt16 and label.GetPixelID() == sitk.sitkUInt8
    np.testing.assert_array_equal(sitk.GetArrayFromImage(image), case.images["art"])


# ------------------------------------------------------------------------------------------------ validation, speed


def test_unknown_phase_name_is_rejected_with_the_valid_names():
    with pytest.raises(ValueError, match=r"'portal'.*valid phase names are \['nc', 'art', 'pv', 'del'\]"):
        make_case(0, phases=("portal", "art"))


def test_unknown_phase_in_to_sitk_lists_the_case_phases():
    with pytest.raises(ValueError, match="phases"):
        make_case(0, phases=("pv",)).to_sitk("art")


def test_four_phase_case_builds_in_well_under_a_second():
    make_case(0)  # warm-up: imports, caches
    durations = []
    for seed in range(3):
        start = time.perf_counter()
        make_case(seed, shape_zyx=(32, 64, 64), phases=("pv", "art", "del", "nc"))
        durations.append(time.perf_counter() - start)
    # Measured about 0.06-0.09 s on a 2-core CPU; 1 s leaves room for a busy machine.
    assert statistics.median(durations) < 1.0, durations


# ------------------------------------------------------------------------------------------------ writers


def test_write_nnunet_raw_passes_nnunet_integrity_check(tmp_path):
    from nnunetv2.experiment_planning.verify_dataset_integrity import verify_dataset_integrity

    folder = phantom.write_nnunet_raw(tmp_path, dataset_id=501, name="Tiny", num_training=2, num_test=1,
                                      seed=3, shape_zyx=SMALL_SHAPE)
    assert folder == tmp_path / "Dataset501_Tiny"
    assert sorted(p.name for p in (folder / "imagesTr").iterdir()) == [
        f"phantom_00{i}_000{c}.nii.gz" for i in range(2) for c in range(4)
    ]
    assert sorted(p.name for p in (folder / "labelsTr").iterdir()) == ["phantom_000.nii.gz", "phantom_001.nii.gz"]
    assert sorted(p.name for p in (folder / "imagesTs").iterdir())[0] == "phantom_002_0000.nii.gz"
    assert (folder / "labelsTs" / "phantom_002.nii.gz").is_file()
    dataset_json = json.loads((folder / "dataset.json").read_text(encoding="utf-8"))
    assert dataset_json["channel_names"] == {"0": "CT", "1": "CT", "2": "CT", "3": "CT"}
    assert dataset_json["labels"] == {"background": 0, "liver": 1, "tumor": 2}
    assert dataset_json["numTraining"] == 2 and dataset_json["file_ending"] == ".nii.gz"
    assert dataset_json["nnunet_mm"] == {"reference_channel": 0, "phase_names": ["pv", "art", "del", "nc"],
                                         "channel_acquisition": "separate"}
    reference = sitk.ReadImage(str(folder / "imagesTr" / "phantom_000_0000.nii.gz"))
    arterial = sitk.ReadImage(str(folder / "imagesTr" / "phantom_000_0001.nii.gz"))
    label = sitk.ReadImage(str(folder / "labelsTr" / "phantom_000.nii.gz"))
    assert reference.GetPixelID() == sitk.sitkInt16 and label.GetPixelID() == sitk.sitkUInt8
    assert arterial.GetSize() == reference.GetSize() == label.GetSize()
    assert set(np.unique(sitk.GetArrayFromImage(label))) <= {0, 1, 2}
    case = make_case(phantom.case_seed(3, 0), shape_zyx=SMALL_SHAPE)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(reference), case.images["pv"])
    verify_dataset_integrity(str(folder), num_processes=1)


def test_write_nnunet_raw_resamples_different_grids_onto_the_reference(tmp_path):
    folder = phantom.write_nnunet_raw(tmp_path, num_training=1, shape_zyx=SMALL_SHAPE, different_grids=True,
                                      phases=("pv", "art"))
    sizes = {sitk.ReadImage(str(p)).GetSize() for p in (folder / "imagesTr").iterdir()}
    assert sizes == {SMALL_SHAPE[::-1]}
    assert json.loads((folder / "dataset.json").read_text(encoding="utf-8"))["nnunet_mm"]["phase_names"] == ["pv", "art"]


def test_write_multiphase_folders_keeps_each_phase_on_its_own_grid(tmp_path):
    root = phantom.write_multiphase_folders(tmp_path / "mm", num_cases=2, num_unlabeled=1, shape_zyx=SMALL_SHAPE)
    assert sorted(p.name for p in root.iterdir()) == ["phantom_000", "phantom_001", "phantom_002"]
    assert sorted(p.name for p in (root / "phantom_000").iterdir()) == [
        "art.nii.gz", "del.nii.gz", "label.nii.gz", "nc.nii.gz", "pv.nii.gz"
    ]
    assert not (root / "phantom_002" / "label.nii.gz").exists()
    pv = sitk.ReadImage(str(root / "phantom_000" / "pv.nii.gz"))
    art = sitk.ReadImage(str(root / "phantom_000" / "art.nii.gz"))
    label = sitk.ReadImage(str(root / "phantom_000" / "label.nii.gz"))
    assert label.GetSize() == pv.GetSize() and label.GetSpacing() == pv.GetSpacing()
    assert label.GetOrigin() == pv.GetOrigin()
    assert art.GetSize() != pv.GetSize() and art.GetSpacing()[2] == 5.0
    assert art.GetPixelID() == sitk.sitkInt16
    assert set(np.unique(sitk.GetArrayFromImage(label))) == {0, 1, 2}


def test_write_multiphase_folders_rejects_an_unknown_file_ending(tmp_path):
    with pytest.raises(ValueError, match=r"\.png.*\.nii\.gz"):
        phantom.write_multiphase_folders(tmp_path, num_cases=1, file_ending=".png")


def test_write_lits_writes_uncompressed_volume_and_segmentation(tmp_path):
    root = phantom.write_lits(tmp_path / "lits", num_cases=2, shape_zyx=SMALL_SHAPE)
    assert sorted(p.name for p in root.iterdir()) == [
        "segmentation-0.nii", "segmentation-1.nii", "volume-0.nii", "volume-1.nii"
    ]
    with open(root / "volume-0.nii", "rb") as handle:
        assert handle.read(2) != b"\x1f\x8b"  # not gzip
    with pytest.raises(gzip.BadGzipFile):
        gzip.open(root / "segmentation-0.nii").read(1)
    volume = sitk.ReadImage(str(root / "volume-0.nii"))
    segmentation = sitk.ReadImage(str(root / "segmentation-0.nii"))
    assert volume.GetPixelID() == sitk.sitkInt16 and segmentation.GetPixelID() == sitk.sitkUInt8
    assert volume.GetSpacing() == pytest.approx((1.5, 1.5, 3.0))
    assert set(np.unique(sitk.GetArrayFromImage(segmentation))) == {0, 1, 2}


@pytest.mark.parametrize("as_serialized_arrays", [False, True])
def test_write_mpth_writes_numbered_slices_and_per_phase_masks(tmp_path, as_serialized_arrays):
    import torch

    root = phantom.write_mpth(tmp_path / "MPTH", num_cases=1, seed=5, as_serialized_arrays=as_serialized_arrays,
                              shape_zyx=SMALL_SHAPE)
    case = make_case(phantom.case_seed(5, 0), shape_zyx=SMALL_SHAPE, phases=("pv", "art"))
    expected_names = {f"{k}.png" for k in range(SMALL_SHAPE[0])}
    for kind in ("train_img", "liver_mask", "tumor_mask"):
        for phase in ("pv", "art"):
            assert {p.name for p in (root / kind / phase / "phantom_000").iterdir()} == expected_names
    assert "10.png" in expected_names  # numeric, not zero-padded, names
    for phase in ("pv", "art"):
        slice_index = int(np.argmax((case.labels[phase] == 2).sum(axis=(1, 2))))
        name = f"{slice_index}.png"
        image_path = root / "train_img" / phase / "phantom_000" / name
        if as_serialized_arrays:
            stored = torch.load(image_path, weights_only=False)
            assert stored.dtype == np.float32
            np.testing.assert_array_equal(stored, case.images[phase][slice_index])
        else:
            with Image.open(image_path) as png:
                assert png.mode == "I;16"
                np.testing.assert_array_equal(np.asarray(png).astype(np.int32) - 1024, case.images[phase][slice_index])
        with Image.open(root / "liver_mask" / phase / "phantom_000" / name) as liver_png:
            assert liver_png.mode == "L"
            liver = np.asarray(liver_png)
        with Image.open(root / "tumor_mask" / phase / "phantom_000" / name) as tumour_png:
            assert tumour_png.mode == "L"
            tumour = np.asarray(tumour_png)
        assert set(np.unique(liver)) == {0, 1} and set(np.unique(tumour)) == {0, 255}
        np.testing.assert_array_equal(liver, (case.labels[phase][slice_index] >= 1).astype(np.uint8))
    tumour_volumes = {}
    for phase in ("pv", "art"):
        folder = root / "tumor_mask" / phase / "phantom_000"
        slices = sorted(folder.iterdir(), key=lambda path: int(path.stem))
        tumour_volumes[phase] = np.stack([np.asarray(Image.open(path)) for path in slices])
        np.testing.assert_array_equal(tumour_volumes[phase] > 0, case.labels[phase] == LABELS["tumor"])
    assert not np.array_equal(tumour_volumes["pv"], tumour_volumes["art"])  # each phase has its own warped mask


_WRITERS = {
    "nnunet": lambda root, **kw: phantom.write_nnunet_raw(root, num_training=1, **kw),
    "multiphase": lambda root, **kw: phantom.write_multiphase_folders(root, num_cases=1, **kw),
    "lits": lambda root, **kw: phantom.write_lits(root, num_cases=1, **kw),
    "mpth": lambda root, **kw: phantom.write_mpth(root, num_cases=1, **kw),
}


@pytest.mark.parametrize("layout", sorted(_WRITERS))
def test_writers_refuse_to_overwrite_without_the_flag(tmp_path, layout):
    write = _WRITERS[layout]
    target = write(tmp_path / "out", shape_zyx=SMALL_SHAPE, seed=0)
    before = sorted(str(p.relative_to(target)) for p in target.rglob("*"))
    with pytest.raises(FileExistsError, match=str(target)):
        write(tmp_path / "out", shape_zyx=SMALL_SHAPE, seed=1)
    assert sorted(str(p.relative_to(target)) for p in target.rglob("*")) == before
    unrelated = target / "notes.txt"
    unrelated.write_text("keep me", encoding="utf-8")
    assert write(tmp_path / "out", shape_zyx=SMALL_SHAPE, seed=1, overwrite=True) == target
    assert sorted(str(p.relative_to(target)) for p in target.rglob("*")) == sorted(before + ["notes.txt"])
    assert unrelated.read_text(encoding="utf-8") == "keep me"


def test_overwrite_removes_cases_of_a_larger_previous_run(tmp_path):
    phantom.write_lits(tmp_path, num_cases=2, shape_zyx=SMALL_SHAPE)
    phantom.write_lits(tmp_path, num_cases=1, shape_zyx=SMALL_SHAPE, overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["segmentation-0.nii", "volume-0.nii"]


# ------------------------------------------------------------------------------------------------ command line


def test_cli_writes_the_requested_layout_and_prints_one_summary_line(tmp_path, capsys):
    status = phantom.main(["--layout", "multiphase", "-o", str(tmp_path / "mm"), "-n", "1", "--num-test", "1",
                           "--seed", "4", "--shape", "16", "32", "32"])
    assert status == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1 and str(tmp_path / "mm") in lines[0]
    assert sorted(p.name for p in (tmp_path / "mm").iterdir()) == ["phantom_000", "phantom_001"]
    art = sitk.ReadImage(str(tmp_path / "mm" / "phantom_000" / "art.nii.gz"))
    assert art.GetSpacing()[2] == 5.0  # multiphase defaults to different grids


def test_cli_refuses_a_non_empty_output_without_overwrite(tmp_path, capsys):
    args = ["--layout", "lits", "-o", str(tmp_path), "-n", "1", "--shape", "16", "32", "32"]
    assert phantom.main(args) == 0
    with pytest.raises(SystemExit) as raised:
        phantom.main(args)
    assert raised.value.code == 2
    assert "--overwrite" in capsys.readouterr().err
    assert phantom.main(args + ["--overwrite"]) == 0


def test_cli_rejects_a_mistyped_flag():
    with pytest.raises(SystemExit):
        phantom.main(["--layout", "lits", "-o", "unused", "--num-casess", "2"])


def test_phase_labels_and_held_out_test_seed(tmp_path):
    """Per-phase labels follow each phase's own anatomy; the test cases come from their own generator seed; the block
    names the label folder and declares how the channels were acquired."""
    folder = phantom.write_nnunet_raw(tmp_path, dataset_id=42, name="Phases", num_training=1, num_test=1, seed=3,
                                      test_seed=9, phase_labels=True, shape_zyx=SMALL_SHAPE)
    block = json.loads((folder / "dataset.json").read_text(encoding="utf-8"))["nnunet_mm"]
    assert block["phase_labels_dir"] == "labelsTr_phases" and block["channel_acquisition"] == "separate"
    assert sorted(p.name for p in (folder / "labelsTr_phases").iterdir()) == [
        f"phantom_000_000{c}.nii.gz" for c in (1, 2, 3)]
    case = make_case(phantom.case_seed(3, 0), shape_zyx=SMALL_SHAPE)
    arterial = sitk.GetArrayFromImage(sitk.ReadImage(str(folder / "labelsTr_phases" / "phantom_000_0001.nii.gz")))
    np.testing.assert_array_equal(arterial, case.label_on_reference_grid("art"))
    assert (arterial != case.label).any()  # the arterial phase is misregistered: its label differs
    test_case = make_case(phantom.case_seed(9, 1), shape_zyx=SMALL_SHAPE)
    test_label = sitk.GetArrayFromImage(sitk.ReadImage(str(folder / "labelsTs" / "phantom_001.nii.gz")))
    np.testing.assert_array_equal(test_label, test_case.label)
    aligned = phantom.write_nnunet_raw(tmp_path, dataset_id=43, name="Aligned", num_training=1, seed=3,
                                       misregistration=False, shape_zyx=SMALL_SHAPE)
    assert json.loads((aligned / "dataset.json").read_text(encoding="utf-8"))["nnunet_mm"]["channel_acquisition"] == "co_registered"


def test_lesion_kinds_restrict_the_lesions_drawn():
    kinds = {kind for seed in range(4) for kind in make_case(seed, shape_zyx=SMALL_SHAPE, num_lesions=(3, 3),
                                                              lesion_kinds=("hcc",)).lesion_kinds}
    assert kinds == {"hcc"}
    with pytest.raises(ValueError, match="lesion_kinds"):
        make_case(0, shape_zyx=SMALL_SHAPE, lesion_kinds=("adenoma",))
