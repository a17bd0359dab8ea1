"""Figures of what the networks compute (guidance maps, predictions) for people to look at."""
