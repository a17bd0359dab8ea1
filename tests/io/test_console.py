"""Output in an ASCII locale (``LC_ALL=C`` with UTF-8 mode off, as on many cluster nodes and on CI): printing a
report that holds ``Δ`` or ``±`` must not end a run with ``UnicodeEncodeError``."""
from __future__ import annotations

import os
import subprocess
import sys

from nnunet_mm.io.console import encodable

ASCII_LOCALE = {"LC_ALL": "C", "LANG": "C", "PYTHONUTF8": "0", "PYTHONCOERCECLOCALE": "0"}
PRINTS_DELTA = "import sys\n{setup}\nprint('\\u0394 Dice \\u00b1 0.1')\nprint('\\u0394', file=sys.stderr)\n"


def _run_in_ascii_locale(setup: str) -> subprocess.CompletedProcess:
    env = {key: value for key, value in os.environ.items() if key != "PYTHONIOENCODING"}
    env.update(ASCII_LOCALE)
    return subprocess.run([sys.executable, "-c", PRINTS_DELTA.format(setup=setup)], env=env, capture_output=True,
                          encoding="utf-8", errors="replace", timeout=120)


def test_the_premise_printing_delta_fails_in_an_ascii_locale():
    done = _run_in_ascii_locale("")
    assert done.returncode != 0 and "UnicodeEncodeError" in done.stderr


def test_after_tolerate_unencodable_output_both_streams_write_escapes():
    done = _run_in_ascii_locale("from nnunet_mm.io.console import tolerate_unencodable_output\n"
                                "tolerate_unencodable_output()")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "\\u0394 Dice \\xb1 0.1" and done.stderr.strip() == "\\u0394"


def test_the_nnunet_mm_command_sets_it_up():
    done = _run_in_ascii_locale("from nnunet_mm.cli.main import main\nmain(['env'])")
    assert done.returncode == 0, done.stderr
    assert "\\u0394 Dice" in done.stdout


def test_encodable_escapes_only_what_the_encoding_cannot_hold():
    assert encodable("\u0394 a", "ascii") == "\\u0394 a"
    assert encodable("\u0394 a", "utf-8") == "\u0394 a"
