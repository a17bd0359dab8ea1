"""One grammar for every ``nnunet_mm`` command (README, "Commands"): help everywhere, dashed long options except
nnU-Net's own spellings, one ``-device``, ``--target-id`` for new datasets, old spellings kept with a warning, and the
typical mistakes ending in one ``error:`` line before any model is loaded or any image is read."""
from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import pytest

from nnunet_mm.cli.common import DEFAULT_DEVICE, DEVICES, deprecated_spellings, torch_device
from nnunet_mm.cli.main import build_parser
from nnunet_mm.cli.main import main as nnunet_mm

#: nnU-Net's own spellings that commands mirror (nnUNetv2_predict, nnUNetv2_plan_experiment); each also has a dashed
#: twin on the same option
NNUNET_SPELLINGS = {"-step_size", "--disable_tta", "--save_probabilities", "--disable_progress_bar",
                    "-gpu_memory_target"}
DATASET_CREATING = {"label-fraction", "make-normal", "weak-export", "mas", "mas-distill"}
_BRACKETS = re.compile(r"\[[^\]]*\]")


def _commands() -> dict[str, argparse.ArgumentParser]:
    subparsers = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return dict(subparsers.choices)


def _options(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    return [a for a in parser._actions if not isinstance(a, argparse._HelpAction)]


def _spellings(parser: argparse.ArgumentParser) -> set[str]:
    return {s for action in parser._actions for s in action.option_strings}


def test_every_command_has_a_description_and_every_option_a_help():
    undocumented = []
    for name, parser in _commands().items():
        if not (parser.description or "").strip():
            undocumented.append(f"{name}: no description")
        for action in _options(parser):
            text = action.help if action.help is not argparse.SUPPRESS else ""
            if not _BRACKETS.sub("", text or "").strip():  # "[default: 2]" alone says nothing
                undocumented.append(f"{name} {'/'.join(action.option_strings) or action.dest}: no help")
    assert not undocumented, undocumented


def test_long_options_use_dashes_and_nnunet_spellings_have_a_dashed_twin():
    for name, parser in _commands().items():
        for action in _options(parser):
            for spelling in action.option_strings:
                if "_" not in spelling:
                    continue
                assert spelling in NNUNET_SPELLINGS, f"{name} {spelling}: underscore spelling of our own option"
                twin = "--" + spelling.lstrip("-").replace("_", "-")
                assert twin in action.option_strings, f"{name} {spelling}: no dashed twin {twin}"


def test_every_device_option_is_the_same_choice_with_nnunets_default():
    with_device = {}
    for name, parser in _commands().items():
        assert "--device" not in _spellings(parser), name
        for action in _options(parser):
            if "-device" in action.option_strings:
                with_device[name] = (tuple(action.choices), action.default)
    assert len(with_device) >= 10, with_device
    assert set(with_device.values()) == {(DEVICES, DEFAULT_DEVICE)}, with_device
    assert DEFAULT_DEVICE == "cuda"


def test_dataset_creating_commands_take_target_id_name_and_output_root():
    commands = _commands()
    creating = {name for name, parser in commands.items() if "--target-id" in _spellings(parser)}
    assert creating == DATASET_CREATING
    for name in creating:
        assert {"--target-name", "--output-root"} <= _spellings(commands[name]), name
    for name, parser in commands.items():
        assert not _spellings(parser) & {"--output-id", "--output-name", "--dataset-id", "--threads",
                                         "--num-processes", "-t", "--target"}, name


def test_old_spellings_are_hidden_from_help():
    commands = _commands()
    assert deprecated_spellings(commands["mas"]) == {"-t": "-d", "--target": "-d", "-o": "--target-id",
                                                     "--output-id": "--target-id", "--output-name": "--target-name",
                                                     "--threads": "-np"}
    help_text = commands["mas"].format_help()
    assert "--output-id" not in help_text and "--threads" not in help_text and "--target " not in help_text


@pytest.mark.parametrize("argv, expected", [
    (["mas", "-t", "712", "-a", "711", "-o", "713", "--output-name", "X", "--threads", "2"],
     {"d": "712", "target_id": 713, "target_name": "X", "np": 2}),
    (["mas", "--target", "712", "-a", "711", "--output-id", "713"], {"d": "712", "target_id": 713}),
    (["mas-train", "-t", "712", "-a", "711", "-o", "model"], {"d": "712", "output": "model"}),
    (["mas-distill", "-d", "713", "-o", "714", "--output-name", "Y"], {"target_id": 714, "target_name": "Y"}),
    (["cmg-maps", "-i", "in", "--case", "c", "-o", "x.png", "--model_folder", "m", "--class_index", "2"],
     {"model_folder": "m", "class_index": 2}),
    (["predict", "-i", "in", "-o", "out", "--model_folder", "m"], {"model_folder": "m"}),
    (["synth-stats", "-d", "5", "--fold", "1"], {"fold": "1"}),
])
def test_old_spellings_still_work_and_warn_once(argv, expected, capsys):
    args = build_parser().parse_args(argv)  # required options given only in their old spelling still count
    assert {key: getattr(args, key) for key in expected} == expected
    err = capsys.readouterr().err
    for old in (a for a in argv if a.startswith("-")):
        new = deprecated_spellings(_commands()[argv[0]]).get(old)
        if new is not None:
            assert err.count(f"nnunet_mm {argv[0]}: warning: '{old}' is deprecated, use '{new}'") == 1, err


def test_a_repeated_old_spelling_warns_once_and_the_last_value_wins(capsys):
    args = build_parser().parse_args(["mas", "-d", "712", "-a", "711", "--target-id", "713", "--threads", "2",
                                      "--threads", "3"])
    assert args.np == 3
    assert capsys.readouterr().err.count("'--threads' is deprecated, use '-np'") == 1


def test_new_spellings_print_no_warning(capsys):
    build_parser().parse_args(["mas", "-d", "712", "-a", "711", "--target-id", "713", "-np", "2"])
    assert capsys.readouterr().err == ""


def test_options_mirroring_nnunet_take_both_spellings():
    nnunet = build_parser().parse_args(["predict", "-i", "a", "-o", "b", "-d", "1", "-step_size", "0.25",
                                        "--disable_tta", "--save_probabilities", "--disable_progress_bar"])
    dashed = build_parser().parse_args(["predict", "-i", "a", "-o", "b", "-d", "1", "--step-size", "0.25",
                                        "--disable-tta", "--save-probabilities", "--disable-progress-bar"])
    assert vars(nnunet) == vars(dashed)
    assert nnunet.step_size == 0.25 and nnunet.disable_tta and nnunet.save_probabilities
    plan = build_parser().parse_args(["plan", "-d", "1", "--gpu-memory-target", "24"])
    assert plan.gpu_memory_target == 24


# -- typical mistakes: one error line, exit status != 0, nothing loaded


@pytest.fixture
def nnunet_folders(tmp_path, monkeypatch) -> dict[str, Path]:
    folders = {name: tmp_path / name for name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")}
    for name, folder in folders.items():
        folder.mkdir()
        monkeypatch.setenv(name, str(folder))
    return folders


def _error_line(capsys, command: str) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith(f"nnunet_mm {command}: error: ")]
    assert len(lines) == 1, err
    return lines[0]


def test_unknown_device_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        nnunet_mm(["predict", "-i", "in", "-o", "out", "-d", "1", "-device", "tpu"])
    assert exit_info.value.code == 2
    assert "argument -device: invalid choice: 'tpu'" in capsys.readouterr().err


def test_cuda_requested_without_a_gpu_says_what_to_pass(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="-device cuda: torch .* sees no CUDA GPU; pass -device cpu"):
        torch_device("cuda")
    assert torch_device("cpu") == torch.device("cpu")


def test_default_cuda_device_without_a_gpu_stops_before_reading_images(nnunet_folders, monkeypatch, capsys):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    dataset = nnunet_folders["nnUNet_raw"] / "Dataset930_Weak"
    (dataset / "imagesTr").mkdir(parents=True)
    (dataset / "dataset.json").write_text(json.dumps({"channel_names": {"0": "CT"}, "labels": {"background": 0},
                                                      "file_ending": ".nii.gz", "numTraining": 0}), encoding="utf-8")
    assert nnunet_mm(["weak-train-gan", "-d", "930", "-o", str(nnunet_folders["nnUNet_results"] / "gan")]) == 1
    assert "-device cuda" in _error_line(capsys, "weak-train-gan")
    assert not (nnunet_folders["nnUNet_results"] / "gan").exists()


@pytest.mark.parametrize("argv", [
    ["synth-stats", "-d", "999"],
    ["phase-labels", "-d", "999"],
    ["mas-distill", "-d", "999", "--target-id", "5"],
    ["weak-export", "-d", "999", "-m", "model", "--target-id", "5"],
    ["predict", "-i", ".", "-o", "out", "-d", "999", "-device", "cpu"],
])
def test_a_dataset_id_nnunet_does_not_find_is_one_error_line(argv, nnunet_folders, capsys):
    assert nnunet_mm(argv) == 1
    line = _error_line(capsys, argv[0])
    assert "-d 999: no dataset has this id in nnU-Net's folders" in line


def test_mas_names_the_option_whose_dataset_is_missing(nnunet_folders, capsys):
    from nnunet_mm.atlas.phantom_pairs import write_cross_modality_datasets

    write_cross_modality_datasets(nnunet_folders["nnUNet_raw"], atlas_id=711, target_id=712, num_atlases=2,
                                  num_target_training=2, shape_zyx=(8, 16, 16), spacing_zyx_mm=(4.0, 3.0, 3.0))
    assert nnunet_mm(["mas", "-d", "712", "-a", "799", "--target-id", "713"]) == 1
    assert "-a 799: no dataset has this id" in _error_line(capsys, "mas")
    assert nnunet_mm(["mas", "-d", str(nnunet_folders["nnUNet_raw"] / "nowhere"), "-a", "711",
                      "--target-id", "713"]) == 1
    assert "nowhere/dataset.json not found" in _error_line(capsys, "mas")
    assert nnunet_mm(["mas", "-d", "712", "-a", "711", "--target-id", "713", "-k", "3"]) == 1
    assert "pass -k 2 or fewer" in _error_line(capsys, "mas")
    assert nnunet_mm(["mas", "-d", "712", "-a", "711", "--target-id", "713", "--registration", "learned",
                      "-m", "no_such_model"]) == 1
    assert "-m no_such_model: model folder not found" in _error_line(capsys, "mas")
    assert sorted(p.name for p in nnunet_folders["nnUNet_raw"].iterdir()) == ["Dataset711_PhantomCTAtlas",
                                                                             "Dataset712_PhantomMRTarget"]


def test_missing_input_folder_of_predict_is_one_error_line(nnunet_folders, capsys):
    assert nnunet_mm(["predict", "-i", str(nnunet_folders["nnUNet_raw"] / "nowhere"), "-o", "out",
                      "-m", "model", "-device", "cpu"]) == 1
    assert "input folder not found" in _error_line(capsys, "predict")


def _fake_model(results: Path, trainer: str) -> Path:
    """A model folder with dataset.json and an empty fold_0 checkpoint: loading it would fail loudly, so a test
    that ends in a clear error shows the command stopped before loading."""
    folder = results / "Dataset590_TwoPhase" / f"{trainer}__nnUNetPlans__2d"
    (folder / "fold_0").mkdir(parents=True)
    (folder / "fold_0" / "checkpoint_final.pth").write_bytes(b"")
    (folder / "dataset.json").write_text(json.dumps({
        "channel_names": {"0": "CT", "1": "CT"}, "labels": {"background": 0, "liver": 1, "tumor": 2},
        "file_ending": ".nii.gz", "numTraining": 1}), encoding="utf-8")
    return folder


def _case(folder: Path, case: str, channels: range) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for channel in channels:
        (folder / f"{case}_{channel:04d}.nii.gz").write_bytes(b"")
    return folder


def test_cmg_maps_refuses_a_model_of_another_trainer_before_loading_it(nnunet_folders, capsys):
    model = _fake_model(nnunet_folders["nnUNet_results"], "nnUNetTrainer")
    images = _case(nnunet_folders["nnUNet_raw"] / "images", "liver_000", range(2))
    png = nnunet_folders["nnUNet_raw"] / "maps.png"
    assert nnunet_mm(["cmg-maps", "-i", str(images), "--case", "liver_000", "-o", str(png), "-m", str(model),
                      "-device", "cpu"]) == 1
    assert "a nnUNetTrainer model, not a CMGTrainer one" in _error_line(capsys, "cmg-maps")
    assert not png.exists()


@pytest.mark.parametrize("extra, channels, expected", [
    (["--case", "liver_001"], range(2), "no files liver_001_XXXX.nii.gz of case 'liver_001'"),
    (["--case", "liver_000"], range(1), "case liver_000 lacks channel(s) [1]"),
    (["--case", "liver_000", "--class-index", "7"], range(2), "--class-index 7: not a foreground label"),
    (["--case", "liver_000", "-f", "1"], range(2), "no such checkpoint (-f 1, -chk checkpoint_final.pth)"),
    (["--case", "liver_000", "-f", "one"], range(2), "-f expects fold numbers or 'all'"),
])
def test_cmg_maps_checks_its_inputs_before_loading_the_model(extra, channels, expected, nnunet_folders, capsys):
    model = _fake_model(nnunet_folders["nnUNet_results"], "CMGTrainer")
    images = _case(nnunet_folders["nnUNet_raw"] / "images", "liver_000", channels)
    assert nnunet_mm(["cmg-maps", "-i", str(images), "-o", "maps.png", "-m", str(model), "-device", "cpu",
                      *extra]) == 1
    assert expected in _error_line(capsys, "cmg-maps")
