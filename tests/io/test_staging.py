"""nnunet_mm.io.staging: output folders appear complete or not at all."""
from __future__ import annotations

from pathlib import Path

import pytest

from nnunet_mm.io import staged_dataset


def _leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name.startswith("."))


def test_success_renames_the_staging_folder_into_place(tmp_path: Path) -> None:
    final = tmp_path / "raw" / "Dataset511_X"
    with staged_dataset(final) as staging:
        assert staging.parent == final.parent and staging.name.startswith(".Dataset511_X.staging-")
        assert not final.exists()
        (staging / "dataset.json").write_text("{}")
    assert (final / "dataset.json").read_text() == "{}"
    assert _leftovers(final.parent) == []


def test_an_exception_removes_the_staging_folder_and_leaves_the_old_dataset_untouched(tmp_path: Path) -> None:
    final = tmp_path / "Dataset511_X"
    final.mkdir()
    (final / "old.txt").write_text("old")
    with pytest.raises(RuntimeError, match="boom"):
        with staged_dataset(final, overwrite=True) as staging:
            (staging / "new.txt").write_text("new")
            raise RuntimeError("boom")
    assert sorted(p.name for p in final.iterdir()) == ["old.txt"]
    assert _leftovers(tmp_path) == []


def test_keyboard_interrupt_also_cleans_up(tmp_path: Path) -> None:
    final = tmp_path / "Dataset511_X"
    with pytest.raises(KeyboardInterrupt):
        with staged_dataset(final):
            raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []


def test_an_existing_dataset_is_refused_without_overwrite(tmp_path: Path) -> None:
    final = tmp_path / "Dataset511_X"
    final.mkdir()
    (final / "old.txt").write_text("old")
    with pytest.raises(FileExistsError, match=r"Dataset511_X already exists and is not empty.*overwrite"):
        with staged_dataset(final):
            pytest.fail("the body must not run")
    assert (final / "old.txt").read_text() == "old"
    assert _leftovers(tmp_path) == []


def test_overwrite_swaps_in_the_new_dataset_and_deletes_the_old_one(tmp_path: Path) -> None:
    final = tmp_path / "Dataset511_X"
    final.mkdir()
    (final / "old.txt").write_text("old")
    with staged_dataset(final, overwrite=True) as staging:
        (staging / "new.txt").write_text("new")
    assert sorted(p.name for p in final.iterdir()) == ["new.txt"]
    assert _leftovers(tmp_path) == []


def test_an_empty_existing_folder_is_replaced_without_overwrite(tmp_path: Path) -> None:
    final = tmp_path / "Dataset511_X"
    final.mkdir()
    with staged_dataset(final) as staging:
        (staging / "new.txt").write_text("new")
    assert (final / "new.txt").exists()


def test_a_file_in_the_way_is_refused(tmp_path: Path) -> None:
    final = tmp_path / "Dataset511_X"
    final.write_text("not a folder")
    with pytest.raises(FileExistsError, match="is not a folder"):
        with staged_dataset(final, overwrite=True):
            pass
    assert final.read_text() == "not a folder"
