"""Experiment configs (ml_collections), one module per model family."""
