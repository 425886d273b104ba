"""imagen_jax: Imagen in JAX/Flax, and the diffusion machinery unclip_jax reuses.

Importing it changes no process-wide state: the programs (imagen_jax.main, sample,
demo, the unCLIP CLIs, benchmarks/, notebooks/) set XLA_FLAGS themselves
(imagen_jax/xla_flags.py).
"""

__version__ = "0.1.0"
