"""Entry point for the CMG planner (``nnunet_mm plan -pl CMGPlanner``); the planner lives in :mod:`nnunet_mm.cmg`."""
from nnunet_mm.cmg.planner import PLANS_NAME, CMGPlanner  # noqa: F401
