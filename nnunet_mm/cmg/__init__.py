"""CMG: cross-modal guidance for misregistered phases (paper 000).

Everything about the method lives here: the network (:mod:`.network`: per-phase streams, :mod:`.fusion` multi-scale
fusion, :mod:`.guidance` prototypes and guidance maps), the trainer (:mod:`.trainer`, ``CMGTrainer``), the
memory-aware planner (:mod:`.planner`), per-phase labels (:mod:`.phase_labels`), the guidance-map figure
(:mod:`.guidance_maps`) and the commands ``plan``, ``phase-labels`` and ``cmg-maps`` (:mod:`.cli`).
Modules are imported from where they live; importing this package imports nothing.
"""
