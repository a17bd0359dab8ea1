"""nnunet_mm.io.staging: output folders appear complete or not at all, never over an input, and an existing
output is replaced only with --overwrite."""
from __future__ import annotations

from pathlib import Path

import pytest

from nnunet_mm.io import check_output, new_dataset_folder, staged_dataset


def _leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name.startswith("."))


def test_success_renames_the_staging_folder_into_place(tmp_path: Path) -> None:
    final = tmp_path / "raw" / "Dataset511_X"
    with staged_dataset(final) as staging:
        assert staging.parent == final.parent and staging.name.startswith(".Dataset511_X.staging-")
        assert not final.exists()
        (staging / "dataset.json").write_text("{}", encoding="utf-8")
    assert (final / "dataset.json").read_text(encoding="utf-8") == "{}"
    assert _leftovers(final.parent) == []


def test_an_exception_removes_the_staging_folder_and_leaves_the_old_dataset_untouched(tmp_path: Path) -> None:
    final = tmp_path / "Dataset511_X"
    final.mkdir()
    (final / "old.txt").write_text("old", encoding="utf-8")
    with pytest.raises(RuntimeError, match="boom"):
        with staged_dataset(final, overwrite=True) as staging:
            (staging / "new.txt").write_text("new", encoding="utf-8")
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
    (final / "old.txt").write_text("old", encoding="utf-8")
    with pytest.raises(FileExistsError, match=r"Dataset511_X already exists and is not empty.*overwrite"):
        with staged_dataset(final):
            pytest.fail("the body must not run")
    assert (final / "old.txt").read_text(encoding="utf-8") == "old"
    assert _leftovers(tmp_path) == []


def test_overwrite_swaps_in_the_new_dataset_and_deletes_the_old_one(tmp_path: Path) -> None:
    final = tmp_path / "Dataset511_X"
    final.mkdir()
    (final / "old.txt").write_text("old", encoding="utf-8")
    with staged_dataset(final, overwrite=True) as staging:
        (staging / "new.txt").write_text("new", encoding="utf-8")
    assert sorted(p.name for p in final.iterdir()) == ["new.txt"]
    assert _leftovers(tmp_path) == []


def test_an_empty_existing_folder_is_replaced_without_overwrite(tmp_path: Path) -> None:
    final = tmp_path / "Dataset511_X"
    final.mkdir()
    with staged_dataset(final) as staging:
        (staging / "new.txt").write_text("new", encoding="utf-8")
    assert (final / "new.txt").exists()


def test_a_file_in_the_way_is_refused(tmp_path: Path) -> None:
    final = tmp_path / "Dataset511_X"
    final.write_text("not a folder", encoding="utf-8")
    with pytest.raises(FileExistsError, match="is not a folder"):
        with staged_dataset(final, overwrite=True):
            pass
    assert final.read_text(encoding="utf-8") == "not a folder"


def test_an_output_overlapping_a_source_is_refused_even_with_overwrite(tmp_path: Path) -> None:
    source = tmp_path / "Dataset510_LiTS"
    source.mkdir()
    (source / "dataset.json").write_text("{}", encoding="utf-8")
    for output, message in ((source, "contains the source"), (tmp_path, "contains the source"),
                            (source / "Dataset511_X", "lies inside the source folder")):
        with pytest.raises(ValueError, match=message):
            with staged_dataset(output, overwrite=True, sources=[source]):
                pytest.fail("the body must not run")
    assert sorted(p.name for p in source.iterdir()) == ["dataset.json"]
    assert _leftovers(tmp_path) == []


def test_check_output_refuses_an_existing_file_with_the_same_message(tmp_path: Path) -> None:
    target = tmp_path / "statistics.json"
    assert check_output(target, overwrite=False) == target
    target.write_text("{}", encoding="utf-8")
    with pytest.raises(FileExistsError, match=r"statistics\.json already exists; pass --overwrite to replace it"):
        check_output(target, overwrite=False)
    assert check_output(target, overwrite=True) == target


def test_new_dataset_folder_checks_id_name_and_id_clashes(tmp_path: Path) -> None:
    assert new_dataset_folder(7, "Liver", output_root=tmp_path) == tmp_path / "Dataset007_Liver"
    (tmp_path / "Dataset007_Liver").mkdir()
    assert new_dataset_folder(7, "Liver", output_root=tmp_path) == tmp_path / "Dataset007_Liver"
    with pytest.raises(ValueError, match=r"already holds \['Dataset007_Liver'\] with the same dataset id"):
        new_dataset_folder(7, "Other", output_root=tmp_path)
    with pytest.raises(ValueError, match="1..999"):
        new_dataset_folder(1000, "Liver", output_root=tmp_path)
    with pytest.raises(ValueError, match="only letters, digits"):
        new_dataset_folder(8, "Liver CT", output_root=tmp_path)


