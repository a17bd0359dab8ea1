"""Preprocessing steps that nnU-Net does not have (they run after ``nnUNetv2_plan_and_preprocess``)."""
