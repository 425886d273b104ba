"""The generic trainer: optimiser, train state (+ EMA), checkpointing, the loop."""
