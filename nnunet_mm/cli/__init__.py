"""The ``nnunet_mm`` command (argument parsing only; the work happens in the library)."""
