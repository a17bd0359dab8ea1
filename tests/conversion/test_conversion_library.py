"""The shared converter library: DICOM order by position, slice sniffing, label whitelists, safe archives, source
file listing, summaries."""
from __future__ import annotations

import re
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from nnunet_mm.conversion import (CaseRecord, ConversionError, bin_intensities, check_inside, extract_archive,
                                  natural_key, numeric_sorted, prepare_output, raise_if_problems, read_dicom_volume,
                                  read_slice, remap_labels, source_files, source_folder, summarize)
from nnunet_mm.io import write_dicom_series


def _volume(num_slices: int = 6) -> sitk.Image:
    array = (np.arange(num_slices)[:, None, None] * 100 + np.zeros((num_slices, 8, 10))).astype(np.int16)
    image = sitk.GetImageFromArray(array)
    image.SetSpacing((0.8, 0.8, 2.5))
    image.SetOrigin((-4.0, 3.0, 10.0))
    return image


def test_dicom_slices_are_ordered_by_position_whatever_the_file_names_and_uids(tmp_path):
    volume = _volume()
    files = write_dicom_series(volume, tmp_path / "written")
    scrambled = tmp_path / "scrambled"
    scrambled.mkdir()
    order = [3, 0, 5, 1, 4, 2]  # file k of the new folder holds slice order[k]
    for new_index, slice_index in enumerate(order):
        reader = sitk.ImageFileReader()
        reader.SetFileName(str(files[slice_index]))
        reader.LoadPrivateTagsOn()
        image = reader.Execute()
        image.SetMetaData("0020|000e", f"1.2.3.{new_index}")  # per-file series UID, as in anonymised CHAOS
        writer = sitk.ImageFileWriter()
        writer.KeepOriginalImageUIDOn()
        writer.SetFileName(str(scrambled / f"IMG-{new_index:04d}.dcm"))
        writer.Execute(image)
    assert len(sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(scrambled))) == 6  # GDCM grouping fails here

    result = read_dicom_volume(scrambled)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(result)[:, 0, 0], np.arange(6) * 100)
    np.testing.assert_allclose(result.GetSpacing(), (0.8, 0.8, 2.5), atol=1e-3)
    np.testing.assert_allclose(result.GetOrigin(), (-4.0, 3.0, 10.0), atol=1e-3)


def test_duplicate_slice_positions_are_refused_naming_a_file(tmp_path):
    files = write_dicom_series(_volume(3), tmp_path / "a", series_instance_uid="1.2.3")
    (tmp_path / "a" / "copy.dcm").write_bytes(files[1].read_bytes())
    with pytest.raises(ValueError, match=r"same position"):
        read_dicom_volume(tmp_path / "a")


def test_natural_order_and_sniffing_of_slices_named_png(tmp_path):
    assert [p.name for p in numeric_sorted([Path("10.png"), Path("2.png"), Path("1.png")])] == \
        ["1.png", "2.png", "10.png"]
    assert natural_key("IMG-0004-00002.dcm") < natural_key("IMG-0004-00010.dcm")
    array = np.arange(12, dtype=np.int16).reshape(3, 4)
    np.save(tmp_path / "as_numpy.npy", array)
    (tmp_path / "as_numpy.npy").rename(tmp_path / "0.png")  # a numpy array that calls itself .png
    np.testing.assert_array_equal(read_slice(tmp_path / "0.png"), array)
    sitk.WriteImage(sitk.GetImageFromArray(array.astype(np.uint16)), str(tmp_path / "1.png"))
    np.testing.assert_array_equal(read_slice(tmp_path / "1.png"), array)
    (tmp_path / "2.png").write_bytes(b"not an image at all")
    with pytest.raises(ValueError, match=r"2\.png: unknown slice format"):
        read_slice(tmp_path / "2.png")


def test_torch_saved_slices_load_without_unpickling_code(tmp_path):
    torch = pytest.importorskip("torch")
    torch.save(torch.arange(6).reshape(2, 3), tmp_path / "5.png")
    np.testing.assert_array_equal(read_slice(tmp_path / "5.png"), np.arange(6).reshape(2, 3))


