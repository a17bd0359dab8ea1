"""nnU-Net's own trainer lookup finds the plugin's trainers with only the three path variables set."""
import os
import re
import subprocess
import sys

import _nnunet_mm_ext


def _clean_env(**extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "nnUNet_extTrainer" and k != "NNUNET_MM_NO_EXT_HOOK"}
    env.update(extra)
    return env


def _python(code: str, env: dict) -> str:
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, encoding="utf-8", errors="replace", timeout=300)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip().splitlines()[-1] if result.stdout.strip() else ""


def test_start_up_hook_sets_ext_trainer_variable():
    value = _python("import os; print(os.environ.get('nnUNet_extTrainer'))", _clean_env())
    assert value == _nnunet_mm_ext.trainer_shim_folder()


def test_start_up_hook_keeps_the_users_value_first(tmp_path):
    user_folder = str(tmp_path / "my_trainers")
    value = _python("import os; print(os.environ['nnUNet_extTrainer'])", _clean_env(nnUNet_extTrainer=user_folder))
    assert value.split(os.pathsep) == [user_folder, _nnunet_mm_ext.trainer_shim_folder()]


def test_start_up_hook_does_not_duplicate_the_folder():
    folder = _nnunet_mm_ext.trainer_shim_folder()
    value = _python("import os; print(os.environ['nnUNet_extTrainer'])", _clean_env(nnUNet_extTrainer=folder))
    assert value == folder


def test_hook_can_be_switched_off():
    value = _python("import os; print(os.environ.get('nnUNet_extTrainer'))", _clean_env(NNUNET_MM_NO_EXT_HOOK="1"))
    assert value == "None"


PLUGIN_TRAINERS = {"MultiModalTrainer": "training.multimodal_trainer",
                   "MultiModalTrainer_debug": "training.multimodal_trainer",
                   "CMGTrainer": "cmg.trainer", "CMGTrainer_debug": "cmg.trainer",
                   "CMCTrainer": "cmc.trainer", "CMCTrainer_debug": "cmc.trainer",
                   "SynthTumorTrainer": "synthesis.trainer", "SynthTumorTrainer_debug": "synthesis.trainer",
                   "WeakLabelTrainer": "weak.trainer", "WeakLabelTrainer_debug": "weak.trainer",
                   "MASPriorTrainer": "atlas.trainer", "MASPriorTrainer_debug": "atlas.trainer"}


def test_nnunet_lookup_finds_every_plugin_trainer():
    """One interpreter (nnU-Net's import takes seconds) looks every name up with nnU-Net's own function."""
    code = ("from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name as find; "
            f"print(';'.join(c.__module__ + '.' + c.__name__ for c in map(find, {list(PLUGIN_TRAINERS)!r})))")
    found = _python(code, _clean_env()).split(";")
    assert found == [f"nnunet_mm.{module}.{name}" for name, module in PLUGIN_TRAINERS.items()]


def test_users_own_external_trainer_still_found(tmp_path):
    user_folder = tmp_path / "user_trainers"
    user_folder.mkdir()
    (user_folder / "my_lab_trainers.py").write_text(
        "from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer\n"
        "class MyLabTrainer(nnUNetTrainer):\n    pass\n", encoding="utf-8")
    code = ("from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name as find; "
            "print(find('MyLabTrainer').__name__, find('MultiModalTrainer').__name__)")
    assert _python(code, _clean_env(nnUNet_extTrainer=str(user_folder))) == "MyLabTrainer MultiModalTrainer"


def test_plugin_trainer_names_do_not_clash_with_nnunet():
    from pathlib import Path

    import nnunetv2
    trainer_root = Path(nnunetv2.__file__).parent / "training" / "nnUNetTrainer"
    builtin_source = "\n".join(p.read_text(errors="ignore", encoding="utf-8") for p in trainer_root.rglob("*.py"))
    for name in PLUGIN_TRAINERS:
        assert f"class {name}(" not in builtin_source


def test_env_command_reports_active_hook():
    result = subprocess.run([sys.executable, "-m", "nnunet_mm.cli.main", "env"], env=_clean_env(),
                            capture_output=True, encoding="utf-8", errors="replace", timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"^hook active +: yes$", result.stdout, re.MULTILINE), result.stdout
