"""The ``"nnunet_mm"`` block of dataset.json."""
