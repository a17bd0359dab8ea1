"""Dataset converters, one module per dataset (``DatasetNNN_Name.py``), into nnU-Net's raw format.

Each module exposes ``convert(source_dir, ...) -> Path`` and ``main(argv) -> int``. They run as scripts
(``python dataset_conversion/Dataset511_MultiPhaseLiver.py --help``), as modules
(``python -m nnunet_mm.dataset_conversion.Dataset511_MultiPhaseLiver``) and through ``nnunet_mm convert 511``.
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
