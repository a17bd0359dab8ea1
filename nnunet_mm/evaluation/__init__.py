"""Evaluation shared by every method: overlap metrics with one documented convention (:mod:`.metrics`), lesion-wise
detection (:mod:`.lesions`), and the paired comparison of trained models behind ``nnunet_mm compare`` (runs and
arms :mod:`.runs`, scoring :mod:`.compare`, statistics :mod:`.paired_statistics`, report files :mod:`.report`)."""
