"""The PyTorch side of benchmarks/vs_imagen_pytorch.py: imagen-pytorch's Unet and
Imagen, driven over stdin/stdout with one JSON object per line so that the two
frameworks run in separate processes (and virtual environments) yet alternate A/B.

Runs only inside the peer venv the harness builds; it imports nothing of this project.
Commands (each answered with one JSON line):
  {"cmd": "build", "unet": {...Unet kwargs}, "image_size": S, "steps": T}
                                          -> {"params": N, "versions": {...}}
  {"cmd": "train", "batch": B, "size": S, "iters": K}  -> {"seconds": [K step times]}
  {"cmd": "sample", "batch": B, "cond_scale": W, "iters": K} -> {"seconds": [...]}
  {"cmd": "flops", "batch": B, "size": S}             -> {"flops": F}
  {"cmd": "conv", "shapes": [[B, S, C], ...], "iters": K} -> {"convs": [...]}
  {"cmd": "memory"}                                   -> {"peak_rss_mib": M}
  {"cmd": "quit"}
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time
import warnings

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # no network at run time
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
warnings.filterwarnings("ignore")

import torch  # noqa: E402
import transformers  # noqa: E402

# imagen-pytorch reads the default T5's config from the hub when it is imported (a
# default argument); the benchmark passes precomputed text embeddings, so the width is
# all it needs: t5-v1_1-base's d_model, as the hub's config says.
_from_pretrained = transformers.T5Config.from_pretrained
transformers.T5Config.from_pretrained = classmethod(
    lambda cls, name, *a, **k: cls(d_model=768))

import imagen_pytorch  # noqa: E402
from imagen_pytorch import Imagen, Unet  # noqa: E402

STATE: dict = {}
# The pipe to the harness carries only replies; whatever the libraries print (imagen-
# pytorch's advice on U-Net widths, ...) goes to stderr.
_REPLIES, sys.stdout = sys.stdout, sys.stderr


def _reply(obj: dict) -> None:
    _REPLIES.write(json.dumps(obj) + "\n")
    _REPLIES.flush()


def build(unet: dict, image_size: int, steps: int, text_len: int, text_dim: int,
          threads: int) -> dict:
    torch.manual_seed(0)
    torch.set_num_threads(threads)
    net = Unet(**unet)
    imagen = Imagen(unets=(net,), image_sizes=(image_size,), text_embed_dim=text_dim,
                    timesteps=steps, cond_drop_prob=0.1, min_snr_loss_weight=False,
                    dynamic_thresholding=True, auto_normalize_img=False)
    imagen.train()
    opt = torch.optim.Adam(net.parameters(), lr=1e-4)
    STATE.update(net=net, imagen=imagen, opt=opt, text_len=text_len, text_dim=text_dim,
                 image_size=image_size)
    return {"params": sum(p.numel() for p in net.parameters()),
            "versions": {"torch": torch.__version__,
                         "imagen_pytorch": imagen_pytorch.__version__,
                         "threads": torch.get_num_threads()}}


def _text(batch: int):
    g = torch.Generator().manual_seed(1)
    text = torch.randn(batch, STATE["text_len"], STATE["text_dim"], generator=g)
    mask = torch.ones(batch, STATE["text_len"], dtype=torch.bool)
    return text, mask


def train(batch: int, size: int, iters: int) -> dict:
    imagen, opt = STATE["imagen"], STATE["opt"]
    imagen.train()
    images = torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(2)) * 2 - 1
    text, mask = _text(batch)
    times, phases = [], {"forward": [], "backward": [], "adam": []}
    for _ in range(iters):
        start = time.perf_counter()
        loss = imagen(images, text_embeds=text, text_masks=mask, unet_number=1)
        t_fwd = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        t_bwd = time.perf_counter()
        opt.step()
        end = time.perf_counter()
        times.append(end - start)
        for name, dt in (("forward", t_fwd - start), ("backward", t_bwd - t_fwd),
                         ("adam", end - t_bwd)):
            phases[name].append(dt)
    return {"seconds": times, "phases": phases, "loss": float(loss)}


@torch.no_grad()
def sample(batch: int, cond_scale: float, iters: int) -> dict:
    imagen = STATE["imagen"]
    imagen.eval()
    text, mask = _text(batch)
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        out = imagen.sample(text_embeds=text, text_masks=mask, cond_scale=cond_scale,
                            cfg_remove_parallel_component=False, use_tqdm=False)
        times.append(time.perf_counter() - start)
    return {"seconds": times, "shape": list(out.shape)}


def flops(batch: int, size: int) -> dict:
    """FLOPs of one training forward + backward, counted by torch's FlopCounterMode
    (matmuls and convolutions only; XLA's count on the other side includes elementwise
    ops, so it is the larger of the two for the same network)."""
    from torch.utils.flop_counter import FlopCounterMode

    imagen = STATE["imagen"]
    imagen.train()
    images = torch.rand(batch, 3, size, size) * 2 - 1
    text, mask = _text(batch)
    with FlopCounterMode(display=False) as counter:
        imagen(images, text_embeds=text, text_masks=mask, unet_number=1).backward()
    STATE["net"].zero_grad(set_to_none=True)
    return {"flops": counter.get_total_flops()}


# Part of an aten op's name -> the kind of work it does, first match wins (torch
# computes a convolution's input and kernel gradients in one op). Everything else,
# including wrappers such as aten::matmul or aten::einsum whose self time is their
# own overhead, is 'other'.
PEER_CATEGORIES = (
    ("convolution_backward", "conv input + kernel gradient"),
    ("convolution", "conv"), ("group_norm", "group norm"),
    ("softmax", "attention softmax"),
    ("bmm", "matmul"), ("addmm", "matmul"), ("aten::mm", "matmul"),
)


def _category(op: str) -> str:
    """The category of one aten op (PEER_CATEGORIES)."""
    return next((category for key, category in PEER_CATEGORIES if key in op), "other")


def profile(batch: int, size: int, iters: int) -> dict:
    """Self CPU time per category (ms per step) of the training forward and of the
    backward, each profiled on its own with torch.profiler over `iters` steps."""
    from torch.profiler import ProfilerActivity, profile as torch_profile

    imagen = STATE["imagen"]
    imagen.train()
    images = torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(2)) * 2 - 1
    text, mask = _text(batch)
    out: dict = {"forward": {}, "backward": {}, "forward_wall_ms": 0.0, "backward_wall_ms": 0.0}
    for i in range(iters + 1):  # the first is a warm-up
        with torch_profile(activities=[ProfilerActivity.CPU]) as fwd_prof:
            start = time.perf_counter()
            loss = imagen(images, text_embeds=text, text_masks=mask, unet_number=1)
            mid = time.perf_counter()
        with torch_profile(activities=[ProfilerActivity.CPU]) as bwd_prof:
            loss.backward()
            end = time.perf_counter()
        STATE["net"].zero_grad(set_to_none=True)
        if i == 0:
            continue
        out["forward_wall_ms"] += (mid - start) * 1e3 / iters
        out["backward_wall_ms"] += (end - mid) * 1e3 / iters
        for phase, prof in (("forward", fwd_prof), ("backward", bwd_prof)):
            for event in prof.key_averages():
                category = _category(event.key)
                ms = event.self_cpu_time_total / 1e3 / iters
                out[phase][category] = out[phase].get(category, 0.0) + ms
    return out


def conv(shapes: list, iters: int) -> dict:
    """Median ms of one 3x3 convolution (NCHW, padding 1) forward, and forward +
    backward (both gradients), per [batch, side, channels]."""
    out = []
    for b, side, c in shapes:
        x = torch.randn(b, c, side, side, requires_grad=True)
        w = torch.randn(c, c, 3, 3, requires_grad=True)
        g = torch.randn(b, c, side, side)

        def median(fn):
            fn()
            times = []
            for _ in range(iters):
                start = time.perf_counter()
                fn()
                times.append(time.perf_counter() - start)
            return sorted(times)[len(times) // 2] * 1e3

        with torch.no_grad():
            fwd = median(lambda: torch.nn.functional.conv2d(x, w, padding=1))
        both = median(lambda: torch.autograd.grad(
            torch.nn.functional.conv2d(x, w, padding=1), (x, w), g))
        out.append({"shape": [b, side, c], "forward_ms": fwd, "forward_backward_ms": both})
    return {"convs": out}


def main() -> None:
    for line in sys.stdin:
        msg = json.loads(line)
        cmd = msg.pop("cmd")
        try:
            if cmd == "quit":
                _reply({"ok": True})
                return
            if cmd == "memory":
                _reply({"peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024})
                continue
            _reply({"build": build, "train": train, "sample": sample, "conv": conv,
                    "flops": flops, "profile": profile}[cmd](**msg))
        except Exception as e:  # reported to the harness, which prints it and stops
            _reply({"error": f"{type(e).__name__}: {e}"})


if __name__ == "__main__":
    main()
