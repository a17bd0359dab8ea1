"""Fault injection (issue 17, "Measure"): replay hostile and unlucky-user cases against the plugin's commands, run
as subprocesses exactly as a user types them, and count what happened.

Every case builds a tiny input (phantoms of 8x32x32 voxels), damages it (a file cut at some offset, a NaN voxel, a
crafted pickle, a symbolic link leading out of the input, a kill at a random moment, a full or read-only disk, bad
settings), runs the command(s), and is classified from what actually happened -- nothing is hard-coded:

* **refused cleanly** -- the damage must be refused, and it was: exit status != 0; a line containing ``error:``
  followed (on that line or after it) by the name of the offending file; no Python traceback; every input file
  byte-for-byte unchanged (hashed before and after); no new output left behind (no dataset folder, no prediction,
  no checkpoint, no hidden staging folder).
* **handled** -- the right answer is to succeed (an archive or an in-input symbolic link as source, a fallback to the
  newest readable checkpoint that says so, ``--replace-non-finite`` that records what it replaced, a killed
  conversion / ``--overwrite`` / training repaired by the next run), and it did: exit 0, the data check passed
  (e.g. the converted dataset equals the one converted from the undamaged source), the expected messages are there.
* **data lost** -- an input was modified, or a command said "success" (exit 0) but its output is wrong (converted
  voxels differ from the undamaged source's conversion, the prediction or the ``compare`` report differs from the
  undamaged input's), or an existing dataset is gone or was replaced without ``--overwrite``, or a readable
  checkpoint was lost.
* **code run** -- the payload of a crafted pickle ran (it creates a marker file; the case checks that file).
* **traceback** -- ``Traceback (most recent call last)`` in the output (and none of the above).
* **not clean** -- everything else that is not the expected behaviour: exit 0 where a refusal was due (with
  output that happens to be right), a failure without an ``error:`` line naming the file, a refusal that left
  output behind, a missing flag, a timeout.

Cases whose preconditions are missing are listed as **skipped** with the reason and are not counted in "tried": the
full-disk cases need root and ``mount -t tmpfs`` (a 48-64 kB tmpfs); the permission cases need permissions to apply
(not root, or root with ``setpriv`` dropping CAP_DAC_OVERRIDE / CAP_DAC_READ_SEARCH, checked first). Cases whose
set-up failed (a phantom model could not be trained, a bug of this script) are listed as **set-up failed**, also
not counted, with the reason.

Run it with the project's virtual environment (the commands are taken from the directory of ``sys.executable``)::

    .venv/bin/python bench/fault_injection.py --quick --output /tmp/fi        # representative subset, ~2 min
    .venv/bin/python bench/fault_injection.py --output /tmp/fi                # everything, 6-8 min on 2 CPU cores
    .venv/bin/python bench/fault_injection.py --list                          # the cases
    .venv/bin/python bench/fault_injection.py --only predict --output /tmp/fi # cases whose name matches a regex

It prints one line per case as it finishes, then the figure ``tried / refused cleanly / data lost / code run /
tracebacks`` (and the handled / not clean / skipped counts), a table of the cases, the commands and key output
lines of every case that was neither refused cleanly nor handled, and writes ``fault_injection.json`` (every case with
its commands, exit statuses, key output lines) and ``fault_injection.png`` (bar chart) into ``--output``.
Everything runs in a temporary folder (removed at the end unless ``--keep``) with its own ``nnUNet_raw``,
``nnUNet_preprocessed`` and ``nnUNet_results`` per case, ``nnUNet_n_proc_DA=1``, ``OMP_NUM_THREADS=1`` and
``-device cpu``. Random kill times come from ``--seed``. The exit status is 0 unless ``--strict`` is given and a
case lost data, ran code or printed a traceback.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import errno
import hashlib
import json
import os
import pickle
import random
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import traceback
import zipfile
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

# ----------------------------------------------------------------------------------------------------------------
# constants

REFUSED = "refused cleanly"
HANDLED = "handled"
DATA_LOST = "data lost"
CODE_RUN = "code run"
TRACEBACK = "traceback"
NOT_CLEAN = "not clean"
CATEGORIES = (REFUSED, HANDLED, DATA_LOST, CODE_RUN, TRACEBACK, NOT_CLEAN)
SKIPPED = "skipped"
SETUP_FAILED = "set-up failed"

DATASET_ID = 590
DATASET = "Dataset590_TwoPhaseLiver"
CONFIGURATION = "2d"
TEST_CASE = "phantom_005"
SHAPE_ZYX = (8, 32, 32)
SPACING_ZYX = (4.0, 3.0, 3.0)
CONVERTED = {"511": "Dataset511_MultiPhaseLiver", "510": "Dataset510_LiTS", "501": "Dataset501_MPTH"}
CONVERTER_ARGS = {"511": ["--no-qa"], "510": [], "501": ["--spacing", "4", "3", "3"]}
MM, CMG, WEAK = "MultiModalTrainer_debug", "CMGTrainer_debug", "WeakLabelTrainer_debug"
IMAGE_ENDINGS = (".nii.gz", ".nii", ".nrrd", ".mha", ".mhd")
ERROR_LINE = re.compile(r"(?<![A-Za-z_])error:")
TRACEBACK_MARK = "Traceback (most recent call last)"
KEY_LINE = re.compile(r"(?<![A-Za-z_])error:|Traceback|^\s*[\w.]+(Error|Exception)\b|(?i:warning)|Continuing|"
                      r"restored|replaced|refus|Epoch \d+$|No space|Permission denied")
PRINT_LOCK = threading.Lock()
#: one matplotlib cache for every command (a fresh one per case costs each command a font scan)
SHARED_SETTINGS: dict[str, Path] = {}


def tool(name: str) -> str:
    """The command ``name`` from the virtual environment this script runs in (else from ``PATH``)."""
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return str(beside)
    return shutil.which(name) or name


def say(text: str) -> None:
    with PRINT_LOCK:
        print(text, flush=True)


# ----------------------------------------------------------------------------------------------------------------
# results


class Skip(Exception):
    """A case whose precondition is missing here (not counted in "tried")."""


class SetupFailed(Exception):
    """A fixture a case needs could not be built (not counted in "tried"; reported)."""


@dataclasses.dataclass
class Run:
    """One subprocess: what ran, how it ended and what it printed."""

    argv: list[str]
    returncode: int | None
    stdout: str
    stderr: str
    seconds: float
    killed_after: float | None = None
    exited_before_kill: bool = False
    timed_out: bool = False

    @property
    def output(self) -> str:
        return self.stdout + "\n" + self.stderr

    def describe(self, case_dir: Path) -> dict[str, Any]:
        def short(text: str) -> str:
            return text.replace(str(case_dir), "$CASE")

        stderr_lines = [short(line)[:300] for line in self.stderr.splitlines() if line.strip()]
        keys = [short(line.strip())[:300] for line in self.output.splitlines() if KEY_LINE.search(line)]
        return {"command": short(shlex.join(self.argv)), "returncode": self.returncode,
                "seconds": round(self.seconds, 2),
                "killed_after_s": None if self.killed_after is None else round(self.killed_after, 3),
                "exited_before_kill": self.exited_before_kill, "timed_out": self.timed_out,
                "stderr_head": stderr_lines[:8], "stderr_tail": stderr_lines[-6:],
                "key_lines": _dedupe(keys)[:12]}


def _dedupe(lines: list[str]) -> list[str]:
    seen: set[str] = set()
    return [line for line in lines if not (line in seen or seen.add(line))]


@dataclasses.dataclass
class Outcome:
    category: str
    detail: str


@dataclasses.dataclass
class CaseResult:
    name: str
    group: str
    expect: str
    category: str
    detail: str
    seconds: float
    runs: list[dict[str, Any]]
    notes: list[str]


def error_block(text: str) -> str | None:
    """The output from the first ``error:`` line on (None if there is none)."""
    lines = text.splitlines()
    for index, line in enumerate(lines):
        if ERROR_LINE.search(line):
            return "\n".join(lines[index:])
    return None


def first_error_line(text: str) -> str:
    block = error_block(text)
    if block is not None:
        return block.splitlines()[0].strip()[:300]
    exceptions = [line.strip() for line in text.splitlines() if re.match(r"^\s*\w+(Error|Exception)\b", line)]
    if exceptions:
        return exceptions[-1][:300]
    tail = [line.strip() for line in text.splitlines() if line.strip()]
    return tail[-1][:300] if tail else "(no output)"


def traceback_summary(text: str) -> str:
    lines = text.splitlines()
    start = max(i for i, line in enumerate(lines) if TRACEBACK_MARK in line)
    rest = [line.strip() for line in lines[start + 1:] if line.strip()]
    exception = next((line for line in rest if re.match(r"^[\w.]+(Error|Exception|Exit|Interrupt)\b", line)),
                     rest[-1] if rest else "")
    return f"Traceback ... {exception[:240]}"


def _missing_names(block: str, names: Sequence[str | tuple[str, ...]]) -> list[str]:
    missing = []
    for name in names:
        alternatives = (name,) if isinstance(name, str) else name
        if not any(alternative in block for alternative in alternatives):
            missing.append(" or ".join(alternatives))
    return missing


def judge_refusal(run: Run, *, names: Sequence[str | tuple[str, ...]], changed_inputs: Sequence[str] = (),
                  data_problem: str | None = None, leftovers: Sequence[str] = (), code_ran: str | None = None,
                  output: str | None = None) -> Outcome:
    """Classify a run that had to be refused (see the module docstring). ``names``: what the error must name
    (each entry a name or a tuple of alternatives). ``data_problem``: set by the case when data are wrong (an
    exit-0 output that differs from the undamaged input's, an existing dataset gone)."""
    text = run.output if output is None else output
    if code_ran:
        return Outcome(CODE_RUN, code_ran)
    if changed_inputs:
        return Outcome(DATA_LOST, "input modified: " + ", ".join(changed_inputs[:4]))
    if data_problem:
        return Outcome(DATA_LOST, data_problem)
    if TRACEBACK_MARK in text:
        return Outcome(TRACEBACK, f"exit {run.returncode}; {traceback_summary(text)}")
    if run.timed_out:
        return Outcome(NOT_CLEAN, f"timed out after {run.seconds:.0f} s")
    if run.returncode == 0:
        return Outcome(NOT_CLEAN, "exit 0: accepted although it had to be refused (output happens to be right)")
    block = error_block(text)
    if block is None:
        return Outcome(NOT_CLEAN, f"exit {run.returncode} without an 'error:' line; last line: "
                                  f"{first_error_line(text)}")
    missing = _missing_names(block, names)
    if missing:
        return Outcome(NOT_CLEAN, f"the error does not name {', '.join(missing)}: {first_error_line(text)}")
    if leftovers:
        return Outcome(NOT_CLEAN, "refused but left output behind: " + ", ".join(leftovers[:4]))
    return Outcome(REFUSED, first_error_line(text))


def judge_success(run: Run, *, changed_inputs: Sequence[str] = (), data_problem: str | None = None,
                  check_problem: str | None = None, required: Sequence[str | tuple[str, ...]] = (),
                  leftovers: Sequence[str] = (), code_ran: str | None = None, output: str | None = None) -> Outcome:
    """Classify a run that had to succeed. ``data_problem``: data lost (wrong output with exit 0, an old dataset
    gone); ``check_problem``: a failed check that loses nothing (e.g. a fallback not announced); ``required``:
    what the output must say."""
    text = run.output if output is None else output
    if code_ran:
        return Outcome(CODE_RUN, code_ran)
    if changed_inputs:
        return Outcome(DATA_LOST, "input modified: " + ", ".join(changed_inputs[:4]))
    if data_problem:
        return Outcome(DATA_LOST, data_problem)
    if TRACEBACK_MARK in text:
        return Outcome(TRACEBACK, f"exit {run.returncode}; {traceback_summary(text)}")
    if run.timed_out:
        return Outcome(NOT_CLEAN, f"timed out after {run.seconds:.0f} s")
    if run.returncode != 0:
        return Outcome(NOT_CLEAN, f"exit {run.returncode} (had to succeed): {first_error_line(text)}")
    if check_problem:
        return Outcome(NOT_CLEAN, check_problem)
    missing = _missing_names(text, required)
    if missing:
        return Outcome(NOT_CLEAN, f"exit 0 but the output does not say {', '.join(missing)}")
    if leftovers:
        return Outcome(NOT_CLEAN, "left behind: " + ", ".join(leftovers[:4]))
    return Outcome(HANDLED, "exit 0, data check passed")


# ----------------------------------------------------------------------------------------------------------------
# files: hashes, damage, comparisons


def snapshot(roots: Sequence[Path]) -> dict[str, str]:
    """Every file below ``roots`` (and the roots themselves if files): its sha256, or the target of a link."""
    state: dict[str, str] = {}

    def add(path: Path) -> None:
        if path.is_symlink():
            state[str(path)] = "link->" + os.readlink(path)
        elif path.is_file():
            state[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()

    for root in roots:
        root = Path(root)
        if root.is_symlink() or root.is_file():
            add(root)
            continue
        for folder, subfolders, files in os.walk(root):
            for name in files + [d for d in subfolders if (Path(folder) / d).is_symlink()]:
                add(Path(folder) / name)
    return state


def changed_files(before: dict[str, str], after: dict[str, str]) -> list[str]:
    """What changed between two :func:`snapshot` s (nnU-Net's own ``splits_final.json``, which training adds to
    the preprocessed folder when it is missing, does not count)."""
    changed = [f"{p} (modified)" for p in before if p in after and after[p] != before[p]]
    changed += [f"{p} (deleted)" for p in before if p not in after]
    changed += [f"{p} (added)" for p in after if p not in before and not p.endswith("splits_final.json")]
    return sorted(changed)


def visible_files(root: Path) -> set[str]:
    """Non-hidden files and folders below ``root`` (relative paths)."""
    if not root.is_dir():
        return set()
    found = set()
    for path in root.rglob("*"):
        relative = path.relative_to(root)
        if not any(part.startswith(".") for part in relative.parts):
            found.add(relative.as_posix())
    return found


def hidden_leftovers(root: Path) -> list[str]:
    """Hidden entries of ``root`` (staging and old folders, partial files) -- lock files do not count: they are
    empty, and a killed holder cannot remove its own."""
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if p.name.startswith(".") and not p.name.endswith(".lock"))


def cut(path: Path, *, fraction: float | None = None, drop_last: int | None = None) -> int:
    """Cut ``path`` to ``fraction`` of its bytes or by its last ``drop_last`` bytes; returns the new size."""
    data = path.read_bytes()
    keep = int(len(data) * fraction) if fraction is not None else len(data) - int(drop_last or 0)
    path.write_bytes(data[:max(keep, 0)])
    return max(keep, 0)


def flip_middle_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def put_voxel(path: Path, value: float, *, float_copy: bool = True) -> None:
    """Set the central voxel of the image ``path`` to ``value`` (as float32), rewriting it under its name."""
    import SimpleITK as sitk

    image = sitk.ReadImage(str(path))
    if float_copy:
        image = sitk.Cast(image, sitk.sitkFloat32)
    array = sitk.GetArrayFromImage(image)
    array[tuple(n // 2 for n in array.shape)] = value
    damaged = sitk.GetImageFromArray(array)
    damaged.CopyInformation(image)
    sitk.WriteImage(damaged, str(path))


def make_4d(path: Path) -> None:
    import SimpleITK as sitk

    image = sitk.ReadImage(str(path))
    sitk.WriteImage(sitk.JoinSeries([image, image]), str(path))


def image_entry(path: Path) -> tuple[np.ndarray, tuple]:
    import SimpleITK as sitk

    image = sitk.ReadImage(str(path))
    return sitk.GetArrayFromImage(image), (image.GetSpacing(), image.GetOrigin(), image.GetDirection())


def dataset_contents(folder: Path) -> dict[str, Any]:
    """Every file of a converted dataset: images as (voxels, geometry), dataset.json without its ``source``, other
    files by hash. QA figures are left out."""
    contents: dict[str, Any] = {}
    for path in sorted(folder.rglob("*")):
        relative = path.relative_to(folder).as_posix()
        if path.is_dir() or relative.startswith("nnunet_mm_qa") or path.name.startswith("."):
            continue
        if path.name.endswith(IMAGE_ENDINGS):
            try:
                contents[relative] = ("image",) + image_entry(path)
            except Exception as error:  # unreadable output is a finding, not a crash of the bench
                contents[relative] = ("unreadable", str(error).splitlines()[0][:120])
        elif path.name == "dataset.json":
            value = json.loads(path.read_text(encoding="utf-8"))
            value.get("nnunet_mm", {}).pop("source", None)
            contents[relative] = ("json", value)
        else:
            contents[relative] = ("bytes", hashlib.sha256(path.read_bytes()).hexdigest())
    return contents


def _voxel_difference(expected: np.ndarray, actual: np.ndarray) -> int:
    if expected.shape != actual.shape:
        return -1
    same = expected == actual
    if np.issubdtype(expected.dtype, np.floating) or np.issubdtype(actual.dtype, np.floating):
        same |= np.isnan(expected.astype(np.float64)) & np.isnan(actual.astype(np.float64))
    return int(same.size - np.count_nonzero(same))


def compare_contents(expected: dict[str, Any], actual: dict[str, Any]) -> str | None:
    """None if equal, else a short description of the differences."""
    problems = []
    missing = sorted(set(expected) - set(actual))
    extra = sorted(set(actual) - set(expected))
    if missing:
        problems.append(f"missing {', '.join(missing[:3])}" + (" ..." if len(missing) > 3 else ""))
    if extra:
        problems.append(f"unexpected {', '.join(extra[:3])}" + (" ..." if len(extra) > 3 else ""))
    for key in sorted(set(expected) & set(actual)):
        want, got = expected[key], actual[key]
        if want[0] != got[0]:
            problems.append(f"{key}: {got[0]} ({got[1] if got[0] == 'unreadable' else ''})")
        elif want[0] == "image":
            differing = _voxel_difference(want[1], got[1])
            if differing == -1:
                problems.append(f"{key}: shape {got[1].shape} instead of {want[1].shape}")
            elif differing:
                problems.append(f"{key}: {differing:,} of {want[1].size:,} voxels differ")
            elif not all(np.allclose(a, b, atol=1e-5) for a, b in zip(want[2], got[2])):
                problems.append(f"{key}: geometry differs")
        elif want[1] != got[1]:
            problems.append(f"{key} differs")
    if not problems:
        return None
    return "; ".join(problems[:4]) + (f"; ... ({len(problems)} differences)" if len(problems) > 4 else "")


def load_checkpoint_safely(path: Path) -> tuple[dict | None, str | None]:
    """(content, None) if ``path`` loads without unpickling code (the plugin's own loader, else torch's
    ``weights_only``), else (None, why)."""
    if not path.is_file():
        return None, f"{path.name} does not exist"
    try:
        from nnunet_mm.io.safe_load import load_torch_file

        return load_torch_file(path, map_location="cpu"), None
    except ImportError:
        pass
    except Exception as error:
        return None, f"{path.name} unreadable: {str(error).splitlines()[0][:160]}"
    try:
        import torch

        return torch.load(path, map_location="cpu", weights_only=True), None
    except Exception as error:
        return None, f"{path.name} unreadable: {str(error).splitlines()[0][:160]}"


class CraftedPayload:
    """Pickles as a call that creates ``marker`` -- what a crafted checkpoint or ``.pkl`` does."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self) -> tuple:
        return os.system, (f"touch {shlex.quote(self.marker)}",)


# ----------------------------------------------------------------------------------------------------------------
# subprocesses


def _kill_group(process: subprocess.Popen) -> None:
    """SIGKILL the process group this script started for ``process`` (its session, so nnU-Net's workers too)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)


def start(argv: Sequence[str], env: dict[str, str], cwd: Path, log_stem: Path
          ) -> tuple[subprocess.Popen, Path, Path]:
    """Start ``argv`` in its own session (so that a kill reaches nnU-Net's worker processes too), output to files
    (pipes could fill up while a case waits for a moment to kill it)."""
    out, err = log_stem.with_suffix(".out"), log_stem.with_suffix(".err")
    with open(out, "w", encoding="utf-8") as stdout, open(err, "w", encoding="utf-8") as stderr:
        process = subprocess.Popen(list(argv), env=env, cwd=cwd, stdout=stdout, stderr=stderr,
                                   stdin=subprocess.DEVNULL, start_new_session=True)
    return process, out, err


def finish(process: subprocess.Popen, argv: Sequence[str], out: Path, err: Path, started: float, *,
           timeout: float, killed_after: float | None = None, exited_before_kill: bool = False) -> Run:
    timed_out = False
    try:
        process.wait(timeout=max(timeout - (time.monotonic() - started), 1))
    except subprocess.TimeoutExpired:
        _kill_group(process)
        process.wait()
        timed_out = True
    if killed_after is not None or timed_out:
        _kill_group(process)  # workers of a killed command
    read = lambda path: path.read_text(encoding="utf-8", errors="replace")  # noqa: E731
    return Run(list(argv), process.returncode, read(out), read(err), time.monotonic() - started, killed_after,
               exited_before_kill, timed_out)


# ----------------------------------------------------------------------------------------------------------------
# fixtures: sources, baselines, a planned dataset, trained models (built once, in a set-up thread)


class Fixtures:
    """Named inputs built once and shared by the cases (which copy them before damaging anything)."""

    ORDER = ("src511", "src511_alt", "src511_nii", "src510", "src501", "base511", "base511_alt", "base511_nii",
             "base510", "base501", "planned", "mm_model", "base_pred", "weak_model", "cmg_model")
    NEEDS = {"base511": ("src511",), "base511_alt": ("src511_alt",), "base511_nii": ("src511_nii",),
             "base510": ("src510",), "base501": ("src501",), "mm_model": ("planned",),
             "base_pred": ("mm_model",), "weak_model": ("planned",), "cmg_model": ("planned",)}

    def __init__(self, root: Path, timeout: float) -> None:
        self.root = root
        self.timeout = timeout
        self.values: dict[str, Any] = {}
        self.errors: dict[str, str] = {}
        self.events = {name: threading.Event() for name in self.ORDER}
        self.seconds: dict[str, float] = {}
        self.wanted: set[str] = set()

    def close_over(self, names: set[str]) -> list[str]:
        wanted = set()
        stack = list(names)
        while stack:
            name = stack.pop()
            if name not in wanted:
                wanted.add(name)
                stack.extend(self.NEEDS.get(name, ()))
        self.wanted = wanted
        return [name for name in self.ORDER if name in wanted]

    def get(self, name: str) -> Any:
        if name not in self.wanted:
            raise SetupFailed(f"fixture {name} was not scheduled")
        self.events[name].wait()
        if name in self.errors:
            raise SetupFailed(f"{name}: {self.errors[name]}")
        return self.values[name]

    def build(self, names: list[str]) -> None:
        for name in names:
            started = time.monotonic()
            try:
                missing = [dep for dep in self.NEEDS.get(name, ()) if dep in self.errors]
                if missing:
                    raise SetupFailed(f"needs {', '.join(missing)}, which failed")
                self.values[name] = getattr(self, f"_build_{name}")()
                say(f"  [set-up] {name} ready ({time.monotonic() - started:.1f} s)")
            except Exception as error:  # reported with every case that needs it
                self.errors[name] = f"{type(error).__name__}: {error}"[:2000]
                say(f"  [set-up] {name} FAILED: {self.errors[name][:400]}")
            self.seconds[name] = time.monotonic() - started
            self.events[name].set()

    # -- helpers

    def env(self, folder: Path) -> dict[str, str]:
        return nnunet_env(folder / "nnUNet_raw", folder / "nnUNet_preprocessed", folder / "nnUNet_results",
                          folder / "home")

    def run(self, argv: Sequence[str], env: dict[str, str], cwd: Path, what: str) -> Run:
        log = cwd / f"{what}.log"
        started = time.monotonic()
        process, out, err = start(argv, env, cwd, log)
        run = finish(process, argv, out, err, started, timeout=self.timeout)
        if run.returncode != 0:
            raise RuntimeError(f"{shlex.join(argv)} exited with {run.returncode}: "
                               f"{first_error_line(run.output)}")
        return run

    # -- sources (the undamaged inputs)

    def _build_src511(self) -> Path:
        from nnunet_mm.phantom import write_multiphase_folders

        return write_multiphase_folders(self.root / "src511" / "MultiPhaseLiver", num_cases=2, num_unlabeled=1,
                                        seed=1, shape_zyx=SHAPE_ZYX, spacing_zyx_mm=SPACING_ZYX)

    def _build_src511_alt(self) -> Path:
        from nnunet_mm.phantom import write_multiphase_folders

        return write_multiphase_folders(self.root / "src511_alt" / "MultiPhaseLiver", num_cases=2, num_unlabeled=1,
                                        seed=2, shape_zyx=SHAPE_ZYX, spacing_zyx_mm=SPACING_ZYX)

    def _build_src511_nii(self) -> Path:
        from nnunet_mm.phantom import write_multiphase_folders

        return write_multiphase_folders(self.root / "src511_nii" / "MultiPhaseLiver", num_cases=2, seed=1,
                                        file_ending=".nii", shape_zyx=SHAPE_ZYX, spacing_zyx_mm=SPACING_ZYX)

    def _build_src510(self) -> Path:
        from nnunet_mm.phantom import write_lits

        generated = write_lits(self.root / "src510" / "generated", num_cases=3, seed=1, shape_zyx=SHAPE_ZYX,
                               spacing_zyx_mm=SPACING_ZYX)
        source = self.root / "src510" / "LiTS"
        (source / "Training Batch 1").mkdir(parents=True)
        (source / "LITS-Challenge-Test-Data").mkdir()
        for index in (0, 1):
            for kind in ("volume", "segmentation"):
                shutil.move(generated / f"{kind}-{index}.nii", source / "Training Batch 1" / f"{kind}-{index}.nii")
        shutil.move(generated / "volume-2.nii", source / "LITS-Challenge-Test-Data" / "test-volume-0.nii")
        shutil.rmtree(generated)
        return source

    def _build_src501(self) -> Path:
        from nnunet_mm.phantom import write_mpth

        return write_mpth(self.root / "src501" / "MPTH", num_cases=2, seed=1, shape_zyx=SHAPE_ZYX,
                          spacing_zyx_mm=SPACING_ZYX)

    # -- baselines: each undamaged source converted by the converter itself

    def _baseline(self, converter: str, source_key: str, name: str) -> dict[str, Any]:
        folder = self.root / name
        folder.mkdir()
        source = self.get(source_key)
        self.run(convert_argv(converter, source, folder / "out"), self.env(folder), folder, "convert")
        dataset = folder / "out" / CONVERTED[converter]
        return {"dataset": dataset, "contents": dataset_contents(dataset)}

    def _build_base511(self) -> dict[str, Any]:
        return self._baseline("511", "src511", "base511")

    def _build_base511_alt(self) -> dict[str, Any]:
        return self._baseline("511", "src511_alt", "base511_alt")

    def _build_base511_nii(self) -> dict[str, Any]:
        return self._baseline("511", "src511_nii", "base511_nii")

    def _build_base510(self) -> dict[str, Any]:
        return self._baseline("510", "src510", "base510")

    def _build_base501(self) -> dict[str, Any]:
        return self._baseline("501", "src501", "base501")

    # -- the nnU-Net side: a planned two-phase phantom dataset and models trained on it

    def _build_planned(self) -> Path:
        import SimpleITK as sitk

        from nnunet_mm.phantom import write_nnunet_raw

        folder = self.root / "planned"
        for sub in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results", "home"):
            (folder / sub).mkdir(parents=True)
        raw = write_nnunet_raw(folder / "nnUNet_raw", dataset_id=DATASET_ID, name=DATASET.split("_", 1)[1],
                               num_training=5, num_test=1, seed=3, shape_zyx=SHAPE_ZYX,
                               spacing_zyx_mm=SPACING_ZYX, phases=("pv", "art"))
        # float32 copies of the test case: the predict cases put NaN voxels into them
        clean = folder / "clean_input"
        clean.mkdir()
        for file in sorted((raw / "imagesTs").iterdir()):
            sitk.WriteImage(sitk.Cast(sitk.ReadImage(str(file)), sitk.sitkFloat32), str(clean / file.name))
        self.run([tool("nnUNetv2_plan_and_preprocess"), "-d", str(DATASET_ID), "-c", CONFIGURATION, "-np", "1"],
                 self.env(folder), folder, "plan")
        return folder

    def _train(self, trainer: str) -> Path:
        folder = self.get("planned")
        self.run(train_argv(trainer), self.env(folder), folder, f"train_{trainer}")
        model = model_folder(folder / "nnUNet_results", trainer)
        if not (model / "fold_0" / "checkpoint_final.pth").is_file():
            raise RuntimeError(f"{trainer}: no checkpoint_final.pth after training")
        return model

    def _build_mm_model(self) -> Path:
        return self._train(MM)

    def _build_weak_model(self) -> Path:
        return self._train(WEAK)

    def _build_cmg_model(self) -> Path:
        return self._train(CMG)

    def _build_base_pred(self) -> dict[str, Any]:
        planned = self.get("planned")
        self.get("mm_model")
        folder = self.root / "base_pred"
        folder.mkdir()
        out = folder / "pred"
        self.run(predict_argv(planned / "clean_input", out), self.env(planned), folder, "predict")
        prediction = out / f"{TEST_CASE}.nii.gz"
        return {"input": planned / "clean_input", "prediction": image_entry(prediction)[0], "folder": out}


def nnunet_env(raw: Path, preprocessed: Path, results: Path, home: Path | None = None) -> dict[str, str]:
    env = dict(os.environ)
    for name in ("NNUNET_MM_TRUSTED_FOLDERS", "nnUNet_extTrainer", "PYTHONPATH"):
        env.pop(name, None)
    env.update(nnUNet_raw=str(raw), nnUNet_preprocessed=str(preprocessed), nnUNet_results=str(results),
               nnUNet_n_proc_DA="1", nnUNet_def_n_proc="1", nnUNet_compile="f", OMP_NUM_THREADS="1",
               MKL_NUM_THREADS="1", MPLBACKEND="Agg", PYTHONUNBUFFERED="1", PYTHONWARNINGS="ignore",
               PATH=str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", ""))
    if home is not None:
        home.mkdir(parents=True, exist_ok=True)
        env.update(HOME=str(home), MPLCONFIGDIR=str(SHARED_SETTINGS.get("mpl", home / "mpl")))
    return env


def convert_argv(converter: str, source: Path, output_root: Path, *extra: str) -> list[str]:
    return [tool("nnunet_mm"), "convert", converter, str(source), "--output-root", str(output_root),
            *CONVERTER_ARGS[converter], *extra]


def train_argv(trainer: str, *extra: str) -> list[str]:
    return [tool("nnUNetv2_train"), str(DATASET_ID), CONFIGURATION, "0", "-tr", trainer, "-device", "cpu", *extra]


def predict_argv(input_folder: Path, output_folder: Path, *extra: str, model: Path | None = None) -> list[str]:
    which = ["-m", str(model)] if model is not None else ["-d", str(DATASET_ID), "-c", CONFIGURATION, "-tr", MM]
    return [tool("nnunet_mm"), "predict", "-i", str(input_folder), "-o", str(output_folder), *which, "-f", "0",
            "-device", "cpu", "--disable_tta", "--disable_progress_bar", "-nps", "1", *extra]


def model_folder(results: Path, trainer: str) -> Path:
    return results / DATASET / f"{trainer}__nnUNetPlans__{CONFIGURATION}"


# ----------------------------------------------------------------------------------------------------------------
# one case's workspace


@dataclasses.dataclass
class Workspace:
    """A case's own nnU-Net folders (copies of the planned dataset and of the models it needs)."""

    root: Path
    env: dict[str, str]

    @property
    def raw(self) -> Path:
        return self.root / "nnUNet_raw" / DATASET

    @property
    def preprocessed(self) -> Path:
        return self.root / "nnUNet_preprocessed" / DATASET

    @property
    def results(self) -> Path:
        return self.root / "nnUNet_results"

    def fold(self, trainer: str) -> Path:
        return model_folder(self.results, trainer) / "fold_0"


class Context:
    """What a case gets: its folder, the fixtures, a random generator and a command runner that records runs."""

    def __init__(self, case: Case, root: Path, fixtures: Fixtures, seed: int, timeout: float) -> None:
        self.case = case
        self.dir = root
        self.fixtures = fixtures
        self.rng = random.Random(f"{seed}:{case.name}")
        self.timeout = timeout
        self.runs: list[Run] = []
        self.notes: list[str] = []
        self._count = 0

    def fixture(self, name: str) -> Any:
        return self.fixtures.get(name)

    def env(self) -> dict[str, str]:
        return nnunet_env(self.dir / "nnUNet_raw", self.dir / "nnUNet_preprocessed", self.dir / "nnUNet_results",
                          self.dir / "home")

    def _log(self) -> Path:
        self._count += 1
        (self.dir / "logs").mkdir(exist_ok=True)
        return self.dir / "logs" / f"run{self._count:02d}"

    def run(self, argv: Sequence[str], *, env: dict[str, str] | None = None, timeout: float | None = None
            ) -> Run:
        started = time.monotonic()
        process, out, err = start(argv, env or self.env(), self.dir, self._log())
        run = finish(process, argv, out, err, started, timeout=timeout or self.timeout)
        self.runs.append(run)
        return run

    def run_and_kill(self, argv: Sequence[str], *, delay: float, trigger: Callable[[], bool] | None = None,
                     trigger_timeout: float = 120.0, env: dict[str, str] | None = None) -> Run:
        """Start ``argv``, wait until ``trigger()`` holds (if given), then ``delay`` seconds more, then SIGKILL its
        whole process group. The run records when it was killed and whether it had already exited."""
        started = time.monotonic()
        process, out, err = start(argv, env or self.env(), self.dir, self._log())
        if trigger is not None:
            while process.poll() is None and not trigger() and time.monotonic() - started < trigger_timeout:
                time.sleep(0.002)
        deadline = time.monotonic() + delay
        while process.poll() is None and time.monotonic() < deadline:
            time.sleep(min(0.005, max(deadline - time.monotonic(), 0)))
        exited = process.poll() is not None
        killed_after = time.monotonic() - started
        _kill_group(process)
        run = finish(process, argv, out, err, started, timeout=self.timeout, killed_after=killed_after,
                     exited_before_kill=exited)
        if exited:
            self.notes.append(f"the command finished ({run.returncode}) before the kill at {killed_after:.2f} s")
        else:
            self.notes.append(f"killed after {killed_after:.2f} s")
        self.runs.append(run)
        return run

    def copy_source(self, key: str, name: str | None = None) -> Path:
        source = Path(self.fixture(key))
        target = self.dir / "input" / (name or source.name)
        shutil.copytree(source, target, symlinks=True)
        return target

    def workspace(self, models: Sequence[str] = (), *, unlabeled: bool = False) -> Workspace:
        planned = Path(self.fixture("planned"))
        sources = {trainer: Path(self.fixture({MM: "mm_model", CMG: "cmg_model", WEAK: "weak_model"}[trainer]))
                   for trainer in models}  # wait for the models first: training adds splits_final.json to `planned`
        for sub in ("nnUNet_raw", "nnUNet_preprocessed"):
            shutil.copytree(planned / sub / DATASET, self.dir / sub / DATASET)
        (self.dir / "nnUNet_results").mkdir(exist_ok=True)
        for trainer, source in sources.items():
            shutil.copytree(source, model_folder(self.dir / "nnUNet_results", trainer),
                            ignore=shutil.ignore_patterns("validation", "progress.png", "refined_labels"))
        workspace = Workspace(self.dir, self.env())
        if unlabeled:
            shutil.copytree(workspace.raw / "imagesTs", workspace.raw / "imagesUnl")
        return workspace

    def clean_input(self) -> Path:
        target = self.dir / "input"
        shutil.copytree(Path(self.fixture("base_pred")["input"]), target)
        return target


@dataclasses.dataclass(frozen=True)
class Case:
    name: str
    group: str
    expect: str  # "refuse" or "succeed"
    run: Callable[[Context], Outcome]
    needs: tuple[str, ...] = ()
    quick: bool = False


# ----------------------------------------------------------------------------------------------------------------
# case helpers


def converter_refusal(ctx: Context, converter: str, source: Path, names: Sequence[str | tuple[str, ...]],
                      baseline: str, *, extra_inputs: Sequence[Path] = (), extra_args: Sequence[str] = (),
                      escape_probe: Callable[[], list[str]] | None = None) -> Outcome:
    """Run the converter on a damaged ``source``; it must refuse, naming ``names``, writing nothing."""
    out = ctx.dir / "nnUNet_raw"
    out.mkdir(exist_ok=True)
    inputs = [source, *extra_inputs]
    before = snapshot(inputs)
    run = ctx.run(convert_argv(converter, source, out, *extra_args))
    changed = changed_files(before, snapshot(inputs))
    dataset = out / CONVERTED[converter]
    data_problem = None
    if run.returncode == 0:
        if not dataset.is_dir():
            data_problem = "exit 0 but no dataset was written"
        else:
            difference = compare_contents(ctx.fixture(baseline)["contents"], dataset_contents(dataset))
            if difference:
                data_problem = f"exit 0 with a wrong dataset: {difference}"
    leftovers = sorted(visible_files(out)) + hidden_leftovers(out)
    if escape_probe is not None:
        leftovers += escape_probe()
    return judge_refusal(run, names=names, changed_inputs=changed, data_problem=data_problem, leftovers=leftovers)


def converter_success(ctx: Context, converter: str, source: Path, baseline: str, *,
                      extra_inputs: Sequence[Path] = ()) -> Outcome:
    """Run the converter on an unusual but valid ``source``; the dataset must equal the baseline's."""
    out = ctx.dir / "nnUNet_raw"
    out.mkdir(exist_ok=True)
    inputs = [source, *extra_inputs]
    before = snapshot(inputs)
    run = ctx.run(convert_argv(converter, source, out))
    changed = changed_files(before, snapshot(inputs))
    dataset = out / CONVERTED[converter]
    data_problem = None
    if run.returncode == 0:
        difference = compare_contents(ctx.fixture(baseline)["contents"], dataset_contents(dataset)) \
            if dataset.is_dir() else "no dataset written"
        if difference:
            data_problem = f"exit 0 with a wrong dataset: {difference}"
    return judge_success(run, changed_inputs=changed, data_problem=data_problem, leftovers=hidden_leftovers(out))


def damaged_511(path_in_case: str, damage: Callable[[Path], Any], *, key: str = "src511",
                baseline: str = "base511") -> Callable[[Context], Outcome]:
    def case(ctx: Context) -> Outcome:
        source = ctx.copy_source(key)
        target = source / path_in_case
        damage(target)
        return converter_refusal(ctx, "511", source, [target.name], baseline)
    return case


def damaged_510(path_in_case: str, damage: Callable[[Path], Any]) -> Callable[[Context], Outcome]:
    def case(ctx: Context) -> Outcome:
        source = ctx.copy_source("src510")
        target = source / path_in_case
        damage(target)
        return converter_refusal(ctx, "510", source, [target.name], "base510")
    return case


def prediction_problem(ctx: Context, out: Path) -> str | None:
    """None if ``out`` holds the prediction of the undamaged input, else what differs."""
    file = out / f"{TEST_CASE}.nii.gz"
    if not file.is_file():
        return "exit 0 but no prediction written"
    try:
        actual = image_entry(file)[0]
    except Exception as error:
        return f"exit 0 but the prediction is unreadable: {str(error).splitlines()[0][:160]}"
    expected = ctx.fixture("base_pred")["prediction"]
    differing = _voxel_difference(expected, actual)
    if differing == -1:
        return f"exit 0; prediction shape {actual.shape} instead of {expected.shape}"
    if differing:
        return f"exit 0; {differing:,} of {expected.size:,} predicted voxels differ from the undamaged input's"
    return None


def predict_refusal(damage: Callable[[Path], Path], *, extra: Sequence[str] = ()) -> Callable[[Context], Outcome]:
    """Damage one input file (``damage(input_folder)`` returns it); ``nnunet_mm predict`` must refuse it."""
    def case(ctx: Context) -> Outcome:
        workspace = ctx.workspace([MM])
        inputs = ctx.clean_input()
        damaged = damage(inputs)
        out = ctx.dir / "pred"
        model = workspace.results / DATASET
        before = snapshot([inputs, model])
        run = ctx.run(predict_argv(inputs, out, *extra), env=workspace.env)
        changed = changed_files(before, snapshot([inputs, model]))
        data_problem = None
        if run.returncode == 0:
            data_problem = prediction_problem(ctx, out)
        left = sorted(f for f in visible_files(out) if f.endswith(".nii.gz")) + hidden_leftovers(out)
        return judge_refusal(run, names=[damaged.name], changed_inputs=changed, data_problem=data_problem,
                             leftovers=left)
    return case


def cut_channel(fraction: float | None = None, drop_last: int | None = None) -> Callable[[Path], Path]:
    def damage(folder: Path) -> Path:
        target = folder / f"{TEST_CASE}_0001.nii.gz"
        cut(target, fraction=fraction, drop_last=drop_last)
        return target
    return damage


def voxel_channel(value: float) -> Callable[[Path], Path]:
    def damage(folder: Path) -> Path:
        target = folder / f"{TEST_CASE}_0001.nii.gz"
        put_voxel(target, value)
        return target
    return damage


def edit_block(path: Path, edit: Callable[[dict], None]) -> None:
    dataset_json = json.loads(path.read_text(encoding="utf-8"))
    edit(dataset_json.setdefault("nnunet_mm", {}))
    path.write_text(json.dumps(dataset_json, indent=2), encoding="utf-8")


def checkpoint_files(fold: Path) -> list[str]:
    return sorted(p.name for p in fold.glob("checkpoint_*.pth")) if fold.is_dir() else []


def pretend_killed_while_writing_latest(fold: Path, *, empty: bool) -> Path:
    """The state a kill during the write of ``checkpoint_latest.pth`` leaves (nnU-Net writes it in place): a cut
    or empty latest checkpoint beside the best one, no final one yet (companions of the final checkpoint, such as
    a mean teacher, go with it)."""
    final = fold / "checkpoint_final.pth"
    latest = fold / "checkpoint_latest.pth"
    shutil.copyfile(final, latest)
    for companion in fold.glob("checkpoint_final.pth.*"):
        shutil.copyfile(companion, fold / companion.name.replace("checkpoint_final", "checkpoint_latest"))
        companion.unlink()
    final.unlink()
    cut(latest, fraction=0.0 if empty else 0.5)
    return latest


def continue_from_damage(trainer: str, damage: Callable[[Path], tuple[Path, Path]]) -> Callable[[Context], Outcome]:
    """Damage the trained fold (``damage(fold)`` -> (the broken checkpoint nnU-Net picks, the readable one that
    must be used)), then ``nnUNetv2_train --c``: it must continue from the readable one and say so."""
    def case(ctx: Context) -> Outcome:
        workspace = ctx.workspace([trainer])
        fold = workspace.fold(trainer)
        broken, fallback = damage(fold)
        fallback_before = hashlib.sha256(fallback.read_bytes()).hexdigest()
        data = [workspace.raw, workspace.preprocessed]
        before = snapshot(data)
        run = ctx.run(train_argv(trainer, "--c"), env=workspace.env)
        changed = changed_files(before, snapshot(data))
        final, why = load_checkpoint_safely(fold / "checkpoint_final.pth")
        data_problem = check_problem = None
        if run.returncode == 0 and final is None:
            data_problem = f"exit 0 but {why}"
        restarted = re.search(r"Epoch 0\s*$", run.stdout, re.MULTILINE) or "Starting a new training" in run.output
        if run.returncode == 0 and restarted:
            check_problem = f"started a new training instead of continuing from {fallback.name}"
        elif run.returncode != 0 and not fallback.is_file():
            data_problem = f"{fallback.name} (readable) is gone after the failed --c"
        elif fallback.is_file() and run.returncode != 0 and \
                hashlib.sha256(fallback.read_bytes()).hexdigest() != fallback_before:
            data_problem = f"{fallback.name} (readable) was changed by the failed --c"
        return judge_success(run, changed_inputs=changed, data_problem=data_problem, check_problem=check_problem,
                             required=[broken.name, fallback.name])
    return case


def latest_damaged(empty: bool) -> Callable[[Path], tuple[Path, Path]]:
    def damage(fold: Path) -> tuple[Path, Path]:
        return pretend_killed_while_writing_latest(fold, empty=empty), fold / "checkpoint_best.pth"
    return damage


def final_cut(fold: Path) -> tuple[Path, Path]:
    final = fold / "checkpoint_final.pth"
    cut(final, fraction=0.5)
    return final, fold / "checkpoint_best.pth"


def all_checkpoints_broken(trainer: str) -> Callable[[Context], Outcome]:
    def case(ctx: Context) -> Outcome:
        workspace = ctx.workspace([trainer])
        fold = workspace.fold(trainer)
        cut(fold / "checkpoint_final.pth", fraction=0.0)
        cut(fold / "checkpoint_best.pth", fraction=0.5)
        data = [workspace.raw, workspace.preprocessed]
        before = snapshot(data)
        run = ctx.run(train_argv(trainer, "--c"), env=workspace.env)
        changed = changed_files(before, snapshot(data))
        data_problem = None
        if run.returncode == 0:
            final, why = load_checkpoint_safely(fold / "checkpoint_final.pth")
            if final is None:
                data_problem = f"exit 0 but {why}"
        return judge_refusal(run, names=["checkpoint_final.pth"], changed_inputs=changed, data_problem=data_problem)
    return case


def readable_checkpoints(fold: Path) -> list[str]:
    """The checkpoints of ``fold`` that load (without unpickling code)."""
    return [name for name in checkpoint_files(fold) if load_checkpoint_safely(fold / name)[0] is not None]


def kill_training(trainer: str, *, during_checkpoint_write: bool) -> Callable[[Context], Outcome]:
    """Kill ``nnUNetv2_train`` at a random moment, or at the moment a checkpoint is being written while an earlier
    one already exists, then ``--c``: the run must finish with a readable final checkpoint, continuing from a
    checkpoint that survived the kill (not starting afresh)."""
    def case(ctx: Context) -> Outcome:
        workspace = ctx.workspace()
        fold = workspace.fold(trainer)
        if during_checkpoint_write:
            state: dict[str, Any] = {}

            def second_write_started() -> bool:
                """True once a checkpoint file appears or changes after checkpoint_best.pth was complete."""
                if not (fold / "checkpoint_best.pth").is_file():
                    return False
                files = {}
                for path in fold.iterdir():
                    if "checkpoint" in path.name:
                        with contextlib.suppress(FileNotFoundError):
                            files[path.name] = path.stat().st_size
                if "baseline" not in state:
                    time.sleep(0.05)  # let a non-atomic writer finish the best checkpoint before it counts
                    state["baseline"] = {p.name: p.stat().st_size for p in fold.iterdir() if "checkpoint" in p.name}
                    return False
                return any(state["baseline"].get(name) != size for name, size in files.items())

            ctx.run_and_kill(train_argv(trainer), delay=ctx.rng.uniform(0.0, 0.02), trigger=second_write_started,
                             env=workspace.env)
        else:
            ctx.run_and_kill(train_argv(trainer), delay=ctx.rng.uniform(4.0, 22.0), env=workspace.env)
        survived = readable_checkpoints(fold)
        listing = ", ".join(sorted(p.name for p in fold.iterdir())) if fold.is_dir() else "-"
        ctx.notes.append(f"after the kill: {listing}; readable: {survived or 'none'}")
        run = ctx.run(train_argv(trainer, "--c"), env=workspace.env)
        final, why = load_checkpoint_safely(fold / "checkpoint_final.pth")
        data_problem = f"exit 0 but {why}" if run.returncode == 0 and final is None else None
        restarted = "Starting a new training" in run.output or \
            re.search(r"Epoch 0\s*$", run.stdout, re.MULTILINE) is not None
        check = f"started a new training although {survived} survived the kill" if survived and restarted and \
            "checkpoint_final.pth" not in survived else None
        return judge_success(run, data_problem=data_problem, check_problem=check)
    return case


# ----------------------------------------------------------------------------------------------------------------
# the cases
# ----------------------------------------------------------------------------------------------------------------

def _case_zip_source(converter: str, key: str, baseline: str, archive_format: str = "zip"
                     ) -> Callable[[Context], Outcome]:
    def case(ctx: Context) -> Outcome:
        source = ctx.copy_source(key)
        archive = Path(shutil.make_archive(str(ctx.dir / "input" / source.name), archive_format,
                                           root_dir=source.parent, base_dir=source.name))
        shutil.rmtree(source)
        return converter_success(ctx, converter, archive, baseline)
    return case


def _case_zip_escaping_member(converter: str, key: str, baseline: str) -> Callable[[Context], Outcome]:
    def case(ctx: Context) -> Outcome:
        source = ctx.copy_source(key)
        escaped = f"escaped_{ctx.rng.randrange(16 ** 6):06x}.nii.gz"
        archive = ctx.dir / "input" / f"{source.name}.zip"
        data = next(p for p in sorted(source.rglob("*")) if p.is_file()).read_bytes()
        with zipfile.ZipFile(archive, "w") as handle:
            for path in sorted(source.rglob("*")):
                if path.is_file():
                    handle.write(path, arcname=path.relative_to(source.parent).as_posix())
            handle.writestr(f"../../{escaped}", data)
        shutil.rmtree(source)

        def probe() -> list[str]:  # where a '../../' member could land: beside the extraction folder or above
            temporary = Path(tempfile.gettempdir())
            places = [temporary / escaped, temporary.parent / escaped, Path("/") / escaped,
                      ctx.dir.parent / escaped, *ctx.dir.rglob(escaped)]
            found = sorted({str(place) for place in places if place.exists()})
            for place in found:  # written by the command under test: remove it again
                with contextlib.suppress(OSError):
                    Path(place).unlink()
            return [f"{place} (written outside the input)" for place in found]

        return converter_refusal(ctx, converter, archive, [archive.name], baseline, escape_probe=probe)
    return case


def case_511_tar_with_link_out(ctx: Context) -> Outcome:
    source = ctx.copy_source("src511")
    secret = ctx.dir / "secret.nii.gz"
    shutil.copyfile(source / "phantom_000" / "art.nii.gz", secret)
    archive = ctx.dir / "input" / "MultiPhaseLiver.tar"
    link = tarfile.TarInfo("MultiPhaseLiver/phantom_000/art.nii.gz")
    link.type, link.linkname = tarfile.SYMTYPE, "../../../secret.nii.gz"
    with tarfile.open(archive, "w") as handle:
        for path in sorted(source.rglob("*")):
            if path.is_file() and path.relative_to(source).as_posix() != "phantom_000/art.nii.gz":
                handle.add(path, arcname=path.relative_to(source.parent).as_posix())
        handle.addfile(link)
    shutil.rmtree(source)
    return converter_refusal(ctx, "511", archive, [archive.name], "base511", extra_inputs=[secret])


def case_511_zip_cut(ctx: Context) -> Outcome:
    source = ctx.copy_source("src511")
    archive = Path(shutil.make_archive(str(ctx.dir / "input" / "MultiPhaseLiver"), "zip", root_dir=source.parent,
                                       base_dir=source.name))
    shutil.rmtree(source)
    cut(archive, fraction=0.5)
    return converter_refusal(ctx, "511", archive, [archive.name], "base511")


def case_511_zip_with_cut_member(ctx: Context) -> Outcome:
    source = ctx.copy_source("src511")
    cut(source / "phantom_001" / "pv.nii.gz", fraction=0.5)
    archive = Path(shutil.make_archive(str(ctx.dir / "input" / "MultiPhaseLiver"), "zip", root_dir=source.parent,
                                       base_dir=source.name))
    shutil.rmtree(source)
    return converter_refusal(ctx, "511", archive, ["pv.nii.gz"], "base511")


def _link_out(converter: str, key: str, baseline: str, inner: str, *, folder: bool = False
              ) -> Callable[[Context], Outcome]:
    """Replace ``inner`` (a file or folder of the source) by a symbolic link to a copy outside the source."""
    def case(ctx: Context) -> Outcome:
        source = ctx.copy_source(key)
        target = source / inner
        outside = ctx.dir / ("outside_" + target.name)
        shutil.move(target, outside)
        target.symlink_to(outside, target_is_directory=folder)
        return converter_refusal(ctx, converter, source, [target.name], baseline, extra_inputs=[outside])
    return case


def case_511_link_inside(ctx: Context) -> Outcome:
    source = ctx.copy_source("src511")
    store = source / ".store"
    store.mkdir()
    shutil.move(source / "phantom_000" / "art.nii.gz", store / "art_of_phantom_000.nii.gz")
    (source / "phantom_000" / "art.nii.gz").symlink_to(Path("..") / ".store" / "art_of_phantom_000.nii.gz")
    shutil.move(source / "phantom_001", store / "phantom_001")
    (source / "phantom_001").symlink_to(store / "phantom_001", target_is_directory=True)
    return converter_success(ctx, "511", source, "base511")


def case_501_crafted_slice(ctx: Context) -> Outcome:
    import torch

    source = ctx.copy_source("src501")
    marker = ctx.dir / "CODE_RAN_501"
    slice_file = source / "train_img" / "pv" / "phantom_000" / "3.png"
    torch.save(CraftedPayload(marker), slice_file)
    out = ctx.dir / "nnUNet_raw"
    out.mkdir()
    before = snapshot([source])
    run = ctx.run(convert_argv("501", source, out))
    ran = f"payload ran: {marker.name} exists" if marker.exists() else None
    return judge_refusal(run, names=[("3.png", "phantom_000")],
                         changed_inputs=changed_files(before, snapshot([source])),
                         leftovers=sorted(visible_files(out)), code_ran=ran)


def case_501_cut_png(ctx: Context) -> Outcome:
    source = ctx.copy_source("src501")
    target = source / "train_img" / "art" / "phantom_001" / "4.png"
    cut(target, fraction=0.5)
    return converter_refusal(ctx, "501", source, [("4.png", "phantom_001")], "base501")


# -- concurrency, kills and --overwrite on converters


def case_two_converters_at_once(ctx: Context) -> Outcome:
    """Two conversions into the same target, started together, different sources, no --overwrite."""
    first, second = ctx.copy_source("src511", "first"), ctx.copy_source("src511_alt", "second")
    out = ctx.dir / "nnUNet_raw"
    out.mkdir()
    env = ctx.env()
    started = time.monotonic()
    processes = [start(convert_argv("511", source, out), env, ctx.dir, ctx._log()) for source in (first, second)]
    runs = [finish(p, convert_argv("511", s, out), o, e, started, timeout=ctx.timeout)
            for (p, o, e), s in zip(processes, (first, second))]
    ctx.runs.extend(runs)
    dataset = out / CONVERTED["511"]
    contents = dataset_contents(dataset) if dataset.is_dir() else None
    matches = {key: contents is not None and compare_contents(ctx.fixture(key)["contents"], contents) is None
               for key in ("base511", "base511_alt")}
    succeeded = [run for run in runs if run.returncode == 0]
    leftovers = hidden_leftovers(out)
    if len(succeeded) == 2:
        survivor = "first" if matches["base511"] else "second" if matches["base511_alt"] else "neither"
        return Outcome(DATA_LOST, f"both exited 0; the dataset holds the {survivor} run's data, the other "
                                  f"run's success was lost")
    if len(succeeded) == 1:
        winner = "base511" if succeeded[0] is runs[0] else "base511_alt"
        loser = runs[1] if succeeded[0] is runs[0] else runs[0]
        if not matches[winner]:
            return Outcome(DATA_LOST, "the successful run's dataset is not intact: "
                           + (compare_contents(ctx.fixture(winner)["contents"], contents) if contents else "gone"))
        ctx.notes.append(f"{'first' if winner == 'base511' else 'second'} run won")
        return judge_refusal(loser, names=[CONVERTED["511"]], leftovers=leftovers)
    for run in runs:
        if TRACEBACK_MARK in run.output:
            return Outcome(TRACEBACK, f"both runs failed; exit {run.returncode}; {traceback_summary(run.output)}")
    return Outcome(NOT_CLEAN, "both runs failed: " + " | ".join(first_error_line(run.output) for run in runs))


def _staging_present(out: Path) -> Callable[[], bool]:
    return lambda: out.is_dir() and any(p.name.startswith(".") and ("staging" in p.name or ".old" in p.name)
                                        for p in out.iterdir())


def case_kill_conversion(ctx: Context) -> Outcome:
    """SIGKILL a fresh conversion at a random moment of its write, then run it again."""
    source = ctx.copy_source("src511")
    out = ctx.dir / "nnUNet_raw"
    out.mkdir()
    before = snapshot([source])
    ctx.run_and_kill(convert_argv("511", source, out), delay=ctx.rng.uniform(0.0, 0.6),
                     trigger=_staging_present(out))
    dataset = out / CONVERTED["511"]
    expected = ctx.fixture("base511")["contents"]
    complete_after_kill = dataset.is_dir() and compare_contents(expected, dataset_contents(dataset)) is None
    if dataset.is_dir() and not complete_after_kill:
        return Outcome(DATA_LOST, "after the kill a half-written dataset stands at its name: "
                       + str(compare_contents(expected, dataset_contents(dataset))))
    ctx.notes.append("after the kill: " + ("complete dataset" if complete_after_kill else "no dataset") +
                     (f", hidden {hidden_leftovers(out)}" if hidden_leftovers(out) else ""))
    run = ctx.run(convert_argv("511", source, out))
    changed = changed_files(before, snapshot([source]))
    difference = compare_contents(expected, dataset_contents(dataset)) if dataset.is_dir() else "no dataset"
    if run.returncode != 0 and not dataset.is_dir():
        difference = None  # nothing was there to lose; the failed rerun is judged below
    if complete_after_kill and run.returncode != 0:  # the kill came too late: a clean "already exists" is right
        outcome = judge_refusal(run, names=[CONVERTED["511"]], changed_inputs=changed,
                                data_problem=f"dataset damaged by the rerun: {difference}" if difference else None,
                                leftovers=hidden_leftovers(out))
        return Outcome(HANDLED, "kill came after the end; rerun refused cleanly") if outcome.category == REFUSED \
            else outcome
    return judge_success(run, changed_inputs=changed,
                         data_problem=f"dataset after the rerun: {difference}" if difference else None,
                         leftovers=hidden_leftovers(out))


def _old_dataset(ctx: Context, out: Path) -> Path:
    """``out`` holding the dataset converted from the other source (the "old" one)."""
    dataset = out / CONVERTED["511"]
    shutil.copytree(ctx.fixture("base511_alt")["dataset"], dataset)
    return dataset


def case_kill_overwrite(ctx: Context) -> Outcome:
    """SIGKILL ``--overwrite`` of an existing dataset at a random moment of its write, then run it again."""
    source = ctx.copy_source("src511")
    out = ctx.dir / "nnUNet_raw"
    out.mkdir()
    dataset = _old_dataset(ctx, out)
    old, new = ctx.fixture("base511_alt")["contents"], ctx.fixture("base511")["contents"]
    before = snapshot([source])
    ctx.run_and_kill(convert_argv("511", source, out, "--overwrite"), delay=ctx.rng.uniform(0.0, 0.6),
                     trigger=_staging_present(out))
    if dataset.is_dir():
        contents = dataset_contents(dataset)
        state = "old" if compare_contents(old, contents) is None else "new" if compare_contents(new, contents) is \
            None else None
        if state is None:
            return Outcome(DATA_LOST, "after the kill the dataset is neither the old nor the new one: "
                           + str(compare_contents(new, contents)))
    else:
        olds = [p.name for p in out.iterdir() if ".old" in p.name]
        if not olds:
            return Outcome(DATA_LOST, "after the kill there is no dataset and no hidden old copy")
        state = f"none at its name (old one in {olds})"
    ctx.notes.append(f"after the kill: {state} dataset; hidden {hidden_leftovers(out)}")
    run = ctx.run(convert_argv("511", source, out, "--overwrite"))
    return judge_success(run, changed_inputs=changed_files(before, snapshot([source])),
                         data_problem=_after_overwrite_rerun(ctx, run, dataset), leftovers=hidden_leftovers(out))


def _after_overwrite_rerun(ctx: Context, run: Run, dataset: Path) -> str | None:
    """Data lost after rerunning ``--overwrite``? Exit 0: the dataset must be the new one. A failed rerun: the old
    one or the new one must stand at its name, complete."""
    new, old = ctx.fixture("base511")["contents"], ctx.fixture("base511_alt")["contents"]
    if not dataset.is_dir():
        hidden = [p.name for p in dataset.parent.iterdir() if ".old" in p.name]
        return f"exit {run.returncode}; no dataset at its name" + (f" (old one still in {hidden})" if hidden else
                                                                    ", and no old copy anywhere")
    contents = dataset_contents(dataset)
    difference = compare_contents(new, contents)
    if run.returncode == 0:
        return f"exit 0 but the dataset is not the new one: {difference}" if difference else None
    if difference and compare_contents(old, contents):
        return f"exit {run.returncode}; the dataset is neither the old nor the new one: {difference}"
    return None


def _interrupted_overwrite_state(ctx: Context, out: Path) -> Path:
    """What a kill between "move the old dataset aside" and "rename the new one in" leaves: no dataset at its
    name, the old one in a hidden ``.old-*`` folder, a complete-looking staging folder beside it."""
    dataset = _old_dataset(ctx, out)
    os.rename(dataset, out / f".{dataset.name}.old-0badc0de")
    staging = out / f".{dataset.name}.staging-0badc0de"
    shutil.copytree(ctx.fixture("base511")["dataset"], staging)
    (staging / "dataset.json").unlink()  # the staging folder is never complete (completion is the rename)
    return dataset


def case_interrupted_overwrite_rerun(ctx: Context) -> Outcome:
    source = ctx.copy_source("src511")
    out = ctx.dir / "nnUNet_raw"
    out.mkdir()
    dataset = _interrupted_overwrite_state(ctx, out)
    run = ctx.run(convert_argv("511", source, out, "--overwrite"))
    return judge_success(run, data_problem=_after_overwrite_rerun(ctx, run, dataset), leftovers=hidden_leftovers(out))


def case_interrupted_overwrite_without_flag(ctx: Context) -> Outcome:
    """The same state, then the command without ``--overwrite``: the old dataset must be back at its name (the run
    itself may then refuse because the dataset exists)."""
    source = ctx.copy_source("src511")
    out = ctx.dir / "nnUNet_raw"
    out.mkdir()
    dataset = _interrupted_overwrite_state(ctx, out)
    run = ctx.run(convert_argv("511", source, out))
    old = ctx.fixture("base511_alt")["contents"]
    if not dataset.is_dir():
        olds = [p.name for p in out.iterdir() if ".old" in p.name]
        if not olds:
            return Outcome(DATA_LOST, "the old dataset is gone (neither at its name nor in a hidden folder)")
        told = any(name in run.output for name in olds)
        return Outcome(NOT_CLEAN, f"exit {run.returncode}; the old dataset was not restored (still in {olds}; "
                                  f"the user was {'told' if told else 'not told'} where it is)")
    difference = compare_contents(old, dataset_contents(dataset))
    if difference:
        return Outcome(DATA_LOST, f"exit {run.returncode}; the dataset at its name is not the old one: {difference}")
    if run.returncode == 0:
        return Outcome(DATA_LOST, "exit 0 without --overwrite: the restored old dataset was replaced")
    outcome = judge_refusal(run, names=[CONVERTED["511"]], leftovers=hidden_leftovers(out))
    return Outcome(HANDLED, "old dataset restored; then refused cleanly: " + outcome.detail) \
        if outcome.category == REFUSED else outcome


def case_stale_staging(ctx: Context) -> Outcome:
    source = ctx.copy_source("src511")
    out = ctx.dir / "nnUNet_raw"
    out.mkdir()
    staging = out / f".{CONVERTED['511']}.staging-deadbeef"
    shutil.copytree(ctx.fixture("base511")["dataset"] / "imagesTr", staging / "imagesTr")
    run = ctx.run(convert_argv("511", source, out))
    dataset = out / CONVERTED["511"]
    difference = compare_contents(ctx.fixture("base511")["contents"], dataset_contents(dataset)) \
        if dataset.is_dir() else "no dataset"
    return judge_success(run, data_problem=f"{difference}" if difference and run.returncode == 0 else None,
                         leftovers=hidden_leftovers(out))


def case_existing_without_overwrite(ctx: Context) -> Outcome:
    source = ctx.copy_source("src511")
    out = ctx.dir / "nnUNet_raw"
    out.mkdir()
    dataset = _old_dataset(ctx, out)
    run = ctx.run(convert_argv("511", source, out))
    difference = compare_contents(ctx.fixture("base511_alt")["contents"], dataset_contents(dataset)) \
        if dataset.is_dir() else "the existing dataset is gone"
    return judge_refusal(run, names=[CONVERTED["511"]],
                         data_problem=f"existing dataset changed without --overwrite: {difference}" if difference
                         else None, leftovers=hidden_leftovers(out))


# -- preprocess-unlabeled


def unlabeled_refusal(damage: Callable[[Path], Path]) -> Callable[[Context], Outcome]:
    def case(ctx: Context) -> Outcome:
        workspace = ctx.workspace(unlabeled=True)
        damaged = damage(workspace.raw / "imagesUnl")
        before = snapshot([workspace.raw])
        run = ctx.run([tool("nnunet_mm"), "preprocess-unlabeled", "-d", str(DATASET_ID), "-c", CONFIGURATION],
                      env=workspace.env)
        output = workspace.preprocessed / "nnUNetPlans_2d_unlabeled"
        written = sorted(visible_files(output))
        data_problem = f"exit 0: preprocessed {len(written)} file(s) from the damaged case" \
            if run.returncode == 0 and written else None
        return judge_refusal(run, names=[damaged.name], changed_inputs=changed_files(before, snapshot([workspace.raw])),
                             data_problem=data_problem, leftovers=written)
    return case


def case_kill_preprocess_unlabeled(ctx: Context) -> Outcome:
    workspace = ctx.workspace(unlabeled=True)
    argv = [tool("nnunet_mm"), "preprocess-unlabeled", "-d", str(DATASET_ID), "-c", CONFIGURATION]
    ctx.run_and_kill(argv, delay=ctx.rng.uniform(0.5, 2.5), env=workspace.env)
    run = ctx.run(argv, env=workspace.env)
    output = workspace.preprocessed / "nnUNetPlans_2d_unlabeled"
    files = sorted(visible_files(output))
    expected = {f"{TEST_CASE}.b2nd", f"{TEST_CASE}.pkl"}
    problem = None if expected <= set(files) else f"exit 0 but the unlabeled folder holds {files}"
    return judge_success(run, data_problem=problem if run.returncode == 0 else None,
                         leftovers=hidden_leftovers(workspace.preprocessed))


# -- predict


def case_predict_replace_non_finite(ctx: Context) -> Outcome:
    help_run = ctx.run([tool("nnunet_mm"), "predict", "--help"])
    if "--replace-non-finite" not in help_run.stdout:
        return Outcome(NOT_CLEAN, "flag missing: nnunet_mm predict has no --replace-non-finite")
    workspace = ctx.workspace([MM])
    inputs = ctx.clean_input()
    damaged = voxel_channel(float("nan"))(inputs)
    out = ctx.dir / "pred"
    before = snapshot([inputs])
    run = ctx.run(predict_argv(inputs, out, "--replace-non-finite"), env=workspace.env)
    changed = changed_files(before, snapshot([inputs]))
    record_file = out / "missing_channels.json"
    check = None
    data_problem = None
    if run.returncode == 0:
        prediction = out / f"{TEST_CASE}.nii.gz"
        if not prediction.is_file():
            data_problem = "exit 0 but no prediction"
        elif not record_file.is_file():
            check = "no missing_channels.json"
        else:
            record = json.loads(record_file.read_text(encoding="utf-8")).get(TEST_CASE, {})
            replaced = record.get("non_finite_replaced")
            entries = list(replaced.values()) if isinstance(replaced, dict) else list(replaced or [])
            named = [entry for entry in entries if isinstance(entry, dict) and damaged.name in json.dumps(entry)]
            if not replaced:
                check = f"missing_channels.json does not record the replacement: {json.dumps(record)[:200]}"
            elif not any(entry.get("voxels") == 1 for entry in named):
                check = f"the record does not name {damaged.name} with 1 voxel: {json.dumps(replaced)[:200]}"
            else:
                array = image_entry(prediction)[0]
                if array.shape != ctx.fixture("base_pred")["prediction"].shape:
                    data_problem = f"prediction shape {array.shape}"
    return judge_success(run, changed_inputs=changed, data_problem=data_problem, check_problem=check,
                         required=[damaged.name])


def case_predict_4d(ctx: Context) -> Outcome:
    return predict_refusal(lambda folder: (make_4d(folder / f"{TEST_CASE}_0001.nii.gz"),
                                           folder / f"{TEST_CASE}_0001.nii.gz")[1])(ctx)


def _other_shape(folder: Path) -> Path:
    import SimpleITK as sitk

    target = folder / f"{TEST_CASE}_0001.nii.gz"
    image = sitk.ReadImage(str(target))
    array = sitk.GetArrayFromImage(image)
    bigger = sitk.GetImageFromArray(np.concatenate([array, array], axis=0))
    bigger.SetSpacing(image.GetSpacing())
    bigger.SetOrigin(image.GetOrigin())
    bigger.SetDirection(image.GetDirection())
    sitk.WriteImage(bigger, str(target))
    return target


def model_refusal(damage: Callable[[Path, Context], Path], *, command: str = "predict", trainer: str = MM
                  ) -> Callable[[Context], Outcome]:
    """A model folder with a damaged or crafted checkpoint, used by ``nnunet_mm predict -m`` or ``cmg-maps -m``."""
    def case(ctx: Context) -> Outcome:
        workspace = ctx.workspace([trainer])
        model = model_folder(workspace.results, trainer)
        marker = ctx.dir / "CODE_RAN"
        damaged = damage(model / "fold_0", ctx)
        inputs = ctx.clean_input()
        out = ctx.dir / "pred"
        before = snapshot([inputs, model])
        if command == "predict":
            argv = predict_argv(inputs, out, model=model)
        else:
            out.mkdir()
            argv = [tool("nnunet_mm"), "cmg-maps", "-i", str(inputs), "--case", TEST_CASE, "-o",
                    str(out / "maps.png"), "-m", str(model), "-device", "cpu"]
        run = ctx.run(argv, env=workspace.env)
        ran = f"payload ran: {marker.name} exists" if marker.exists() else None
        data_problem = prediction_problem(ctx, out) if run.returncode == 0 and command == "predict" else None
        left = sorted(f for f in visible_files(out) if f.endswith((".nii.gz", ".png"))) + hidden_leftovers(out)
        return judge_refusal(run, names=[damaged.name], changed_inputs=changed_files(before, snapshot([inputs, model])),
                             data_problem=data_problem, leftovers=left, code_ran=ran)
    return case


def crafted_checkpoint(fold: Path, ctx: Context) -> Path:
    """Replace checkpoint_final.pth by a real-looking checkpoint that carries a payload (the bench's own file, so
    reading the original with pickle is safe)."""
    import torch

    target = fold / "checkpoint_final.pth"
    content = torch.load(target, map_location="cpu", weights_only=False)
    content["nnunet_mm_payload"] = CraftedPayload(ctx.dir / "CODE_RAN")
    torch.save(content, target)
    return target


def cut_checkpoint(fraction: float) -> Callable[[Path, Context], Path]:
    def damage(fold: Path, ctx: Context) -> Path:
        target = fold / "checkpoint_final.pth"
        cut(target, fraction=fraction)
        return target
    return damage


def case_predict_symlinked_channel(ctx: Context) -> Outcome:
    workspace = ctx.workspace([MM])
    inputs = ctx.clean_input()
    store = ctx.dir / "store"
    store.mkdir()
    channel = inputs / f"{TEST_CASE}_0001.nii.gz"
    shutil.move(channel, store / channel.name)
    channel.symlink_to(store / channel.name)
    out = ctx.dir / "pred"
    before = snapshot([inputs, store])
    run = ctx.run(predict_argv(inputs, out), env=workspace.env)
    problem = prediction_problem(ctx, out) if run.returncode == 0 else None
    return judge_success(run, changed_inputs=changed_files(before, snapshot([inputs, store])), data_problem=problem)


def case_kill_predict(ctx: Context) -> Outcome:
    workspace = ctx.workspace([MM])
    inputs = ctx.clean_input()
    out = ctx.dir / "pred"
    ctx.run_and_kill(predict_argv(inputs, out), delay=ctx.rng.uniform(1.0, 6.0), env=workspace.env)
    run = ctx.run(predict_argv(inputs, out), env=workspace.env)
    problem = prediction_problem(ctx, out) if run.returncode == 0 else None
    return judge_success(run, data_problem=problem, leftovers=hidden_leftovers(out))


def _without_reference(folder: Path) -> Path:
    target = folder / f"{TEST_CASE}_0000.nii.gz"
    target.unlink()
    return target


def case_compare_cut_prediction(ctx: Context) -> Outcome:
    """``nnunet_mm compare`` reads predictions: one of them cut short must be refused, naming it."""
    workspace = ctx.workspace()
    source = Path(ctx.fixture("base_pred")["folder"])
    arms = {}
    for arm in ("A", "B"):
        arms[arm] = ctx.dir / f"pred_{arm}"
        arms[arm].mkdir()
        shutil.copyfile(source / f"{TEST_CASE}.nii.gz", arms[arm] / f"{TEST_CASE}.nii.gz")
    damaged = arms["B"] / f"{TEST_CASE}.nii.gz"
    cut(damaged, fraction=0.5)

    def compare(out: Path) -> Run:
        return ctx.run([tool("nnunet_mm"), "compare", "--arm", f"A={arms['A']}", "--arm", f"B={arms['B']}",
                        "--ref", str(workspace.raw / "labelsTs"), "-o", str(out), "--resamples", "200"],
                       env=workspace.env)

    inputs = [arms["A"], arms["B"], workspace.raw]
    before = snapshot(inputs)
    run = compare(ctx.dir / "report")
    changed = changed_files(before, snapshot(inputs))
    data_problem = None
    if run.returncode == 0:  # what the undamaged prediction gives: does the report differ?
        shutil.copyfile(source / f"{TEST_CASE}.nii.gz", damaged)
        reference = compare(ctx.dir / "report_undamaged")
        ctx.runs.pop()
        read = lambda folder: json.loads((folder / "compare.json").read_text(encoding="utf-8")).get("summary", {})  # noqa: E731
        damaged_summary, undamaged_summary = read(ctx.dir / "report"), read(ctx.dir / "report_undamaged")
        if reference.returncode == 0 and damaged_summary != undamaged_summary:
            dice = [f"{label} Dice of B {damaged_summary[label]['B'].get('dice_mean', float('nan')):.3f} instead "
                    f"of {undamaged_summary[label]['B'].get('dice_mean', float('nan')):.3f}"
                    for label in undamaged_summary if label in damaged_summary and "B" in undamaged_summary[label]]
            data_problem = "exit 0; the report differs from the undamaged prediction's: " + "; ".join(dice)
    left = sorted(visible_files(ctx.dir / "report"))
    return judge_refusal(run, names=[damaged.name], changed_inputs=changed, data_problem=data_problem, leftovers=left)


def case_output_inside_source(ctx: Context) -> Outcome:
    source = ctx.copy_source("src511")
    before = snapshot([source])
    run = ctx.run(convert_argv("511", source, source / "out"))
    changed = changed_files(before, snapshot([source]))
    return judge_refusal(run, names=[source.name], changed_inputs=changed,
                         leftovers=["out"] if (source / "out").exists() else [])


def case_two_overwrites_at_once(ctx: Context) -> Outcome:
    """Two ``--overwrite`` conversions of different sources into an existing dataset, started together: the
    dataset must end up complete (one of the two), no hidden folder left, and a run that loses must say so."""
    first, second = ctx.copy_source("src511", "first"), ctx.copy_source("src511_alt", "second")
    out = ctx.dir / "nnUNet_raw"
    out.mkdir()
    dataset = _old_dataset(ctx, out)
    env = ctx.env()
    started = time.monotonic()
    argvs = [convert_argv("511", source, out, "--overwrite") for source in (first, second)]
    processes = [start(argv, env, ctx.dir, ctx._log()) for argv in argvs]
    runs = [finish(p, argv, o, e, started, timeout=ctx.timeout) for (p, o, e), argv in zip(processes, argvs)]
    ctx.runs.extend(runs)
    if not dataset.is_dir():
        return Outcome(DATA_LOST, "no dataset at its name after two --overwrite runs")
    contents = dataset_contents(dataset)
    complete = [key for key in ("base511", "base511_alt") if compare_contents(ctx.fixture(key)["contents"],
                                                                              contents) is None]
    if not complete:
        return Outcome(DATA_LOST, "the dataset is neither run's: "
                       + str(compare_contents(ctx.fixture("base511")["contents"], contents)))
    for run in runs:
        if TRACEBACK_MARK in run.output:
            return Outcome(TRACEBACK, f"exit {run.returncode}; {traceback_summary(run.output)}")
    failed = [run for run in runs if run.returncode != 0]
    if len(failed) == 2:
        return Outcome(NOT_CLEAN, "both runs failed: " + " | ".join(first_error_line(r.output) for r in runs))
    if failed:
        outcome = judge_refusal(failed[0], names=[CONVERTED["511"]], leftovers=hidden_leftovers(out))
        return Outcome(HANDLED, "one replaced the dataset, the other was refused cleanly") \
            if outcome.category == REFUSED else outcome
    leftovers = hidden_leftovers(out)
    if leftovers:
        return Outcome(NOT_CLEAN, "left behind: " + ", ".join(leftovers))
    return Outcome(HANDLED, "both replaced the dataset in turn; it is complete")


# -- crafted pickles in preprocessed folders and checkpoints


def _crafted_pkl(ctx: Context, workspace: Workspace) -> Path:
    target = workspace.preprocessed / "nnUNetPlans_2d" / "phantom_001.pkl"
    with open(target, "rb") as handle:
        properties = pickle.load(handle)  # written by the bench's own preprocessing run
    properties["nnunet_mm_payload"] = CraftedPayload(ctx.dir / "CODE_RAN")
    target.write_bytes(pickle.dumps(properties))
    return target


def case_synth_stats_crafted_pkl(ctx: Context) -> Outcome:
    workspace = ctx.workspace()
    crafted = _crafted_pkl(ctx, workspace)
    stats = ctx.dir / "stats.json"
    before = snapshot([workspace.preprocessed])
    run = ctx.run([tool("nnunet_mm"), "synth-stats", "-d", str(DATASET_ID), "-c", CONFIGURATION, "-o", str(stats)],
                  env=workspace.env)
    ran = "payload ran: CODE_RAN exists" if (ctx.dir / "CODE_RAN").exists() else None
    return judge_refusal(run, names=[crafted.name],
                         changed_inputs=changed_files(before, snapshot([workspace.preprocessed])),
                         leftovers=[stats.name] if stats.exists() else [], code_ran=ran)


def case_train_crafted_pkl(ctx: Context) -> Outcome:
    workspace = ctx.workspace()
    crafted = _crafted_pkl(ctx, workspace)
    run = ctx.run(train_argv(MM), env=workspace.env)
    ran = "payload ran: CODE_RAN exists" if (ctx.dir / "CODE_RAN").exists() else None
    return judge_refusal(run, names=[crafted.name], leftovers=checkpoint_files(workspace.fold(MM)), code_ran=ran)


def case_cmc_crafted_unlabeled_pkl(ctx: Context) -> Outcome:
    """CMCTrainer reads the preprocessed unlabeled cases: a crafted ``.pkl`` there must be refused too."""
    workspace = ctx.workspace(unlabeled=True)
    prepared = ctx.run([tool("nnunet_mm"), "preprocess-unlabeled", "-d", str(DATASET_ID), "-c", CONFIGURATION],
                       env=workspace.env)
    target = workspace.preprocessed / "nnUNetPlans_2d_unlabeled" / f"{TEST_CASE}.pkl"
    if prepared.returncode != 0 or not target.is_file():
        raise SetupFailed(f"preprocess-unlabeled failed: {first_error_line(prepared.output)}")
    ctx.runs.pop()
    with open(target, "rb") as handle:
        properties = pickle.load(handle)  # written just now by the plugin's own preprocessing
    properties["nnunet_mm_payload"] = CraftedPayload(ctx.dir / "CODE_RAN")
    target.write_bytes(pickle.dumps(properties))
    run = ctx.run(train_argv("CMCTrainer_debug"), env=workspace.env)
    ran = "payload ran: CODE_RAN exists" if (ctx.dir / "CODE_RAN").exists() else None
    return judge_refusal(run, names=[target.name], code_ran=ran,
                         leftovers=checkpoint_files(workspace.fold("CMCTrainer_debug")))


def case_continue_crafted_checkpoint(ctx: Context) -> Outcome:
    import torch

    workspace = ctx.workspace([MM])
    fold = workspace.fold(MM)
    latest = pretend_killed_while_writing_latest(fold, empty=False)
    content = torch.load(fold / "checkpoint_best.pth", map_location="cpu", weights_only=False)  # the bench's own
    content["nnunet_mm_payload"] = CraftedPayload(ctx.dir / "CODE_RAN")
    torch.save(content, latest)
    run = ctx.run(train_argv(MM, "--c"), env=workspace.env)
    ran = "payload ran: CODE_RAN exists" if (ctx.dir / "CODE_RAN").exists() else None
    return judge_refusal(run, names=[latest.name], code_ran=ran,
                         leftovers=["checkpoint_final.pth"] if (fold / "checkpoint_final.pth").exists() else [])


# -- settings


def settings_refusal(edit: Callable[[dict], None], key: str, *, only_preprocessed: bool = False
                     ) -> Callable[[Context], Outcome]:
    def case(ctx: Context) -> Outcome:
        workspace = ctx.workspace()
        files = [workspace.preprocessed / "dataset.json"]
        if not only_preprocessed:
            files.append(workspace.raw / "dataset.json")
        for file in files:
            edit_block(file, edit)
        file_token: str | tuple[str, ...] = f"nnUNet_preprocessed/{DATASET}/dataset.json" if only_preprocessed \
            else "dataset.json"
        run = ctx.run(train_argv(MM), env=workspace.env, timeout=240)
        return judge_refusal(run, names=[file_token, key], leftovers=checkpoint_files(workspace.fold(MM)))
    return case


# -- environment: permissions and full disks


_RESTRICT_LOCK = threading.Lock()
_RESTRICT_STATE: dict[str, Any] = {}
#: for root: setpriv without the two capabilities that let root ignore file permissions (the files stay root's, so
#: their owner bits apply, e.g. 0o555 forbids writing)
SETPRIV_ARGS = ["--bounding-set", "-dac_override,-dac_read_search", "--inh-caps", "-dac_override,-dac_read_search",
                "--"]


def permissions_apply(ctx: Context) -> list[str]:
    """The argv prefix under which file permissions apply to the command: nothing when this script is not root;
    for root, ``setpriv`` dropping CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH (root ignores permissions otherwise).
    Skip when that cannot be arranged (checked once: a write into a 0o555 folder must fail, the commands must
    still run)."""
    if not sys.platform.startswith("linux"):
        raise Skip("permission cases need Linux")
    if os.geteuid() != 0:
        return []
    with _RESTRICT_LOCK:
        if "prefix" not in _RESTRICT_STATE:
            _RESTRICT_STATE["prefix"], _RESTRICT_STATE["reason"] = None, None
            setpriv = shutil.which("setpriv")
            if setpriv is None:
                _RESTRICT_STATE["reason"] = "running as root (permissions do not apply) and no setpriv to drop " \
                                            "CAP_DAC_OVERRIDE"
            else:
                prefix = [setpriv, *SETPRIV_ARGS]
                probe = ctx.dir / "permission_probe"
                probe.mkdir()
                probe.chmod(0o555)
                denied = subprocess.run([*prefix, "sh", "-c", f"touch {shlex.quote(str(probe / 'x'))}"],
                                        capture_output=True).returncode != 0
                probe.chmod(0o755)
                works = subprocess.run([*prefix, tool("nnunet_mm"), "convert", "list"], capture_output=True,
                                       env=ctx.env()).returncode == 0
                if denied and works:
                    _RESTRICT_STATE["prefix"] = prefix
                else:
                    _RESTRICT_STATE["reason"] = "running as root and setpriv without CAP_DAC_OVERRIDE " + \
                        ("does not make permissions apply" if not denied else "cannot run the commands")
    if _RESTRICT_STATE["reason"]:
        raise Skip(_RESTRICT_STATE["reason"])
    return list(_RESTRICT_STATE["prefix"])


def case_convert_read_only_output(ctx: Context) -> Outcome:
    prefix = permissions_apply(ctx)
    source = ctx.copy_source("src511")
    out = ctx.dir / "read_only_output"
    out.mkdir()
    out.chmod(0o555)
    before = snapshot([source])
    run = ctx.run([*prefix, *convert_argv("511", source, out)])
    out.chmod(0o755)
    return judge_refusal(run, names=[out.name], changed_inputs=changed_files(before, snapshot([source])),
                         leftovers=sorted(visible_files(out)) + hidden_leftovers(out))


def case_convert_unreadable_input(ctx: Context) -> Outcome:
    prefix = permissions_apply(ctx)
    source = ctx.copy_source("src511")
    target = source / "phantom_001" / "del.nii.gz"
    target.chmod(0o000)
    out = ctx.dir / "nnUNet_raw"
    out.mkdir()
    run = ctx.run([*prefix, *convert_argv("511", source, out)])
    target.chmod(0o644)
    return judge_refusal(run, names=[target.name], leftovers=sorted(visible_files(out)) + hidden_leftovers(out))


def case_predict_read_only_output(ctx: Context) -> Outcome:
    prefix = permissions_apply(ctx)
    workspace = ctx.workspace([MM])
    inputs = ctx.clean_input()
    out = ctx.dir / "read_only_output"
    out.mkdir()
    out.chmod(0o555)
    run = ctx.run([*prefix, *predict_argv(inputs, out)], env=workspace.env)
    out.chmod(0o755)
    return judge_refusal(run, names=[out.name], leftovers=sorted(visible_files(out)))


@contextlib.contextmanager
def small_tmpfs(path: Path, size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` at ``path`` (needs root and mount rights; Skip otherwise)."""
    if not sys.platform.startswith("linux") or shutil.which("mount") is None:
        raise Skip("no 'mount' command (Linux tmpfs needed for the full-disk cases)")
    if os.geteuid() != 0:
        raise Skip("not root: cannot mount a small tmpfs for the full-disk cases")
    path.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0777", "tmpfs", str(path)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise Skip(f"cannot mount a small tmpfs here: {(done.stderr or done.stdout).strip()[:200]}")
    try:
        yield path
    finally:
        if subprocess.run(["umount", str(path)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(path)], capture_output=True)


def fill(folder: Path) -> None:
    """Fill the file system of ``folder`` up to the last byte."""
    with open(folder / "filler.bin", "wb", buffering=0) as handle:
        for size in (65536, 4096, 512, 1):
            while True:
                try:
                    handle.write(b"\0" * size)
                except OSError as error:
                    if error.errno != errno.ENOSPC:
                        raise
                    break


def case_convert_full_disk(ctx: Context) -> Outcome:
    source = ctx.copy_source("src511")
    with small_tmpfs(ctx.dir / "full_disk", "48k") as out:
        before = snapshot([source])
        run = ctx.run(convert_argv("511", source, out))
        dataset = out / CONVERTED["511"]
        data_problem = None
        if run.returncode == 0:
            difference = compare_contents(ctx.fixture("base511")["contents"], dataset_contents(dataset)) \
                if dataset.is_dir() else "no dataset"
            data_problem = f"exit 0 on a full disk: {difference}" if difference else None
        left = sorted(visible_files(out)) + hidden_leftovers(out)
        return judge_refusal(run, names=[(out.name, CONVERTED["511"])],
                             changed_inputs=changed_files(before, snapshot([source])), data_problem=data_problem,
                             leftovers=left)


def case_predict_full_disk(ctx: Context) -> Outcome:
    workspace = ctx.workspace([MM])
    inputs = ctx.clean_input()
    with small_tmpfs(ctx.dir / "full_disk", "64k") as out:
        fill(out)
        run = ctx.run(predict_argv(inputs, out), env=workspace.env)
        data_problem = prediction_problem(ctx, out) if run.returncode == 0 else None
        left = sorted(f for f in visible_files(out) if f != "filler.bin") + hidden_leftovers(out)
        return judge_refusal(run, names=[(out.name, TEST_CASE)], data_problem=data_problem, leftovers=left)


# -- the list


def all_cases(repeats: int) -> list[Case]:
    """Every case; ``quick=True`` marks the representative subset of ``--quick``."""
    S511, B511 = ("src511", "base511"), ("src511", "base511")
    cases = [
        # 1. truncated / non-finite / malformed images in converters
        Case("convert 511: phase .nii.gz cut to 10 %", "convert", "refuse",
             damaged_511("phantom_000/pv.nii.gz", lambda p: cut(p, fraction=0.1)), B511),
        Case("convert 511: phase .nii.gz cut to 50 %", "convert", "refuse",
             damaged_511("phantom_000/pv.nii.gz", lambda p: cut(p, fraction=0.5)), B511, quick=True),
        Case("convert 511: phase .nii.gz cut to 90 %", "convert", "refuse",
             damaged_511("phantom_001/art.nii.gz", lambda p: cut(p, fraction=0.9)), B511),
        Case("convert 511: phase .nii.gz without its last 40 bytes", "convert", "refuse",
             damaged_511("phantom_001/art.nii.gz", lambda p: cut(p, drop_last=40)), B511),
        Case("convert 511: phase .nii.gz empty (0 bytes)", "convert", "refuse",
             damaged_511("phantom_000/del.nii.gz", lambda p: cut(p, fraction=0.0)), B511),
        Case("convert 511: phase .nii.gz with one byte flipped", "convert", "refuse",
             damaged_511("phantom_000/nc.nii.gz", flip_middle_byte), B511),
        Case("convert 511: label .nii.gz without its last 40 bytes", "convert", "refuse",
             damaged_511("phantom_000/label.nii.gz", lambda p: cut(p, drop_last=40)), B511, quick=True),
        Case("convert 511: label .nii.gz cut to 50 %", "convert", "refuse",
             damaged_511("phantom_001/label.nii.gz", lambda p: cut(p, fraction=0.5)), B511),
        Case("convert 511: uncompressed phase .nii cut to 50 %", "convert", "refuse",
             damaged_511("phantom_000/pv.nii", lambda p: cut(p, fraction=0.5), key="src511_nii",
                         baseline="base511_nii"), ("src511_nii", "base511_nii"), quick=True),
        Case("convert 511: uncompressed label .nii without its last 40 bytes", "convert", "refuse",
             damaged_511("phantom_001/label.nii", lambda p: cut(p, drop_last=40), key="src511_nii",
                         baseline="base511_nii"), ("src511_nii", "base511_nii")),
        Case("convert 511: NaN voxel in a phase", "convert", "refuse",
             damaged_511("phantom_000/art.nii.gz", lambda p: put_voxel(p, float("nan"))), B511, quick=True),
        Case("convert 511: +inf voxel in a phase", "convert", "refuse",
             damaged_511("phantom_001/pv.nii.gz", lambda p: put_voxel(p, float("inf"))), B511),
        Case("convert 511: 4D phase image", "convert", "refuse",
             damaged_511("phantom_000/del.nii.gz", make_4d), B511),
        Case("convert 511: label with an unknown value 7", "convert", "refuse",
             damaged_511("phantom_000/label.nii.gz", lambda p: put_voxel(p, 7, float_copy=False)), B511),
        Case("convert 510: uncompressed volume .nii cut to 50 %", "convert", "refuse",
             damaged_510("Training Batch 1/volume-1.nii", lambda p: cut(p, fraction=0.5)), ("src510", "base510"),
             quick=True),
        Case("convert 510: segmentation .nii without its last 40 bytes", "convert", "refuse",
             damaged_510("Training Batch 1/segmentation-0.nii", lambda p: cut(p, drop_last=40)),
             ("src510", "base510")),
        Case("convert 510: test volume .nii cut to 90 %", "convert", "refuse",
             damaged_510("LITS-Challenge-Test-Data/test-volume-0.nii", lambda p: cut(p, fraction=0.9)),
             ("src510", "base510")),
        Case("convert 510: NaN voxel in a volume", "convert", "refuse",
             damaged_510("Training Batch 1/volume-0.nii", lambda p: put_voxel(p, float("nan"))),
             ("src510", "base510")),
        Case("convert 501: PNG slice cut to 50 %", "convert", "refuse", case_501_cut_png, ("src501", "base501")),
        # 7. archives and symbolic links
        Case("convert 511: .zip source", "archive/link", "succeed", _case_zip_source("511", "src511", "base511"),
             B511, quick=True),
        Case("convert 511: .tar.gz source", "archive/link", "succeed",
             _case_zip_source("511", "src511", "base511", "gztar"), B511),
        Case("convert 510: .zip source", "archive/link", "succeed", _case_zip_source("510", "src510", "base510"),
             ("src510", "base510")),
        Case("convert 501: .zip source", "archive/link", "succeed", _case_zip_source("501", "src501", "base501"),
             ("src501", "base501")),
        Case("convert 511: .zip with a '../' member", "archive/link", "refuse",
             _case_zip_escaping_member("511", "src511", "base511"), B511, quick=True),
        Case("convert 510: .zip with a '../' member", "archive/link", "refuse",
             _case_zip_escaping_member("510", "src510", "base510"), ("src510", "base510")),
        Case("convert 511: .tar with a link member leading outside", "archive/link", "refuse",
             case_511_tar_with_link_out, B511),
        Case("convert 511: .zip cut to 50 %", "archive/link", "refuse", case_511_zip_cut, B511),
        Case("convert 511: .zip whose phase member is cut", "archive/link", "refuse", case_511_zip_with_cut_member,
             B511),
        Case("convert 511: phase file is a link leading outside", "archive/link", "refuse",
             _link_out("511", "src511", "base511", "phantom_000/art.nii.gz"), B511, quick=True),
        Case("convert 511: case folder is a link leading outside", "archive/link", "refuse",
             _link_out("511", "src511", "base511", "phantom_001", folder=True), B511),
        Case("convert 510: volume is a link leading outside", "archive/link", "refuse",
             _link_out("510", "src510", "base510", "Training Batch 1/volume-0.nii"), ("src510", "base510")),
        Case("convert 501: PNG slice is a link leading outside", "archive/link", "refuse",
             _link_out("501", "src501", "base501", "train_img/pv/phantom_000/2.png"), ("src501", "base501"),
             quick=True),
        Case("convert 511: links that stay inside the source", "archive/link", "succeed", case_511_link_inside,
             B511),
        # 4. concurrent writers, kills, --overwrite
        Case("convert 511: dataset exists, no --overwrite", "overwrite/kill", "refuse",
             case_existing_without_overwrite, ("src511", "base511_alt")),
        Case("convert 511: interrupted --overwrite, rerun with --overwrite", "overwrite/kill", "succeed",
             case_interrupted_overwrite_rerun, ("src511", "base511", "base511_alt"), quick=True),
        Case("convert 511: interrupted --overwrite, rerun without it", "overwrite/kill", "succeed",
             case_interrupted_overwrite_without_flag, ("src511", "base511", "base511_alt")),
        Case("convert 511: stale staging folder of a killed run", "overwrite/kill", "succeed", case_stale_staging,
             B511),
        Case("convert 511: two --overwrite converters at once", "overwrite/kill", "succeed",
             case_two_overwrites_at_once, ("src511", "src511_alt", "base511", "base511_alt")),
        Case("convert 511: output folder inside the source", "overwrite/kill", "refuse", case_output_inside_source,
             ("src511",)),
        # 2. preprocess-unlabeled
        Case("preprocess-unlabeled: channel cut to 50 %", "preprocess-unlabeled", "refuse",
             unlabeled_refusal(cut_channel(fraction=0.5)), ("planned",), quick=True),
        Case("preprocess-unlabeled: NaN voxel", "preprocess-unlabeled", "refuse",
             unlabeled_refusal(voxel_channel(float("nan"))), ("planned",)),
        Case("preprocess-unlabeled: killed at random, rerun", "preprocess-unlabeled", "succeed",
             case_kill_preprocess_unlabeled, ("planned",)),
        # 3. predict
        Case("predict: channel cut to 50 %", "predict", "refuse", predict_refusal(cut_channel(fraction=0.5)),
             ("base_pred",), quick=True),
        Case("predict: channel without its last 40 bytes", "predict", "refuse",
             predict_refusal(cut_channel(drop_last=40)), ("base_pred",)),
        Case("predict: NaN voxel", "predict", "refuse", predict_refusal(voxel_channel(float("nan"))),
             ("base_pred",), quick=True),
        Case("predict: -inf voxel", "predict", "refuse", predict_refusal(voxel_channel(float("-inf"))),
             ("base_pred",)),
        Case("predict: NaN voxel with --replace-non-finite", "predict", "succeed", case_predict_replace_non_finite,
             ("base_pred",), quick=True),
        Case("predict: 4D channel image", "predict", "refuse", case_predict_4d, ("base_pred",), quick=True),
        Case("predict: channels of different shapes", "predict", "refuse", predict_refusal(_other_shape),
             ("base_pred",)),
        Case("predict: checkpoint_final.pth cut to 50 %", "predict", "refuse", model_refusal(cut_checkpoint(0.5)),
             ("base_pred",), quick=True),
        Case("predict: checkpoint_final.pth empty", "predict", "refuse", model_refusal(cut_checkpoint(0.0)),
             ("base_pred",)),
        Case("predict: channel file is a link", "predict", "succeed", case_predict_symlinked_channel,
             ("base_pred",)),
        Case("predict: reference channel file missing", "predict", "refuse", predict_refusal(_without_reference),
             ("base_pred",)),
        Case("compare: a prediction cut to 50 %", "compare", "refuse", case_compare_cut_prediction,
             ("base_pred",), quick=True),
        # 6. crafted pickles
        Case("crafted: predict -m with a crafted checkpoint_final.pth", "crafted pickle", "refuse",
             model_refusal(crafted_checkpoint), ("base_pred",), quick=True),
        Case("crafted: cmg-maps -m with a crafted checkpoint_final.pth", "crafted pickle", "refuse",
             model_refusal(crafted_checkpoint, command="cmg-maps", trainer=CMG), ("cmg_model", "base_pred")),
        Case("crafted: synth-stats on a crafted case .pkl", "crafted pickle", "refuse",
             case_synth_stats_crafted_pkl, ("planned",), quick=True),
        Case("crafted: nnUNetv2_train on a crafted case .pkl", "crafted pickle", "refuse", case_train_crafted_pkl,
             ("planned",)),
        Case("crafted: CMCTrainer on a crafted unlabeled .pkl", "crafted pickle", "refuse",
             case_cmc_crafted_unlabeled_pkl, ("planned",)),
        Case("crafted: nnUNetv2_train --c with a crafted checkpoint_latest.pth", "crafted pickle", "refuse",
             case_continue_crafted_checkpoint, ("mm_model",)),
        Case("crafted: convert 501 with a torch-saved payload as slice", "crafted pickle", "refuse",
             case_501_crafted_slice, ("src501",)),
        # 5. checkpoints
        Case("checkpoint MM: latest cut (killed mid-write), --c", "checkpoint", "succeed",
             continue_from_damage(MM, latest_damaged(empty=False)), ("mm_model",), quick=True),
        Case("checkpoint MM: latest empty, --c", "checkpoint", "succeed",
             continue_from_damage(MM, latest_damaged(empty=True)), ("mm_model",)),
        Case("checkpoint MM: final cut, --c", "checkpoint", "succeed", continue_from_damage(MM, final_cut),
             ("mm_model",)),
        Case("checkpoint MM: every checkpoint broken, --c", "checkpoint", "refuse", all_checkpoints_broken(MM),
             ("mm_model",), quick=True),
        Case("checkpoint weak: latest cut (killed mid-write), --c", "checkpoint", "succeed",
             continue_from_damage(WEAK, latest_damaged(empty=False)), ("weak_model",)),
        Case("checkpoint weak: every checkpoint broken, --c", "checkpoint", "refuse", all_checkpoints_broken(WEAK),
             ("weak_model",)),
        Case("checkpoint CMG: latest empty (killed mid-write), --c", "checkpoint", "succeed",
             continue_from_damage(CMG, latest_damaged(empty=True)), ("cmg_model",)),
        Case("checkpoint MM: training killed during a checkpoint write, --c", "checkpoint", "succeed",
             kill_training(MM, during_checkpoint_write=True), ("planned",)),
        Case("checkpoint weak: training killed during a checkpoint write, --c", "checkpoint", "succeed",
             kill_training(WEAK, during_checkpoint_write=True), ("planned",)),
        Case("checkpoint MM: training killed at a random time, --c", "checkpoint", "succeed",
             kill_training(MM, during_checkpoint_write=False), ("planned",)),
        # 8. settings
        Case("settings: misalignment probability \"0.5\" (string)", "settings", "refuse",
             settings_refusal(lambda b: b.update(misalignment={"probability": "0.5"}), "probability"), ("planned",),
             quick=True),
        Case("settings: modality_dropout probability true", "settings", "refuse",
             settings_refusal(lambda b: b.update(modality_dropout={"probability": True}), "probability"),
             ("planned",)),
        Case("settings: max_translation_mm 1e308", "settings", "refuse",
             settings_refusal(lambda b: b.update(misalignment={"max_translation_mm": [1e308, 3, 3]}),
                              "max_translation_mm"), ("planned",)),
        Case("settings: elastic_control_points 100000", "settings", "refuse",
             settings_refusal(lambda b: b.update(misalignment={"elastic_control_points": 100000}),
                              "elastic_control_points"), ("planned",)),
        Case("settings: bad value only in the preprocessed copy", "settings", "refuse",
             settings_refusal(lambda b: b.update(misalignment={"probability": 2.5}), "probability",
                              only_preprocessed=True), ("planned",)),
        # 9. environment
        Case("environment: convert into a read-only folder", "environment", "refuse", case_convert_read_only_output,
             S511),
        Case("environment: convert with an unreadable phase file", "environment", "refuse",
             case_convert_unreadable_input, S511),
        Case("environment: predict into a read-only folder", "environment", "refuse", case_predict_read_only_output,
             ("base_pred",)),
        Case("environment: convert onto a full disk (48 kB tmpfs)", "environment", "refuse", case_convert_full_disk,
             B511, quick=True),
        Case("environment: predict onto a full disk (tmpfs)", "environment", "refuse", case_predict_full_disk,
             ("base_pred",)),
    ]
    for index in range(repeats):
        cases += [
            Case(f"convert 511: two converters at once #{index + 1}", "overwrite/kill", "refuse",
                 case_two_converters_at_once, ("src511", "src511_alt", "base511", "base511_alt"), quick=index == 0),
            Case(f"convert 511: killed at random, rerun #{index + 1}", "overwrite/kill", "succeed",
                 case_kill_conversion, B511, quick=index == 0),
            Case(f"convert 511: --overwrite killed at random, rerun #{index + 1}", "overwrite/kill", "succeed",
                 case_kill_overwrite, ("src511", "base511", "base511_alt")),
        ]
    cases.append(Case("predict: killed at random, rerun", "predict", "succeed", case_kill_predict, ("base_pred",)))
    # cases run in the order their inputs become ready (the set-up thread builds the fixtures in Fixtures.ORDER)
    ready = {name: index for index, name in enumerate(Fixtures.ORDER)}
    return sorted(cases, key=lambda case: max((ready[need] for need in case.needs), default=-1))


# ----------------------------------------------------------------------------------------------------------------
# running, reporting


def run_case(case: Case, root: Path, fixtures: Fixtures, seed: int, timeout: float, index: int, total: int,
             keep: bool) -> CaseResult:
    folder = root / f"case{index:03d}"
    folder.mkdir()
    ctx = Context(case, folder, fixtures, seed, timeout)
    started = time.monotonic()
    try:
        outcome = case.run(ctx)
        category, detail = outcome.category, outcome.detail
    except Skip as reason:
        category, detail = SKIPPED, str(reason)
    except SetupFailed as reason:
        category, detail = SETUP_FAILED, str(reason)
    except Exception as error:  # a bug of this script, reported as such (never counted as a finding)
        category = SETUP_FAILED
        detail = f"the bench itself failed: {type(error).__name__}: {error} | " + \
            traceback.format_exc().strip().splitlines()[-3].strip()
    seconds = time.monotonic() - started
    result = CaseResult(case.name, case.group, case.expect, category, detail, seconds,
                        [run.describe(folder) for run in ctx.runs], ctx.notes)
    say(f"[{index:3d}/{total}] {category:<15} {case.name}  ({seconds:.1f} s)"
        + ("" if category in (REFUSED, HANDLED) else f"\n      -> {detail[:300]}"))
    if not keep:
        with contextlib.suppress(OSError):
            _make_removable(folder)
            shutil.rmtree(folder, ignore_errors=True)
    return result


def _make_removable(folder: Path) -> None:
    for path in [folder, *folder.rglob("*")]:
        with contextlib.suppress(OSError):
            if path.is_dir() and not path.is_symlink():
                path.chmod(0o755)


def figure(results: list[CaseResult]) -> dict[str, int]:
    tried = [r for r in results if r.category in CATEGORIES]
    counts = {"tried": len(tried)}
    counts.update({category: sum(r.category == category for r in tried) for category in CATEGORIES})
    counts["skipped"] = sum(r.category == SKIPPED for r in results)
    counts["set-up failed"] = sum(r.category == SETUP_FAILED for r in results)
    return counts


def figure_line(counts: dict[str, int]) -> str:
    return (f"tried {counts['tried']} / refused cleanly {counts[REFUSED]} / data lost {counts[DATA_LOST]} / "
            f"code run {counts[CODE_RUN]} / tracebacks {counts[TRACEBACK]}")


def print_report(results: list[CaseResult], counts: dict[str, int], seconds: float) -> None:
    print("\n" + "=" * 110)
    print("Fault injection: " + figure_line(counts))
    print(f"  (also: handled {counts[HANDLED]}, not clean {counts[NOT_CLEAN]}; skipped {counts['skipped']}, "
          f"set-up failed {counts['set-up failed']}; {seconds:.0f} s)")
    print("=" * 110)
    width = max(len(r.name) for r in results) if results else 20
    print(f"{'case':<{width}}  {'expected':<8}  {'result':<15}  detail")
    for result in results:
        detail = "" if result.category in (REFUSED, HANDLED) else result.detail
        print(f"{result.name:<{width}}  {result.expect:<8}  {result.category:<15}  {detail[:160]}")
    problems = [r for r in results if r.category not in (REFUSED, HANDLED, SKIPPED)]
    if problems:
        print("\nNot refused cleanly / handled:")
        for result in problems:
            print(f"* {result.name}: {result.category}: {result.detail[:400]}")
            for run in result.runs[-2:]:
                print(f"    $ {run['command'][:240]}  -> exit {run['returncode']}")
                for line in (run["key_lines"] or run["stderr_head"])[:5]:
                    print(f"      | {line[:200]}")


def write_chart(results: list[CaseResult], counts: dict[str, int], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = {REFUSED: "#2e7d32", HANDLED: "#81c784", DATA_LOST: "#c62828", CODE_RUN: "#6a1b9a",
               TRACEBACK: "#ef6c00", NOT_CLEAN: "#fbc02d"}
    groups = sorted({r.group for r in results if r.category in CATEGORIES})
    figure_, (left, right) = plt.subplots(1, 2, figsize=(13, 4.8), gridspec_kw={"width_ratios": [1, 1.6]})
    values = [counts[category] for category in CATEGORIES]
    bars = left.bar(range(len(CATEGORIES)), values, color=[colours[c] for c in CATEGORIES])
    left.bar_label(bars)
    left.set_xticks(range(len(CATEGORIES)), [c.replace(" ", "\n") for c in CATEGORIES])
    left.set_ylabel("cases")
    left.set_title(f"{counts['tried']} cases tried")
    offsets = np.zeros(len(groups))
    for category in CATEGORIES:
        per_group = np.array([sum(r.group == g and r.category == category for r in results) for g in groups])
        right.barh(groups, per_group, left=offsets, color=colours[category], label=category)
        offsets += per_group
    right.set_xlim(0, max(offsets.max(initial=1) * 1.08, 1))
    right.invert_yaxis()
    right.set_xlabel("cases")
    right.legend(loc="lower right", fontsize=8)
    right.set_title("per group")
    figure_.suptitle("Fault injection: " + figure_line(counts))
    figure_.tight_layout()
    figure_.savefig(path, dpi=110)
    plt.close(figure_)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", type=Path, default=Path("fault_injection_results"),
                        help="folder for fault_injection.json and fault_injection.png (created)")
    parser.add_argument("--quick", action="store_true", help="the representative subset (about 2 minutes)")
    parser.add_argument("--only", default=None, help="run only the cases whose name matches this regex")
    parser.add_argument("--list", action="store_true", help="list the cases and exit")
    parser.add_argument("--repeats", type=int, default=3,
                        help="repetitions of the random-kill and concurrency cases (full run; --quick: 1)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random kill times")
    parser.add_argument("-j", "--jobs", type=int, default=2, help="cases run at the same time")
    parser.add_argument("--timeout", type=float, default=420, help="seconds per command")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (its path is printed)")
    parser.add_argument("--strict", action="store_true",
                        help="exit with 1 if a case lost data, ran code or printed a traceback")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    cases = all_cases(1 if args.quick else max(args.repeats, 1))
    if args.quick:
        cases = [case for case in cases if case.quick]
    if args.only:
        cases = [case for case in cases if re.search(args.only, case.name)]
    if args.list:
        for case in cases:
            print(f"{case.group:<22} {case.expect:<8} {'quick ' if case.quick else '      '}{case.name}")
        return 0
    if not cases:
        print("error: no case selected", file=sys.stderr)
        return 2
    os.umask(0o022)
    started = time.monotonic()
    root = Path(tempfile.mkdtemp(prefix="nnunet_mm_fault_injection_"))
    say(f"fault injection: {len(cases)} case(s){' (quick)' if args.quick else ''}, {args.jobs} at a time, "
        f"work folder {root}")
    SHARED_SETTINGS["mpl"] = root / "matplotlib"
    fixtures = Fixtures(root / "fixtures", args.timeout)
    fixtures.root.mkdir()
    order = fixtures.close_over({need for case in cases for need in case.needs})
    setup = threading.Thread(target=fixtures.build, args=(order,), daemon=True)
    setup.start()
    results: list[CaseResult] = []
    try:
        with ThreadPoolExecutor(max_workers=max(args.jobs, 1)) as pool:
            futures = [pool.submit(run_case, case, root, fixtures, args.seed, args.timeout, index + 1, len(cases),
                                   args.keep) for index, case in enumerate(cases)]
            results = [future.result() for future in futures]
        setup.join()
    finally:
        seconds = time.monotonic() - started
        if args.keep:
            say(f"kept the work folder {root}")
        else:
            _make_removable(root)
            shutil.rmtree(root, ignore_errors=True)
    counts = figure(results)
    print_report(results, counts, seconds)
    args.output.mkdir(parents=True, exist_ok=True)
    report = {
        "figure": figure_line(counts), "counts": counts, "seconds": round(seconds, 1), "quick": args.quick,
        "seed": args.seed, "jobs": args.jobs, "python": sys.version.split()[0], "euid": os.geteuid(),
        "fixture_seconds": {k: round(v, 1) for k, v in fixtures.seconds.items()},
        "fixture_errors": fixtures.errors,
        "cases": [dataclasses.asdict(result) for result in results],
    }
    (args.output / "fault_injection.json").write_text(json.dumps(report, indent=2), encoding="utf-8")
    write_chart(results, counts, args.output / "fault_injection.png")
    print(f"\nwrote {args.output / 'fault_injection.json'} and {args.output / 'fault_injection.png'} "
          f"({seconds:.0f} s in all)")
    bad = counts[DATA_LOST] + counts[CODE_RUN] + counts[TRACEBACK]
    return 1 if args.strict and bad else 0


if __name__ == "__main__":
    from nnunet_mm.io.console import tolerate_unencodable_output

    tolerate_unencodable_output()
    sys.exit(main())
