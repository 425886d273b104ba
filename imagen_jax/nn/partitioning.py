"""Logical axis names for every parameter, and the layer wrappers that attach them.

Every parameter is created through `nn.with_logical_partitioning`, so that one
table of rules (logical name -> mesh axis, in the config) decides how a model is
sharded; switching data- to model-parallel is then a config change. The names:

  vocab        token-embedding rows             embed      model width (d_model)
  mlp          feed-forward hidden width        heads      attention heads
  kv           per-head width                   relpos_buckets  T5 relative-position buckets
  conv_h, conv_w   conv kernel window           conv_in, conv_out  conv channels
  norm         normalisation scale / bias       text_embed  width of incoming text embeddings

Keep this list and the rules table in the configs in step: a name with no rule is
replicated.
"""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

Names = tuple[str | None, ...]

default_kernel_init = nn.initializers.lecun_normal()


def param_with_axes(init: Any, names: Names) -> Any:
    """An initializer that records `names` as the parameter's logical axes."""
    return nn.with_logical_partitioning(init, names)


class Dense(nn.Module):
    """nn.Dense with logical names for kernel ([in, out]) and bias ([out])."""

    features: int
    names: Names = ("embed", "mlp")
    use_bias: bool = True
    kernel_init: Any = default_kernel_init
    dtype: Any = None

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        return nn.Dense(
            self.features, use_bias=self.use_bias, dtype=self.dtype, name="dense",
            kernel_init=param_with_axes(self.kernel_init, self.names),
            bias_init=param_with_axes(nn.initializers.zeros_init(), self.names[-1:]),
        )(x)


class DenseGeneral(nn.Module):
    """nn.DenseGeneral with logical names for its multi-axis kernel (and optional bias).

    The bias spans the output axes, so it takes the trailing names of the kernel.
    """

    features: int | Sequence[int]
    names: Names
    axis: int | Sequence[int] = -1
    use_bias: bool = False
    kernel_init: Any = default_kernel_init
    dtype: Any = None

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        num_out = 1 if isinstance(self.features, int) else len(self.features)
        return nn.DenseGeneral(
            self.features, axis=self.axis, use_bias=self.use_bias, dtype=self.dtype,
            name="dense", kernel_init=param_with_axes(self.kernel_init, self.names),
            bias_init=param_with_axes(nn.initializers.zeros_init(), self.names[-num_out:]))(x)


class Conv(nn.Module):
    """nn.Conv (NHWC) with logical names (conv_h, conv_w, conv_in, conv_out)."""

    features: int
    kernel_size: tuple[int, int] = (3, 3)
    strides: tuple[int, int] = (1, 1)
    kernel_init: Any = default_kernel_init
    dtype: Any = None

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        return nn.Conv(
            self.features, self.kernel_size, strides=self.strides, padding="SAME",
            dtype=self.dtype, name="conv",
            kernel_init=param_with_axes(self.kernel_init,
                                        ("conv_h", "conv_w", "conv_in", "conv_out")),
            bias_init=param_with_axes(nn.initializers.zeros_init(), ("conv_out",)),
        )(x)


def group_norm(num_groups: int, name: str | None = None, dtype: Any = None) -> nn.GroupNorm:
    """GroupNorm whose scale and bias carry the 'norm' logical axis."""
    return nn.GroupNorm(
        num_groups=num_groups, name=name, dtype=dtype,
        scale_init=param_with_axes(nn.initializers.ones_init(), ("norm",)),
        bias_init=param_with_axes(nn.initializers.zeros_init(), ("norm",)))


def layer_norm(name: str | None = None, dtype: Any = None, epsilon: float = 1e-6
               ) -> nn.LayerNorm:
    """LayerNorm whose scale and bias carry the 'norm' logical axis."""
    return nn.LayerNorm(
        name=name, dtype=dtype, epsilon=epsilon,
        scale_init=param_with_axes(nn.initializers.ones_init(), ("norm",)),
        bias_init=param_with_axes(nn.initializers.zeros_init(), ("norm",)))


def unannotated_leaves(variables: Any) -> list[str]:
    """Paths of parameter leaves that lack logical axis names (should be none).

    Accepts the output of `module.init` (or `jax.eval_shape` of it), where annotated
    leaves are `nn.LogicallyPartitioned` boxes.
    """
    missing = []
    flat = jax.tree_util.tree_flatten_with_path(
        variables, is_leaf=lambda x: isinstance(x, nn.LogicallyPartitioned))[0]
    for path, leaf in flat:
        if isinstance(leaf, nn.LogicallyPartitioned):
            if len(leaf.names) != len(leaf.value.shape):
                missing.append(jax.tree_util.keystr(path) + " (names do not match rank)")
        else:
            missing.append(jax.tree_util.keystr(path))
    return missing
