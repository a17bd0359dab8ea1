"""Evaluation shared by every method: overlap metrics with one documented convention."""
