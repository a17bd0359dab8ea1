"""nnunet_mm.io.images: reading (NIfTI, NRRD, MetaImage, DICOM folders), finding and writing images."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from nnunet_mm.io import find_image, read_image, write_dicom_series, write_image


def _volume(dtype=np.int16, size_zyx=(6, 8, 10)) -> sitk.Image:
    values = np.arange(np.prod(size_zyx)).reshape(size_zyx).astype(dtype) - 100
    image = sitk.GetImageFromArray(values)
    image.SetSpacing((0.8, 0.9, 2.5))
    image.SetOrigin((-10.0, 5.0, 30.0))
    image.SetDirection((0, 1, 0, 1, 0, 0, 0, 0, 1))
    return image


def _assert_same_image(a: sitk.Image, b: sitk.Image) -> None:
    assert a.GetSize() == b.GetSize()
    np.testing.assert_allclose(a.GetSpacing(), b.GetSpacing(), atol=1e-4)
    np.testing.assert_allclose(a.GetOrigin(), b.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(a.GetDirection(), b.GetDirection(), atol=1e-6)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(a), sitk.GetArrayFromImage(b))


@pytest.mark.parametrize("ending", [".nii.gz", ".nii", ".nrrd", ".mha", ".mhd"])
def test_read_image_round_trips_every_file_format(tmp_path: Path, ending: str) -> None:
    image = _volume()
    path = tmp_path / f"pv{ending}"
    sitk.WriteImage(image, str(path))
    _assert_same_image(read_image(path), image)


def test_read_image_reads_a_dicom_folder_in_slice_position_order(tmp_path: Path) -> None:
    image = _volume(size_zyx=(5, 8, 10))
    image.SetDirection((1, 0, 0, 0, 1, 0, 0, 0, 1))
    files = write_dicom_series(image, tmp_path / "pv")
    # file names in reverse slice order: the reader must sort by position, not by name
    for k, file in enumerate(files):
        file.rename(file.with_name(f"tmp_{len(files) - 1 - k:04d}.dcm"))
    _assert_same_image(read_image(tmp_path / "pv"), image)


def test_read_image_refuses_a_folder_with_two_dicom_series(tmp_path: Path) -> None:
    image = _volume(size_zyx=(3, 8, 10))
    image.SetDirection((1, 0, 0, 0, 1, 0, 0, 0, 1))
    write_dicom_series(image, tmp_path / "a", series_instance_uid="1.2.3.4.1")
    write_dicom_series(image, tmp_path / "b", series_instance_uid="1.2.3.4.2")
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    for sub in ("a", "b"):
        for file in (tmp_path / sub).iterdir():
            file.rename(mixed / f"{sub}_{file.name}")
    with pytest.raises(ValueError, match=r"mixed: holds 2 DICOM series .*1\.2\.3\.4\.1.*1\.2\.3\.4\.2"):
        read_image(mixed)


def test_read_image_refuses_a_folder_without_dicom_files(tmp_path: Path) -> None:
    (tmp_path / "pv").mkdir()
    with pytest.raises(ValueError, match="pv: cannot read image: the folder holds no DICOM series"):
        read_image(tmp_path / "pv")


def test_read_image_names_a_corrupt_file(tmp_path: Path) -> None:
    path = tmp_path / "art.nii.gz"
    path.write_bytes(b"this is not a NIfTI file")
    with pytest.raises(ValueError, match=r"art\.nii\.gz: cannot read image"):
        read_image(path)


@pytest.mark.parametrize("ending, cut", [(".nii.gz", 0.5), (".nii", 0.5), (".nii.gz", 40), (".nii", 40)])
def test_read_image_refuses_a_truncated_nifti_that_simpleitk_would_fill_with_zeros(tmp_path: Path, ending: str,
                                                                                  cut) -> None:
    """SimpleITK reads a cut .nii/.nii.gz without an error (missing voxels become 0): the reader must refuse it,
    naming the file; the complete file still reads."""
    path = tmp_path / f"image{ending}"
    sitk.WriteImage(_volume(np.float32, (12, 40, 40)), str(path), useCompression=ending == ".nii.gz")
    _assert_same_image(read_image(path), _volume(np.float32, (12, 40, 40)))
    data = path.read_bytes()
    path.write_bytes(data[:int(len(data) * cut)] if isinstance(cut, float) else data[:-cut])
    sitk.ReadImage(str(path))  # the failure mode: no error from SimpleITK itself
    with pytest.raises(ValueError, match=re.escape(str(path)) + ": incomplete"):
        read_image(path)


@pytest.mark.parametrize("ending", [".nii.gz", ".nii", ".mha"])
def test_read_image_counts_nan_and_inf_voxels(tmp_path: Path, ending: str) -> None:
    # ITK's NIfTI reader turns NaN/inf into 0, so NIfTI files need a check of their own
    image = _volume(dtype=np.float32)
    image[1, 2, 3] = float("nan")
    image[2, 2, 3] = float("inf")
    path = tmp_path / f"nc{ending}"
    sitk.WriteImage(image, str(path))
    with pytest.raises(ValueError, match=rf"nc{re.escape(ending)}: contains 2 NaN/inf voxels"):
        read_image(path)
    assert read_image(path, check_finite=False).GetSize() == image.GetSize()


def test_read_image_refuses_2d_and_4d_images(tmp_path: Path) -> None:
    flat = tmp_path / "flat.nii.gz"
    sitk.WriteImage(sitk.Image(8, 8, sitk.sitkInt16), str(flat))
    with pytest.raises(ValueError, match=r"flat\.nii\.gz: expected a 3D image, got 2D"):
        read_image(flat)
    series = tmp_path / "series.nii.gz"
    sitk.WriteImage(sitk.Image([4, 4, 4, 2], sitk.sitkInt16), str(series))
    with pytest.raises(ValueError, match=r"series\.nii\.gz: expected a 3D image, got 4D"):
        read_image(series)


def test_read_image_names_missing_files_and_unsupported_endings(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="absent.nii.gz"):
        read_image(tmp_path / "absent.nii.gz")
    text = tmp_path / "notes.txt"
    text.write_text("x", encoding="utf-8")
    with pytest.raises(ValueError, match=r"notes\.txt: cannot read image: unsupported file ending"):
        read_image(text)


def test_find_image_matches_any_supported_ending_ignoring_case(tmp_path: Path) -> None:
    (tmp_path / "PV.NII.GZ").write_bytes(b"")
    (tmp_path / "Art.nrrd").write_bytes(b"")
    (tmp_path / "del").mkdir()
    (tmp_path / "pvx.nii.gz").write_bytes(b"")
    (tmp_path / "nc.txt").write_bytes(b"")
    assert find_image(tmp_path, "pv") == tmp_path / "PV.NII.GZ"
    assert find_image(tmp_path, "ART") == tmp_path / "Art.nrrd"
    assert find_image(tmp_path, "del") == tmp_path / "del"
    assert find_image(tmp_path, "nc") is None


def test_find_image_reports_ambiguous_matches(tmp_path: Path) -> None:
    (tmp_path / "pv.nii.gz").write_bytes(b"")
    (tmp_path / "PV.mha").write_bytes(b"")
    with pytest.raises(ValueError, match=r"several images match 'pv'.*PV\.mha.*pv\.nii\.gz"):
        find_image(tmp_path, "pv")


def test_write_image_writes_compressed_nifti_and_creates_the_folder(tmp_path: Path) -> None:
    image = _volume()
    path = write_image(image, tmp_path / "out" / "case_0000.nii.gz")
    with open(path, "rb") as handle:
        assert handle.read(2) == b"\x1f\x8b"  # gzip magic
    _assert_same_image(read_image(path), image)
    assert write_image(image, tmp_path / "case.nii").stat().st_size >= 352 + image.GetNumberOfPixels() * 2  # int16


@pytest.mark.parametrize("name", ["case.nii.gz", "case.nii", "case.nrrd"])
def test_write_image_refuses_a_write_cut_short_as_on_a_full_disk(tmp_path: Path, monkeypatch, name) -> None:
    """SimpleITK returns without an error when the disk fills up during a write and leaves a cut file; write_image
    checks the written file, removes it and names it (issue 17)."""
    image = _volume()
    real_write = sitk.WriteImage

    def full_disk(image, path, *args, **kwargs):
        real_write(image, path, *args, **kwargs)
        size = Path(path).stat().st_size
        with open(path, "r+b") as handle:
            handle.truncate(size * 2 // 3)

    monkeypatch.setattr(sitk, "WriteImage", full_disk)
    target = tmp_path / name
    with pytest.raises(OSError, match=r"case\.n.*(incomplete|cannot be read back|holds).*disk full"):
        write_image(image, target)
    assert not target.exists()


@pytest.mark.parametrize("name", ["case.mha", "case.nrrd"])
@pytest.mark.parametrize("compress", [False, True])
def test_cut_metaimage_and_nrrd_files_are_refused_naming_them(tmp_path: Path, name, compress) -> None:
    from nnunet_mm.io import verify_image_file

    path = tmp_path / name
    sitk.WriteImage(_volume(np.float32), str(path), useCompression=compress)
    path.write_bytes(path.read_bytes()[:-60])
    for check in (read_image, verify_image_file):
        with pytest.raises(ValueError, match=rf"{name}: cannot read image: .*(incomplete|expected|fread)"):
            check(path)
