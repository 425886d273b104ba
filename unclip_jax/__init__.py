"""unclip_jax: DALL-E 2 (unCLIP) built on imagen_jax's shared machinery."""
