"""Trainers: the shared :class:`MultiModalTrainer` and, later, one module per method."""