def test_remap_is_a_whitelist_and_known_strays_are_fixed_with_a_warning(caplog):
    mapping = {0: 0, 205: 1, 420: 2}
    labels = np.array([0, 205, 420, 421])
    with pytest.raises(ValueError, match=r"label\.nii\.gz: unknown label values \[421\]"):
        remap_labels(labels, mapping, Path("label.nii.gz"))
    fixed = remap_labels(labels, mapping, Path("label.nii.gz"), fixes={421: 420})
    np.testing.assert_array_equal(fixed, [0, 1, 2, 2])
    assert "421" in caplog.text and "label.nii.gz" in caplog.text


def test_intensity_bins_map_chaos_grey_levels_and_refuse_strays():
    ground = np.array([0, 63, 126, 189, 252])
    bins = [(55, 70, 1), (110, 135, 2), (175, 200, 3), (240, 255, 4)]
    np.testing.assert_array_equal(bin_intensities(ground, bins, Path("g.png")), [0, 1, 2, 3, 4])
    with pytest.raises(ValueError, match=r"g\.png: intensities \[100\]"):
        bin_intensities(np.array([0, 100]), bins, Path("g.png"))


def test_archives_with_escaping_members_are_refused_before_anything_is_extracted(tmp_path):
    bad_zip = tmp_path / "bad.zip"
    with zipfile.ZipFile(bad_zip, "w") as handle:
        handle.writestr("data/ok.txt", "fine")
        handle.writestr("../evil.txt", "escape")
    with pytest.raises(ValueError, match=r"bad\.zip: refusing to extract.*\.\./evil\.txt"):
        extract_archive(bad_zip, tmp_path / "out")
    assert not (tmp_path / "out").exists() and not (tmp_path / "evil.txt").exists()

    bad_tar = tmp_path / "bad.tar"
    with tarfile.open(bad_tar, "w") as handle:
        link = tarfile.TarInfo("data/link")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        handle.addfile(link)
    with pytest.raises(ValueError, match=r"bad\.tar: refusing"):
        extract_archive(bad_tar, tmp_path / "out2")

    good_zip = tmp_path / "good.zip"
    with zipfile.ZipFile(good_zip, "w") as handle:
        handle.writestr("Top/case/a.txt", "x")
    with source_folder(good_zip) as folder:
        assert (folder / "case" / "a.txt").read_text(encoding="utf-8") == "x"
    assert not folder.exists()  # the temporary extraction is removed


def test_errors_inside_an_extracted_archive_name_the_archive_member(tmp_path, monkeypatch):
    archive = tmp_path / "amos22.zip"
    with zipfile.ZipFile(archive, "w") as handle:
        handle.writestr("amos22/labelsTr/amos_0001.nii.gz", "x")
    with pytest.raises(ConversionError) as caught:
        with source_folder(archive) as folder:
            raise_if_problems([f"{folder / 'labelsTr' / 'amos_0001.nii.gz'}: unknown label values [7]",
                               f"{folder}: no test cases"], archive)
    assert caught.value.problems == [f"{archive}:amos22/labelsTr/amos_0001.nii.gz: unknown label values [7]",
                                     f"{archive}:amos22: no test cases"]
    assert f"  - {archive}:amos22/labelsTr/amos_0001.nii.gz: unknown" in str(caught.value)
    assert "nnunet_mm_extract_" not in str(caught.value)

    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match=r"^amos22\.zip:amos22/labelsTr/amos_0001\.nii\.gz: resolves to "
                                         r"amos22\.zip:amos22/labelsTr/amos_0001\.nii\.gz, outside"):
        with source_folder(Path("amos22.zip")) as folder:
            check_inside(folder / "labelsTr" / "amos_0001.nii.gz", tmp_path / "elsewhere")

    plain = tmp_path / "plain"
    (plain / "labelsTr").mkdir(parents=True)
    with pytest.raises(ValueError, match=f"^{re.escape(str(plain / 'labelsTr'))}: not a case$"):
        with source_folder(plain) as folder:
            raise ValueError(f"{folder / 'labelsTr'}: not a case")


