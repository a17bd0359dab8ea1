"""Network helpers shared by the methods' networks: sizes from nnU-Net plans, small conv blocks."""
