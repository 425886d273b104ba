"""Sharding: the device mesh, the logical-axis rules, and shardings derived from them.

    mesh = make_mesh(config.mesh)                # {'data': -1, 'fsdp': 1, 'tensor': 1}
    rules = rules_from_config(config.logical_rules)  # () -> DEFAULT_RULES
    # stage.init(key) -> boxed variables; each device builds only its own shard
    shardings = param_shardings(jax.eval_shape(stage.init, key), mesh, rules)
    variables = sharded_init(lambda k: unbox_logical(stage.init(k)), key, mesh, shardings)

Data-parallel, FSDP and tensor-parallel training differ only in the mesh shape (see
`rules.py`).
"""

from imagen_jax.parallel.mesh import MESH_AXES, make_mesh, mesh_shape
from imagen_jax.parallel.rules import DEFAULT_RULES, Rules, rules_from_config
from imagen_jax.parallel.sharding import (batch_sharding, constrain_batch, logical_to_spec,
                                          param_shardings, replicated, shard_batch_tree,
                                          sharded_init, state_shardings, unbox_logical)
from imagen_jax.parallel.step import jit_sharded_step

__all__ = [
    "MESH_AXES", "make_mesh", "mesh_shape", "DEFAULT_RULES", "Rules", "rules_from_config",
    "batch_sharding", "constrain_batch", "logical_to_spec", "param_shardings", "replicated",
    "shard_batch_tree", "sharded_init", "state_shardings", "jit_sharded_step", "unbox_logical",
]