def test_source_files_skip_hidden_entries_and_sort_numbers_numerically(tmp_path):
    for name in ("Training Batch 10/volume-2.nii", "Training Batch 2/volume-10.nii", "Training Batch 2/volume-9.nii",
                 "Training Batch 2/.DS_Store", "__MACOSX/Training Batch 2/._volume-9.nii", ".git/config"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("x", encoding="utf-8")
    assert [p.relative_to(tmp_path).as_posix() for p in source_files(tmp_path)] == [
        "Training Batch 2/volume-9.nii", "Training Batch 2/volume-10.nii", "Training Batch 10/volume-2.nii"]


def test_symlinks_leaving_the_input_are_refused(tmp_path):
    (tmp_path / "input").mkdir()
    (tmp_path / "secret.nii.gz").write_bytes(b"x")
    (tmp_path / "input" / "case.nii.gz").symlink_to(tmp_path / "secret.nii.gz")
    with pytest.raises(ValueError, match=r"case\.nii\.gz: resolves to .* outside the input folder"):
        check_inside(tmp_path / "input" / "case.nii.gz", tmp_path / "input")


def test_prepare_output_guards_the_input_and_existing_datasets(tmp_path):
    source = tmp_path / "src"
    source.mkdir()
    with pytest.raises(ValueError, match="inside the source"):
        prepare_output(source, dataset_id=510, dataset_name="LiTS", output_root=source, overwrite=False)
    existing = tmp_path / "raw" / "Dataset510_LiTS"
    existing.mkdir(parents=True)
    (existing / "dataset.json").write_text("{}", encoding="utf-8")
    with pytest.raises(FileExistsError, match="--overwrite"):
        prepare_output(source, dataset_id=510, dataset_name="LiTS", output_root=tmp_path / "raw", overwrite=False)
    with pytest.raises(ValueError, match="same dataset id"):
        prepare_output(source, dataset_id=510, dataset_name="Other", output_root=tmp_path / "raw", overwrite=False)
    assert prepare_output(source, dataset_id=510, dataset_name="LiTS", output_root=tmp_path / "raw",
                          overwrite=True) == existing


def test_strays_are_fixed_in_unsigned_label_arrays_too():
    labels = np.array([0, 205, 421], dtype=np.uint16)
    fixed = remap_labels(labels, {0: 0, 205: 1, 420: 2}, Path("mr_train_1010_label.nii.gz"), fixes={421: 420})
    np.testing.assert_array_equal(fixed, [0, 1, 2])


def test_summaries_count_the_given_label_values_of_region_datasets_and_name_the_spacing_axes(tmp_path):
    records = [CaseRecord("a", True, (1.0, 1.0, 1.0), (10, 1, 2, 3)), CaseRecord("b", True, (1.0, 1.0, 2.0), (5, 1)),
               CaseRecord("c", False, (1.0, 1.0, 1.0))]
    regions = {"background": 0, "whole tumor": [1, 2, 3], "tumor core": [2, 3], "enhancing tumor": [3]}
    only_plain = summarize(records, output_dir=tmp_path, channel_names={"0": "T1"}, labels=regions)
    assert only_plain.label_voxel_counts == {"background": 15}
    summary = summarize(records, output_dir=tmp_path, channel_names={"0": "T1"}, labels=regions,
                        count_labels={"background": 0, "edema": 1, "NCR/NET": 2, "enhancing tumor": 3})
    assert summary.labels == regions
    assert summary.label_voxel_counts == {"background": 15, "edema": 2, "NCR/NET": 2, "enhancing tumor": 3}
    assert "labels (voxels in labelsTr): background (0): 15, edema (1): 2, NCR/NET (2): 2, enhancing tumor (3): 3" \
        in summary.format()
    assert "spacing (x, y, z) mm: min (1, 1, 1), max (1, 1, 2)" in summary.format()

    flat = summarize([CaseRecord("isic", True, (1.0, 1.0), (7, 3))], output_dir=tmp_path,
                     channel_names={"0": "R", "1": "G", "2": "B"}, labels={"background": 0, "lesion": 1})
    assert "labels (voxels in labelsTr): background (0): 7, lesion (1): 3" in flat.format()
    assert "spacing (x, y) mm: min (1, 1), max (1, 1)" in flat.format()
