"""Dataset501_MPTH: per-slice PV/ART liver CT with per-phase masks → nnU-Net raw plus per-phase labels."""
from __future__ import annotations

import json
import logging
import re
import shutil
import tarfile
import zipfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from layout_mpth import PNG16_OFFSET, write_mpth_layout
from PIL import Image

from nnunet_mm.conversion import ConversionError, read_slice
from nnunet_mm.dataset_conversion.Dataset501_MPTH import convert, convert_with_summary, main
from nnunet_mm.evaluation.metrics import dice
from nnunet_mm.phantom import case_id, case_seed, make_case, write_mpth

DATASET = "Dataset501_MPTH"
SHAPE_ZYX = (12, 48, 48)  # 12 slices: names 10.png and 11.png sort after 9.png only numerically
SPACING_ZYX = (3.0, 0.8, 0.7)


def _array(path: Path) -> np.ndarray:
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


def _names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


@pytest.fixture
def phantom_png(tmp_path: Path) -> Path:
    """The phantom writer's PNG variant: cases phantom_000/001, slices 0.png … 11.png, 16-bit HU + 1024."""
    return write_mpth(tmp_path / "mpth_png", num_cases=2, shape_zyx=SHAPE_ZYX)


@pytest.fixture(scope="module")
def seed_layout_template(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """The seed repository's naming: cases 1, 2, 10 (10 unlabelled), slices 1.png … 12.png, torch.save-d tensors."""
    root = tmp_path_factory.mktemp("template") / "mpth"
    written = write_mpth_layout(root, case_names=("1", "2", "10"), unlabelled=("10",), image_format="tensor",
                                shape_zyx=SHAPE_ZYX)
    return root, written


@pytest.fixture
def seed_layout(seed_layout_template: tuple[Path, dict], tmp_path: Path) -> tuple[Path, dict]:
    """A copy of the template that the test may break."""
    template, written = seed_layout_template
    return Path(shutil.copytree(template, tmp_path / "mpth")), written


# ----------------------------------------------------------------------------------------------------------------
# good input

def test_phantom_png_layout_becomes_pv_art_channels_pv_labels_art_phase_labels_and_dataset_json(
        kit: SimpleNamespace, phantom_png: Path, output_root: Path) -> None:
    before = kit.tree_state(phantom_png)
    dataset = convert(phantom_png, output_root=output_root, spacing_zyx_mm=SPACING_ZYX)

    assert dataset == output_root / DATASET
    assert _names(dataset / "imagesTr") == [f"phantom_00{c}_000{k}.nii.gz" for c in (0, 1) for k in (0, 1)]
    assert _names(dataset / "labelsTr") == ["phantom_000.nii.gz", "phantom_001.nii.gz"]
    assert _names(dataset / "labelsTr_phases") == ["phantom_000_0001.nii.gz", "phantom_001_0001.nii.gz"]
    assert _names(dataset / "imagesTs") == []
    for index in (0, 1):
        case = make_case(case_seed(0, index), shape_zyx=SHAPE_ZYX, phases=("pv", "art"))
        name = case_id(index)
        np.testing.assert_array_equal(_array(dataset / "imagesTr" / f"{name}_0000.nii.gz"), case.images["pv"])
        np.testing.assert_array_equal(_array(dataset / "imagesTr" / f"{name}_0001.nii.gz"), case.images["art"])
        np.testing.assert_array_equal(_array(dataset / "labelsTr" / f"{name}.nii.gz"), case.labels["pv"])
        np.testing.assert_array_equal(_array(dataset / "labelsTr_phases" / f"{name}_0001.nii.gz"),
                                      case.label_on_reference_grid("art"))
    for file in [*(dataset / "imagesTr").iterdir(), *(dataset / "labelsTr").iterdir(),
                 *(dataset / "labelsTr_phases").iterdir()]:
        image = sitk.ReadImage(str(file))
        assert image.GetSpacing() == pytest.approx(SPACING_ZYX[::-1]) and image.GetSize() == SHAPE_ZYX[::-1]
        assert image.GetOrigin() == (0.0, 0.0, 0.0)
    assert sitk.ReadImage(str(dataset / "imagesTr" / "phantom_000_0000.nii.gz")).GetPixelID() == sitk.sitkInt16
    assert kit.tree_state(phantom_png) == before

    dataset_json = json.loads((dataset / "dataset.json").read_text(encoding="utf-8"))
    assert dataset_json["channel_names"] == {"0": "CT", "1": "CT"}
    assert dataset_json["labels"] == {"background": 0, "liver": 1, "tumor": 2}
    assert dataset_json["numTraining"] == 2 and dataset_json["file_ending"] == ".nii.gz"
    block = dataset_json["nnunet_mm"]
    assert block["reference_channel"] == 0 and block["phase_names"] == ["pv", "art"]
    assert block["phase_labels_dir"] == "labelsTr_phases"
    assert block["channel_acquisition"] == "separate"  # phases of separate breath-holds: augmentation on
    assert block["registration"] == "none" and block["converter"] == DATASET
    assert block["source"] == str(phantom_png.resolve())
    assert block["notes"] == ["spacing z, y, x: (3.0, 0.8, 0.7) mm (given)",
                              "image slices: 16-bit PNG (value - 1024)"]


def test_output_passes_nnunet_verify_dataset_integrity(kit: SimpleNamespace, seed_layout: tuple[Path, dict],
                                                       output_root: Path) -> None:
    dataset = convert(seed_layout[0], output_root=output_root, spacing_zyx_mm=SPACING_ZYX)
    kit.verify_dataset_integrity(dataset)


def test_seed_naming_stacks_slices_numerically_and_unmasked_cases_become_test_cases(
        seed_layout: tuple[Path, dict], output_root: Path, caplog: pytest.LogCaptureFixture) -> None:
    root, written = seed_layout
    with caplog.at_level(logging.WARNING):
        summary = convert_with_summary(root, output_root=output_root)
    dataset = summary.output_dir
    assert "no spacing; using the default (1.0, 1.0, 1.0) mm" in caplog.text
    assert summary.spacing_min == summary.spacing_max == (1.0, 1.0, 1.0)
    assert _names(dataset / "imagesTr") == ["1_0000.nii.gz", "1_0001.nii.gz", "2_0000.nii.gz", "2_0001.nii.gz"]
    assert _names(dataset / "imagesTs") == ["10_0000.nii.gz", "10_0001.nii.gz"]
    assert _names(dataset / "labelsTr_phases") == ["1_0001.nii.gz", "2_0001.nii.gz"]
    # slice k.png lies at z = k - 1 (lexical order would put 10.png, 11.png, 12.png after 1.png)
    for name in ("1", "10"):
        split = "Ts" if name == "10" else "Tr"
        for channel, phase in enumerate(("pv", "art")):
            np.testing.assert_array_equal(_array(dataset / f"images{split}" / f"{name}_000{channel}.nii.gz"),
                                          written[name].images[phase])
    np.testing.assert_array_equal(_array(dataset / "labelsTr_phases" / "1_0001.nii.gz"), written["1"].labels["art"])


def test_torch_saved_numpy_arrays_load_without_unpickling_code(tmp_path: Path, output_root: Path) -> None:
    source = write_mpth(tmp_path / "mpth_arrays", num_cases=1, shape_zyx=SHAPE_ZYX, as_serialized_arrays=True)
    first_slice = source / "train_img" / "pv" / "phantom_000" / "0.png"
    assert read_slice(first_slice).shape == SHAPE_ZYX[1:]  # a numpy array inside a torch.save file
    dataset = convert(source, output_root=output_root)
    case = make_case(case_seed(0, 0), shape_zyx=SHAPE_ZYX, phases=("pv", "art"))
    np.testing.assert_array_equal(_array(dataset / "imagesTr" / "phantom_000_0001.nii.gz"), case.images["art"])
    notes = json.loads((dataset / "dataset.json").read_text(encoding="utf-8"))["nnunet_mm"]["notes"]
    assert notes[-1] == "image slices: serialised arrays (as stored)"


def test_numpy_arrays_pickled_under_numpy_1_load_too(tmp_path: Path, output_root: Path) -> None:
    written = write_mpth_layout(tmp_path / "mpth", case_names=("1",), image_format="numpy1", shape_zyx=SHAPE_ZYX)
    with zipfile.ZipFile(tmp_path / "mpth" / "train_img" / "pv" / "1" / "1.png") as archive:
        (pickle_name,) = [name for name in archive.namelist() if name.endswith("/data.pkl")]
        assert b"numpy.core.multiarray" in archive.read(pickle_name)
    dataset = convert(tmp_path / "mpth", output_root=output_root)
    np.testing.assert_array_equal(_array(dataset / "imagesTr" / "1_0000.nii.gz"), written["1"].images["pv"])


class _TouchOnLoad:
    """Pickles as a call to ``Path.touch``: loading it unsafely would create the file."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return Path.touch, (self.marker,)


def test_a_pickle_that_would_run_code_is_refused_and_never_executed(kit: SimpleNamespace,
                                                                    seed_layout: tuple[Path, dict], output_root: Path,
                                                                    tmp_path: Path) -> None:
    root, _ = seed_layout
    marker, bad = tmp_path / "executed", root / "train_img" / "art" / "2" / "7.png"
    torch.save(_TouchOnLoad(marker), bad)
    with pytest.raises(ConversionError, match=re.escape(str(bad)) + ".*weights_only=True"):
        convert(root, output_root=output_root)
    assert not marker.exists()
    kit.assert_nothing_written(output_root)


@pytest.mark.parametrize("image_format, png_offset, expected_shift, note", [  # 16-bit, 1024: the first test
    ("png16", 0.0, PNG16_OFFSET, "16-bit PNG (value - 0)"),
    ("png8", None, 0, "8-bit PNG (value - 0)"),
])
def test_png_offset_defaults_to_1024_for_16_bit_and_0_for_8_bit(tmp_path: Path, output_root: Path,
                                                                 image_format: str, png_offset: float | None,
                                                                 expected_shift: int, note: str) -> None:
    written = write_mpth_layout(tmp_path / "mpth", case_names=("1",), image_format=image_format, shape_zyx=SHAPE_ZYX)
    summary = convert_with_summary(tmp_path / "mpth", output_root=output_root, png_offset=png_offset)
    values = _array(summary.output_dir / "imagesTr" / "1_0000.nii.gz")
    np.testing.assert_array_equal(values, written["1"].images["pv"].astype(np.int32) + expected_shift)
    assert f"image slices: {note}" in summary.notes


@pytest.mark.parametrize("mode, min_dice", [("rigid", 0.98), ("affine", 0.9)])
def test_registration_realigns_art_image_and_art_labels_onto_pv(tmp_path: Path, output_root: Path, mode: str,
                                                                 min_dice: float) -> None:
    written = write_mpth_layout(tmp_path / "mpth", case_names=("1",), image_format="png16", shape_zyx=SHAPE_ZYX,
                                art_shift_yx=(3, -2))
    assert dice(written["1"].labels["pv"], written["1"].labels["art"]) < 0.8
    summary = convert_with_summary(tmp_path / "mpth", output_root=output_root, spacing_zyx_mm=(3.0, 1.5, 1.5),
                                   register=mode)
    dataset = summary.output_dir
    pv_label = _array(dataset / "labelsTr" / "1.nii.gz")
    art_label = _array(dataset / "labelsTr_phases" / "1_0001.nii.gz")
    assert dice(pv_label, art_label) > min_dice
    pv, art = (_array(dataset / "imagesTr" / f"1_000{c}.nii.gz") for c in (0, 1))
    liver = pv_label == 1
    assert abs(np.median(art[liver]) - 80) < 20 and abs(np.median(pv[liver]) - 115) < 20  # ART / PV liver HU
    assert any(line.startswith("liver Dice pv vs art labels") for line in summary.notes)
    assert json.loads((dataset / "dataset.json").read_text(encoding="utf-8"))["nnunet_mm"]["registration"] == mode


def test_phases_option_picks_the_reference_phase(seed_layout: tuple[Path, dict], output_root: Path) -> None:
    root, written = seed_layout
    dataset = convert(root, output_root=output_root, phases=["art", "pv"])
    np.testing.assert_array_equal(_array(dataset / "imagesTr" / "2_0000.nii.gz"), written["2"].images["art"])
    np.testing.assert_array_equal(_array(dataset / "labelsTr" / "2.nii.gz"), written["2"].labels["art"])
    np.testing.assert_array_equal(_array(dataset / "labelsTr_phases" / "2_0001.nii.gz"), written["2"].labels["pv"])
    assert json.loads((dataset / "dataset.json").read_text(encoding="utf-8"))["nnunet_mm"]["phase_names"] == ["art", "pv"]


def test_a_zip_archive_is_read_like_the_folder(seed_layout: tuple[Path, dict], tmp_path: Path,
                                               output_root: Path) -> None:
    root, written = seed_layout
    archive = Path(shutil.make_archive(str(tmp_path / "mpth_archive"), "zip", root.parent, root.name))
    dataset = convert(archive, output_root=output_root)
    assert _names(dataset / "labelsTr") == ["1.nii.gz", "2.nii.gz"]
    np.testing.assert_array_equal(_array(dataset / "labelsTr" / "2.nii.gz"), written["2"].labels["pv"])


def test_an_archive_member_escaping_the_input_is_refused(kit: SimpleNamespace, seed_layout: tuple[Path, dict],
                                                         tmp_path: Path, output_root: Path) -> None:
    archive = tmp_path / "mpth.tar"
    with tarfile.open(archive, "w") as handle:
        handle.add(seed_layout[0], arcname="mpth")
        handle.add(seed_layout[0] / "train_img" / "pv" / "1" / "1.png", arcname="../evil.png")
    with pytest.raises(ValueError, match=re.escape(str(archive)) + ".*path escaping the input"):
        convert(archive, output_root=output_root)
    kit.assert_nothing_written(output_root)
    assert not (tmp_path / "evil.png").exists()


# ----------------------------------------------------------------------------------------------------------------
# bad input: every problem named with its file, nothing written, input untouched

def _case_missing_in_art(root: Path) -> tuple[Path, str]:
    shutil.rmtree(root / "train_img" / "art" / "2")
    return root / "train_img" / "art" / "2", re.escape(f"case folder missing ({root / 'train_img' / 'pv' / '2'} exists")


def _mask_folder_missing_for_one_phase(root: Path) -> tuple[Path, str]:
    shutil.rmtree(root / "tumor_mask" / "art" / "1")
    return root / "tumor_mask" / "art" / "1", "mask folder missing, while .* exists"


def _mask_slice_missing(root: Path) -> tuple[Path, str]:
    (root / "liver_mask" / "pv" / "2" / "5.png").unlink()
    return root / "liver_mask" / "pv" / "2" / "5.png", "missing slice file .*every image slice needs a mask slice"


def _art_slice_missing(root: Path) -> tuple[Path, str]:
    (root / "train_img" / "art" / "1" / "11.png").unlink()
    return root / "train_img" / "art" / "1" / "11.png", "missing slice file .*every phase needs the same slice files"


def _unreadable_slice(root: Path) -> tuple[Path, str]:
    path = root / "train_img" / "pv" / "2" / "4.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    return path, "cannot read image"


def _phase_shape_mismatch(root: Path) -> tuple[Path, str]:
    folder = root / "train_img" / "art" / "1"
    for file in folder.iterdir():
        torch.save(torch.zeros(40, 40), file)
    return folder, r"image stack of shape \(z, y, x\) \(12, 40, 40\) differs from the reference phase"


def _mask_shape_mismatch(root: Path) -> tuple[Path, str]:
    folder = root / "liver_mask" / "art" / "2"
    for file in folder.iterdir():
        Image.fromarray(np.zeros((48, 40), dtype=np.uint8)).save(file)
    return folder, r"mask stack of shape \(z, y, x\) \(12, 48, 40\) differs from its image stack"


def _odd_slice_shape(root: Path) -> tuple[Path, str]:
    path = root / "tumor_mask" / "pv" / "1" / "3.png"
    Image.fromarray(np.zeros((48, 47), dtype=np.uint8)).save(path)
    return path, r"slice shape \(48, 47\) differs from"


def _non_finite_slice(root: Path) -> tuple[Path, str]:
    path = root / "train_img" / "pv" / "1" / "6.png"
    values = torch.zeros(48, 48)
    values[4, 4] = float("nan")
    torch.save(values, path)
    return path, "contains 1 NaN/inf values"


def _duplicate_case_id(root: Path) -> tuple[Path, str]:
    for phase in ("pv", "art"):
        shutil.copytree(root / "train_img" / phase / "1", root / "train_img" / phase / "case 1")
        (root / "train_img" / phase / "1").rename(root / "train_img" / phase / "case_1")
    return root / "train_img" / "pv" / "case_1", "duplicate case id 'case_1'"


@pytest.mark.parametrize("breaker", [
    _case_missing_in_art, _mask_folder_missing_for_one_phase, _mask_slice_missing, _art_slice_missing,
    _unreadable_slice, _phase_shape_mismatch, _mask_shape_mismatch, _odd_slice_shape, _non_finite_slice,
    _duplicate_case_id,
])
def test_bad_input_is_reported_with_the_file_and_nothing_is_written(kit: SimpleNamespace,
                                                                    seed_layout: tuple[Path, dict],
                                                                    output_root: Path, breaker) -> None:
    root = seed_layout[0]
    offending, message = breaker(root)
    with kit.refused(root, output_root, match=re.escape(str(offending)) + ".*" + message):
        convert(root, output_root=output_root)


def test_several_problems_are_all_reported_at_once(kit: SimpleNamespace, seed_layout: tuple[Path, dict],
                                                   output_root: Path) -> None:
    root = seed_layout[0]
    offending = [_odd_slice_shape(root)[0], _non_finite_slice(root)[0],  # both in case 1
                 _mask_slice_missing(root)[0]]  # case 2
    unreadable = root / "train_img" / "art" / "10" / "2.png"  # the unlabelled case
    unreadable.write_bytes(b"")
    with pytest.raises(ConversionError) as caught:
        convert(root, output_root=output_root)
    assert len(caught.value.problems) == 4
    for path in offending + [unreadable]:
        assert str(path) in str(caught.value)
    kit.assert_nothing_written(output_root)


@pytest.mark.parametrize("make, message", [
    (lambda root: root.mkdir(), "train_img: folder not found"),
    (lambda root: [(root / "train_img" / p).mkdir(parents=True) for p in ("pv", "art")], "no case folders found"),
])
def test_an_empty_input_is_reported(kit: SimpleNamespace, tmp_path: Path, output_root: Path, make,
                                    message: str) -> None:
    make(tmp_path / "mpth")
    with pytest.raises(ConversionError, match=message):
        convert(tmp_path / "mpth", output_root=output_root)
    kit.assert_nothing_written(output_root)


def test_a_missing_phase_folder_and_a_dataset_without_masks_are_reported(kit: SimpleNamespace,
                                                                         seed_layout: tuple[Path, dict],
                                                                         output_root: Path) -> None:
    root = seed_layout[0]
    with pytest.raises(ConversionError, match=re.escape(str(root / "train_img" / "del")) + ": phase folder not found"):
        convert(root, output_root=output_root, phases=["pv", "del"])
    for kind in ("liver_mask", "tumor_mask"):
        shutil.rmtree(root / kind)
    with pytest.raises(ConversionError, match="no case has mask folders"):
        convert(root, output_root=output_root)
    kit.assert_nothing_written(output_root)


def test_a_failure_while_writing_leaves_no_dataset_and_no_staging_folder(kit: SimpleNamespace,
                                                                         seed_layout: tuple[Path, dict],
                                                                         output_root: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    import nnunet_mm.dataset_conversion.Dataset501_MPTH as converter

    def failing_json(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(converter, "write_dataset_json", failing_json)
    with pytest.raises(OSError, match="disk full"):
        convert(seed_layout[0], output_root=output_root)
    kit.assert_nothing_written(output_root)


# ----------------------------------------------------------------------------------------------------------------
# existing output, arguments, command line

def test_an_existing_dataset_is_refused_without_overwrite_and_replaced_with_it(seed_layout: tuple[Path, dict],
                                                                                output_root: Path) -> None:
    root = seed_layout[0]
    dataset = convert(root, output_root=output_root)
    marker = dataset / "marker.txt"
    marker.write_text("previous conversion", encoding="utf-8")
    with pytest.raises(FileExistsError, match=re.escape(str(dataset))):
        convert(root, output_root=output_root)
    assert marker.read_text(encoding="utf-8") == "previous conversion"
    for kind in ("train_img", "liver_mask", "tumor_mask"):
        for phase in ("pv", "art"):
            shutil.rmtree(root / kind / phase / "2", ignore_errors=True)
    assert convert(root, output_root=output_root, overwrite=True) == dataset
    assert not marker.exists() and _names(dataset / "labelsTr") == ["1.nii.gz"]
    assert _names(output_root) == [DATASET]


def test_invalid_arguments_list_the_valid_values(kit: SimpleNamespace, seed_layout: tuple[Path, dict],
                                                 output_root: Path) -> None:
    root = seed_layout[0]
    with pytest.raises(ValueError, match=r"register must be one of \['none', 'rigid', 'affine'\]"):
        convert(root, output_root=output_root, register="bspline")
    with pytest.raises(ValueError, match="phases must differ"):
        convert(root, output_root=output_root, phases=["pv", "pv"])
    with pytest.raises(ValueError, match="three positive numbers"):
        convert(root, output_root=output_root, spacing_zyx_mm=(3.0, -1.0, 1.0))
    with pytest.raises(ValueError, match="lies inside the source folder"):
        convert(root, output_root=root / "raw")
    kit.assert_nothing_written(output_root)


def test_main_prints_the_summary(seed_layout: tuple[Path, dict], output_root: Path,
                                 capsys: pytest.CaptureFixture) -> None:
    status = main([str(seed_layout[0]), "--output-root", str(output_root), "--spacing", "2.5", "0.8", "0.8",
                   "--phases", "pv,art", "--register", "none"])
    printed = capsys.readouterr().out
    assert status == 0
    assert f"Converted 2 training and 1 test case(s) into {output_root / DATASET}" in printed
    assert "channels: 0 CT, 1 CT" in printed and "liver (1):" in printed and "tumor (2):" in printed
    assert "spacing (x, y, z) mm: min (0.8, 0.8, 2.5), max (0.8, 0.8, 2.5)" in printed
    assert "per-phase labels: labelsTr_phases/<case>_<channel:04d>.nii.gz (2 files)" in printed


def test_main_reports_problems_and_returns_1(seed_layout: tuple[Path, dict], output_root: Path,
                                             capsys: pytest.CaptureFixture) -> None:
    offending, _ = _mask_slice_missing(seed_layout[0])
    assert main([str(seed_layout[0]), "--output-root", str(output_root)]) == 1
    assert f"{offending}: missing slice file" in capsys.readouterr().err


def test_main_refuses_unknown_flags() -> None:
    with pytest.raises(SystemExit):
        main(["somewhere", "--registr", "rigid"])


def test_nnunet_mm_convert_501_runs_the_converter(seed_layout: tuple[Path, dict], output_root: Path,
                                                  capsys: pytest.CaptureFixture) -> None:
    from nnunet_mm.cli.main import main as cli_main

    assert cli_main(["convert", "501", str(seed_layout[0]), "--output-root", str(output_root)]) == 0
    assert "Converted 2 training and 1 test case(s)" in capsys.readouterr().out
    assert (output_root / DATASET / "labelsTr_phases" / "2_0001.nii.gz").is_file()


# ----------------------------------------------------------------------------------------------------------------
# symbolic links and archives: nothing outside the input is read; an archive is a source like its folder

def _link_slice_to_a_file_outside(root: Path) -> tuple[Path, Path]:
    link, outside = root / "train_img" / "art" / "2" / "7.png", root.parent / "outside" / "7.png"
    outside.parent.mkdir()
    shutil.move(link, outside)
    link.symlink_to(outside)
    return link, outside


def _link_mask_slice_to_etc(root: Path) -> tuple[Path, Path]:
    if not Path("/etc/passwd").is_file():
        pytest.skip("no /etc/passwd here")
    link = root / "liver_mask" / "pv" / "1" / "3.png"
    link.unlink()
    link.symlink_to("/etc/passwd")
    return link, Path("/etc/passwd")


def _link_case_folder_outside(root: Path) -> tuple[Path, Path]:
    link, outside = root / "train_img" / "pv" / "2", root.parent / "elsewhere" / "pv_2"
    outside.parent.mkdir()
    shutil.move(link, outside)
    link.symlink_to(outside, target_is_directory=True)
    return link, outside


def _link_mask_root_outside(root: Path) -> tuple[Path, Path]:
    """The whole tumor_mask/ folder is a link out: named once, although every labelled case reads from it."""
    link, outside = root / "tumor_mask", root.parent / "elsewhere" / "tumor_mask"
    outside.parent.mkdir()
    shutil.move(link, outside)
    link.symlink_to(Path("..") / "elsewhere" / "tumor_mask", target_is_directory=True)  # relative
    return link, outside


def _link_phase_folder_outside(root: Path) -> tuple[Path, Path]:
    link, outside = root / "train_img" / "art", root.parent / "art_elsewhere"
    shutil.move(link, outside)
    link.symlink_to(outside, target_is_directory=True)
    return link, outside


def _link_image_root_outside(root: Path) -> tuple[Path, Path]:
    link, outside = root / "train_img", root.parent / "train_img_elsewhere"
    shutil.move(link, outside)
    link.symlink_to(outside, target_is_directory=True)
    return link, outside


@pytest.mark.parametrize("breaker", [_link_slice_to_a_file_outside, _link_mask_slice_to_etc, _link_case_folder_outside,
                                     _link_mask_root_outside, _link_phase_folder_outside, _link_image_root_outside])
def test_a_symbolic_link_leading_outside_the_source_is_refused(kit: SimpleNamespace, seed_layout: tuple[Path, dict],
                                                               output_root: Path, breaker) -> None:
    root = seed_layout[0]
    offending, target = breaker(root)
    with kit.refused(root, output_root, match=re.escape(str(offending)) + ": resolves to " +
                     re.escape(str(target.resolve())) +
                     r", outside the input folder .*\(path escaping the input\)") as caught:
        convert(root, output_root=output_root)
    assert len(caught.value.problems) == 1  # the link alone, once: nothing behind it was read


def test_main_refuses_a_link_leading_outside_with_an_error_line_and_writes_nothing(
        seed_layout: tuple[Path, dict], output_root: Path, capsys: pytest.CaptureFixture) -> None:
    root = seed_layout[0]
    link, _ = _link_case_folder_outside(root)
    output_root.mkdir()
    assert main([str(root), "--output-root", str(output_root)]) == 1
    captured = capsys.readouterr()
    assert captured.err.startswith("error: ") and "Traceback" not in captured.err + captured.out
    assert f"{link}: resolves to" in captured.err and "outside the input folder" in captured.err
    assert list(output_root.iterdir()) == []  # no dataset, no hidden staging folder .Dataset501_*


def _dataset_contents(dataset: Path) -> dict[str, object]:
    """Every image's voxels and geometry, and dataset.json without its 'source'."""
    contents: dict[str, object] = {}
    for file in sorted(dataset.rglob("*.nii.gz")):
        image = sitk.ReadImage(str(file))
        contents[str(file.relative_to(dataset))] = (sitk.GetArrayFromImage(image).tobytes(), image.GetSpacing(),
                                                    image.GetOrigin(), image.GetDirection())
    dataset_json = json.loads((dataset / "dataset.json").read_text(encoding="utf-8"))
    del dataset_json["nnunet_mm"]["source"]
    contents["dataset.json"] = dataset_json
    return contents


def test_symbolic_links_that_stay_inside_the_source_are_followed(seed_layout: tuple[Path, dict], tmp_path: Path,
                                                                 output_root: Path) -> None:
    root = seed_layout[0]
    expected = _dataset_contents(convert(root, output_root=tmp_path / "expected"))
    store = root / "store"  # not an MPTH folder name: never listed itself
    store.mkdir()
    shutil.move(root / "train_img" / "art" / "1" / "4.png", store / "art_1_4.png")
    (root / "train_img" / "art" / "1" / "4.png").symlink_to(Path("..") / ".." / ".." / "store" / "art_1_4.png")
    shutil.move(root / "liver_mask" / "pv" / "2", store / "liver_pv_2")
    (root / "liver_mask" / "pv" / "2").symlink_to(store / "liver_pv_2", target_is_directory=True)  # absolute
    shutil.move(root / "tumor_mask", store / "tumor_mask")
    (root / "tumor_mask").symlink_to(Path("store") / "tumor_mask", target_is_directory=True)
    linked_root = tmp_path / "mpth_link"  # the source itself may be a link to anywhere
    linked_root.symlink_to(root, target_is_directory=True)

    assert _dataset_contents(convert(linked_root, output_root=output_root)) == expected


@pytest.mark.parametrize("archive_format", ["zip", "gztar", "tar"])
def test_an_archive_of_the_source_gives_the_same_dataset_as_the_folder(seed_layout: tuple[Path, dict],
                                                                       tmp_path: Path, output_root: Path,
                                                                       archive_format: str) -> None:
    root = seed_layout[0]
    expected = _dataset_contents(convert(root, output_root=tmp_path / "expected"))
    archive = Path(shutil.make_archive(str(tmp_path / "mpth_archive"), archive_format, root.parent, root.name))
    dataset = convert(archive, output_root=output_root)
    assert _dataset_contents(dataset) == expected
    assert json.loads((dataset / "dataset.json").read_text(encoding="utf-8"))["nnunet_mm"]["source"] == str(archive.resolve())


def test_problems_inside_an_archive_name_the_archive_member(kit: SimpleNamespace, seed_layout: tuple[Path, dict],
                                                            tmp_path: Path, output_root: Path) -> None:
    root = seed_layout[0]
    _mask_slice_missing(root)
    archive = Path(shutil.make_archive(str(tmp_path / "mpth_archive"), "gztar", root.parent, root.name))
    with pytest.raises(ConversionError, match=re.escape(f"{archive}:mpth/liver_mask/pv/2/5.png: missing slice file")):
        convert(archive, output_root=output_root)
    kit.assert_nothing_written(output_root)
