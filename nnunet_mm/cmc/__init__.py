"""CMC: semi-supervised cross-modality collaboration with unlabeled cases (paper 001).

Everything about the method lives here: the network (:mod:`.network`, shared encoder/decoder with the
cross-modality :mod:`.bottleneck`), the semi-supervised terms (:mod:`.losses`: ``csc_loss``, ``cac_loss``), the
trainer (:mod:`.trainer`, ``CMCTrainer``), unlabeled cases (:mod:`.unlabeled`), label-fraction datasets
(:mod:`.label_fraction`) and the commands ``preprocess-unlabeled`` and ``label-fraction`` (:mod:`.cli`).
Modules are imported from where they live; importing this package imports nothing.
"""
