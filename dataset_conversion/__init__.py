"""Dataset converters, one module per dataset (``DatasetNNN_Name.py``), into nnU-Net's raw format.

Each module exposes ``convert(source_dir, ...) -> Path``, ``convert_with_summary(source_dir, ...)`` (the same, but
returning the summary that ``main`` prints), ``build_parser()`` and ``main(argv) -> int``
(:func:`nnunet_mm.conversion.converter_main`, whose options are passed to ``convert_with_summary`` by name). They run
as scripts (``python dataset_conversion/Dataset511_MultiPhaseLiver.py --help``), as modules
(``python -m nnunet_mm.dataset_conversion.Dataset511_MultiPhaseLiver``) and through ``nnunet_mm convert 511``.

What every converter shares (each module's docstrings describe only its own arguments and layout):

* Keyword arguments of ``convert``:
  ``dataset_id`` (nnU-Net dataset id, 1..999), ``dataset_name`` (the part after ``DatasetNNN_``), ``output_root``
  (where the dataset folder goes; None = ``$nnUNet_raw``), ``overwrite`` (replace an existing dataset folder) and
  ``num_processes`` (cases checked and converted in parallel, in spawned processes). On the command line:
  ``--target-id --target-name --output-root --overwrite -np``, plus ``-v`` for debug logging
  (:func:`nnunet_mm.conversion.add_common_arguments`).
* The guarantees: the source is only read; every case is checked before anything is written, and all problems are
  raised together; the output is written into a staging folder that is renamed into place only when everything
  succeeded (:func:`nnunet_mm.io.staged_dataset`).
* The errors of ``convert``:

  - ``ConversionError`` (a ``ValueError``): problems in the source data, all of them, one line each naming the file
    or folder, found before anything is written;
  - ``FileExistsError``: the dataset folder exists and ``overwrite`` is False;
  - ``FileNotFoundError``: a source does not exist;
  - ``ValueError``: invalid arguments, no output root, an output folder overlapping the input, or an archive member
    escaping the extraction folder.

  ``main`` prints them as ``error: ...`` and returns 1.
"""
from __future__ import annotations

import pkgutil
import re
from pathlib import Path

_MODULE_NAME = re.compile(r"^Dataset(?P<id>\d{3})_(?P<name>\w+)$")


def available_converters() -> dict[int, str]:
    """Dataset id → converter module name, for every ``DatasetNNN_Name`` module in this package."""
    converters = {}
    for module in pkgutil.iter_modules([str(Path(__file__).parent)]):
        match = _MODULE_NAME.match(module.name)
        if match:
            converters[int(match["id"])] = module.name
    return dict(sorted(converters.items()))


def converter_module_name(dataset: str) -> str:
    """Module name for ``dataset`` given as an id (``511``), a full name (``Dataset511_MultiPhaseLiver``) or the
    name part alone (``MultiPhaseLiver``, case-insensitive).

    Raises:
        KeyError: no converter matches; the message lists the available ones.
    """
    converters = available_converters()
    text = dataset.strip()
    if text.isdigit() and int(text) in converters:
        return converters[int(text)]
    for name in converters.values():
        if text.lower() in (name.lower(), name.split("_", 1)[1].lower()):
            return name
    listing = ", ".join(f"{i} ({n})" for i, n in converters.items()) or "none"
    raise KeyError(f"no converter for {dataset!r}; available: {listing}.")
