"""imagen_jax: Imagen in JAX/Flax, and the diffusion machinery unclip_jax reuses."""

from imagen_jax.xla_flags import add_default_xla_flags

add_default_xla_flags()  # before JAX's backend starts: see imagen_jax/xla_flags.py

__version__ = "0.1.0"