def test_new_dataset_folder_names_the_variable_when_nnunet_raw_is_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    import nnunetv2.paths

    monkeypatch.setattr(nnunetv2.paths, "nnUNet_raw", None)
    with pytest.raises(ValueError, match="nnUNet_raw is not set"):
        new_dataset_folder(7, "Liver")


# ---------------------------------------------------------------------------------------------------------------
# one writer per target, and what a killed writer leaves behind (issue 17)

def test_a_second_writer_of_the_same_target_is_refused_while_the_first_runs(tmp_path: Path) -> None:
    final = tmp_path / "Dataset511_X"
    with staged_dataset(final) as first:
        (first / "first.txt").write_text("first", encoding="utf-8")
        with pytest.raises(FileExistsError, match="being written by another process"):
            with staged_dataset(final, overwrite=True):
                pytest.fail("the second writer must not run")
    assert sorted(p.name for p in final.iterdir()) == ["first.txt"]
    assert _leftovers(tmp_path) == []


def test_a_target_created_meanwhile_is_not_replaced_without_overwrite(tmp_path: Path) -> None:
    final = tmp_path / "Dataset511_X"
    with pytest.raises(FileExistsError, match="already exists"):
        with staged_dataset(final) as staging:
            (staging / "mine.txt").write_text("mine", encoding="utf-8")
            final.mkdir()  # another writer (not going through the lock) finished first
            (final / "theirs.txt").write_text("theirs", encoding="utf-8")
    assert sorted(p.name for p in final.iterdir()) == ["theirs.txt"]
    assert _leftovers(tmp_path) == []


def test_an_overwrite_killed_between_the_renames_is_undone_at_the_next_run(tmp_path: Path, caplog) -> None:
    final = tmp_path / "Dataset511_X"
    old = tmp_path / ".Dataset511_X.old-1234abcd"  # what a kill after moving the old dataset aside leaves
    old.mkdir()
    (old / "old.txt").write_text("old", encoding="utf-8")
    stale = tmp_path / ".Dataset511_X.staging-5678abcd"
    stale.mkdir()
    (stale / "half.txt").write_text("half", encoding="utf-8")
    with pytest.raises(FileExistsError, match="already exists"):  # the restored dataset is protected again
        with staged_dataset(final):
            pass
    assert (final / "old.txt").read_text(encoding="utf-8") == "old"
    assert _leftovers(tmp_path) == []
    assert "restored" in caplog.text and ".Dataset511_X.old-1234abcd" in caplog.text


def test_old_folders_beside_a_complete_dataset_are_removed(tmp_path: Path) -> None:
    final = tmp_path / "Dataset511_X"
    final.mkdir()
    (final / "new.txt").write_text("new", encoding="utf-8")
    (tmp_path / ".Dataset511_X.old-1234abcd").mkdir()
    with staged_dataset(final, overwrite=True) as staging:
        (staging / "newer.txt").write_text("newer", encoding="utf-8")
    assert sorted(p.name for p in final.iterdir()) == ["newer.txt"]
    assert _leftovers(tmp_path) == []


def test_a_killed_writer_releases_its_lock(tmp_path: Path) -> None:
    import subprocess
    import sys
    import time

    final = tmp_path / "Dataset511_X"
    script = ("import sys, time\nfrom pathlib import Path\nfrom nnunet_mm.io import staged_dataset\n"
              "with staged_dataset(Path(sys.argv[1])) as s:\n    (s / 'a').write_text('a')\n    print('in', flush=True)\n"
              "    time.sleep(60)\n")
    writer = subprocess.Popen([sys.executable, "-c", script, str(final)], stdout=subprocess.PIPE, text=True)
    assert writer.stdout.readline().strip() == "in"
    with pytest.raises(FileExistsError, match="being written"):
        with staged_dataset(final):
            pass
    writer.kill()
    writer.wait()
    time.sleep(0.1)
    with staged_dataset(final) as staging:  # the lock died with the writer; its staging folder is cleaned up
        (staging / "b").write_text("b", encoding="utf-8")
    assert sorted(p.name for p in final.iterdir()) == ["b"]
    assert _leftovers(tmp_path) == []


def test_writers_of_the_same_dataset_id_under_different_names_exclude_each_other(tmp_path: Path) -> None:
    with staged_dataset(tmp_path / "Dataset511_A") as first:
        (first / "a").write_text("a", encoding="utf-8")
        with pytest.raises(FileExistsError, match="being written by another process"):
            with staged_dataset(tmp_path / "Dataset511_B"):
                pytest.fail("the second writer must not run")
    with pytest.raises(FileExistsError, match=r"same dataset id"):
        with staged_dataset(tmp_path / "Dataset512_C") as staging:
            (staging / "c").write_text("c", encoding="utf-8")
            (tmp_path / "Dataset512_D").mkdir()  # created meanwhile without the lock
    assert sorted(p.name for p in tmp_path.iterdir()) == ["Dataset511_A", "Dataset512_D"]
