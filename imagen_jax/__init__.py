"""imagen_jax: Imagen in JAX/Flax, and the diffusion machinery unclip_jax reuses."""

__version__ = "0.1.0"
