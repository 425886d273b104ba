"""benchmarks/step_profile.py: a compiled program's ops are classified by what they do
(forward, input and kernel gradients of a convolution, group norm, attention, dense
layers), the ops it times alone compute the same thing as in the program, and a
profile of a small training-like step puts time in the expected categories."""

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from benchmarks import step_profile as sp

DN = ("NHWC", "HWIO", "NHWC")


def _conv(x, w):
    return lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=DN)


def _conv_loss(x, w, w2):
    h = jax.nn.silu(_conv(x, w))
    return jnp.sum(_conv(h, w2) ** 2)


def _args():
    k1, k2, k3 = jax.random.split(jax.random.PRNGKey(0), 3)
    return (jax.random.normal(k1, (2, 16, 16, 8)), jax.random.normal(k2, (3, 3, 8, 16)) * 0.1,
            jax.random.normal(k3, (3, 3, 16, 8)) * 0.1)


def test_convolutions_are_classified_forward_input_and_kernel_gradient():
    step = jax.jit(jax.grad(_conv_loss, argnums=(0, 1, 2)))
    instructions = sp.parse_hlo(step.lower(*_args()).compile().as_text())
    kinds = sorted(sp.classify(i) for i in instructions.values() if i.opcode == "convolution")
    # two forward convolutions, and for each an input gradient (x is differentiated
    # too) and a kernel gradient
    assert kinds.count("conv forward") == 2, kinds
    assert kinds.count("conv kernel gradient") == 2, kinds
    assert kinds.count("conv input gradient") == 2, kinds


def test_replayed_ops_compute_what_the_program_computes():
    """Each convolution and dot of a compiled gradient, rebuilt from its HLO text
    alone, gives the same result on the same operands as running it through lax."""
    x, w, w2 = _args()
    step = jax.jit(jax.grad(_conv_loss, argnums=(0, 1, 2)))
    instructions = sp.parse_hlo(step.lower(x, w, w2).compile().as_text())
    convs = [i for i in instructions.values() if i.opcode == "convolution"]
    forward = [i for i in convs if sp.classify(i) == "conv forward"
               and instructions[i.operands[1]].dims()[1] == (3, 3, 8, 16)]
    fn, shapes = sp._replay_fn(forward[0], instructions)
    assert [s[1] for s in shapes] == [(2, 16, 16, 8), (3, 3, 8, 16)]
    np.testing.assert_allclose(jax.jit(fn)(x, w), _conv(x, w), rtol=1e-5, atol=1e-5)
    # a kernel gradient as XLA wrote it: rebuilt, it runs at its operands' shapes
    kernel = next(i for i in convs if sp.classify(i) == "conv kernel gradient")
    fn, shapes = sp._replay_fn(kernel, instructions)
    out = jax.jit(fn)(*[jnp.ones(d, jnp.float32) for _, d in shapes])
    assert out.shape == kernel.dims()[1]
    # a batched dot (attention's shape)
    q, k = jnp.ones((2, 4, 8, 16)), jnp.ones((2, 4, 12, 16)) * 0.5
    dot = jax.jit(lambda q, k: jnp.einsum("bntd,bnsd->bnts", q, k))
    d = next(i for i in sp.parse_hlo(dot.lower(q, k).compile().as_text()).values()
             if i.opcode == "dot")
    fn, _ = sp._replay_fn(d, sp.parse_hlo(dot.lower(q, k).compile().as_text()))
    np.testing.assert_allclose(jax.jit(fn)(q, k), dot(q, k))


def test_module_paths_decide_norm_attention_and_dense():
    make = lambda op_name, opcode="fusion", fused="": sp.Instruction(  # noqa: E731
        name="f", opcode=opcode, shape="f32[2,4]{1,0}", op_name=op_name, window=(),
        fused=fused)
    up = "jit(f)/jvp(UNet)/UNet._ublock/up_1_res_0"
    assert sp.classify(make(f"{up}/norm_0/mul")) == "group norm forward"
    assert sp.classify(make("jit(f)/transpose(jvp(UNet))/down_1_attn/bnts,bnsd->bntd/dot_general",
                            opcode="dot")) == "attention backward"
    # the attention layer's own group norm counts as group norm
    assert sp.classify(make("jit(f)/jvp(UNet)/down_1_attn/norm/mul")) == "group norm forward"
    assert sp.classify(make("jit(f)/jvp(UNet)/down_1_attn/exp")) == "attention forward"
    assert sp.classify(make(f"{up}/emb_proj/dense/dot_general", opcode="dot")) == "dense forward"
    assert sp.classify(make(f"{up}/jit(silu)/mul")) == "other forward"


def test_profile_of_a_small_step_times_every_convolution_kind():
    step = jax.jit(jax.grad(_conv_loss, argnums=(0, 1, 2)))
    result = sp.profile_compiled(step, _args(), iters=2)
    cats = result["categories"]
    assert set(cats) == set(sp.CATEGORIES)
    for kind in ("conv forward", "conv input gradient", "conv kernel gradient"):
        assert cats[kind] > 0, (kind, cats)
    assert abs(sum(cats.values()) - result["thunk_ms"]) < 1e-6
    assert result["wall_ms"] > 0 and result["top"][0]["ms"] >= result["top"][-1]["ms"]


def test_backward_variants_report_has_a_row_per_shape_and_backend():
    from benchmarks import backward_variants as bv

    conv = {"shape": [8, 32, 64, 64], "forward": 1.0, "kernel gradient (XLA)": 2.5}
    att = {"shape": [8, 256, 273, 8], "attend (autodiff)": 30.0, "closed-form backward": 40.0}
    step = {"case": "32px batch 8", "ms": 500.0}
    result = {"date": "2026-01-02", "cpu_model": "cpu", "environment": "env", "iters": 3,
              "backends": {"eigen": {"convs": [conv], "attention": [att], "train_step": [step]},
                           "ynnpack": {"convs": [dict(conv, forward=2.0)], "attention": [att],
                                       "train_step": [dict(step, ms=600.0)]}}}
    text = "\n".join(bv.report(result))
    assert "| 8 x 32x32 x 64->64 | eigen | 1.00 | 2.50 |" in text
    assert "| 8 x 32x32 x 64->64 | ynnpack | 2.00 | 2.50 |" in text
    assert "| 8 x 256 queries x 273 keys x 8 heads | eigen | 30.0 | 40.0 |" in text
    assert "| 32px batch 8 | 500 | 600 |" in text
