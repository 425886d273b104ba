r"""Kill training at random points, restart it with the same command, and check that
nothing is lost: every restart resumes from the latest complete checkpoint and the
run's losses and final weights equal an uninterrupted run's.

    python benchmarks/preemption_soak.py --kills=20 --sigterms=2 --workdir=/tmp/soak
    python benchmarks/preemption_soak.py --kills=2 --sigterms=1 --steps=12   # a smoke run

The run is `python -m imagen_jax.main --config=configs/imagen.py:tiny,base64` with a
checkpoint every step, saved asynchronously, and a metrics.jsonl line every step. The
uninterrupted reference runs first (same command, its own workdir). Then, in the soak
workdir, each interruption starts the command, waits until it has logged a random
number (0-3) of new steps, waits a random fraction of a step more (so kills land in
the step, in the background checkpoint write, or during start-up) and sends SIGKILL
(or SIGTERM, the preemption notice, for `--sigterms` of them, at random positions). A
last start runs to the end.

An interruption's resume is *identical* when the next start that gets as far as
restoring (a) resumes from the newest complete checkpoint on disk when the process
died and logs from the step after it -- for SIGTERM, the process must also have saved
the step it stopped at and exited 143 -- and (b) its logged loss, gradient norm and
skipped-update count equal the reference's at every step it logs. Each start's
output is in WORKDIR/logs/. At the end every array of the final train state (params, EMA, optimiser
state, RNG) must equal the reference's bit for bit. Prints one line per interruption
and the count of identical resumes; writes WORKDIR/soak.json; exits 1 if any differs.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import glob
import json
import os
import platform
import random
import re
import signal
import subprocess
import sys
import time
from typing import Any

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COMPARED = ("loss", "grad_norm", "nonfinite_steps")  # not the timings


@dataclasses.dataclass
class Interruption:
    signal: str
    after_new_steps: int       # the run had logged this many steps of its own
    logged_step: int           # the last step in metrics.jsonl once the process ended
    during_checkpoint_write: bool  # a half-written step directory existed then
    exit_code: int
    complete_steps: list[int]  # checkpoints on disk once the process had ended
    resumed_at: int | None = None  # the step the next start to restore resumed from
    mismatched_steps: list[int] = dataclasses.field(default_factory=list)
    identical: bool = False


def _command(workdir: str, data_dir: str, steps: int, cache_dir: str) -> list[str]:
    return [sys.executable, "-m", "imagen_jax.main", "--config=configs/imagen.py:tiny,base64",
            f"--workdir={workdir}", f"--compilation_cache={cache_dir}",
            f"--config.data.data_dir={data_dir}",
            "--config.data.num_train=32", "--config.data.num_test=8",
            "--config.data.shuffle_buffer=32", f"--config.train.steps={steps}",
            "--config.train.warmup_steps=2", "--config.checkpoint.every_steps=1",
            "--config.checkpoint.keep=3", "--config.checkpoint.async_save=True",
            "--config.log.every_steps=1", "--config.log.progress_bar=False",
            "--config.mesh.data=1"]


def _environment(workdir: str) -> dict[str, str]:
    env = dict(os.environ)
    # One CPU device (a test suite may ask for 8 fake ones: 8x the work on one core).
    flags = re.sub(r"--xla_force_host_platform_device_count=\d+", "", env.get("XLA_FLAGS", ""))
    env["XLA_FLAGS"] = flags.strip()
    env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _records(workdir: str, start: int = 0, end: int | None = None) -> list[dict]:
    """metrics.jsonl's whole lines between byte offsets `start` and `end`."""
    path = os.path.join(workdir, "metrics.jsonl")
    if not os.path.exists(path):
        return []
    with open(path, "rb") as f:
        f.seek(start)
        data = f.read() if end is None else f.read(end - start)
    return [json.loads(line) for line in data.split(b"\n")[:-1]]  # last: partial or empty


def _size(workdir: str) -> int:
    path = os.path.join(workdir, "metrics.jsonl")
    return os.path.getsize(path) if os.path.exists(path) else 0


def _complete_steps(workdir: str) -> list[int]:
    directory = os.path.join(workdir, "checkpoints")
    if not os.path.isdir(directory):
        return []
    return sorted(int(n) for n in os.listdir(directory) if n.isdigit())


def _tmp_dirs(workdir: str) -> set[str]:
    """Half-written step directories (Orbax renames them when a save completes)."""
    return set(glob.glob(os.path.join(workdir, "checkpoints", "*.orbax-checkpoint-tmp*")))


def _restored_step(log_path: str) -> int | None:
    """The step a start resumed from (0: it started afresh), None if it was stopped
    before it got that far."""
    with open(log_path, encoding="utf-8", errors="replace") as f:
        text = f.read()
    match = re.search(r"resumed from .* step (\d+)$", text, re.MULTILINE)
    if match:
        return int(match.group(1))
    return 0 if "starting afresh: no checkpoint in" in text else None


def _compilation(log_path: str) -> dict | None:
    """main's closing line: programs compiled and loaded from the persistent cache."""
    with open(log_path, encoding="utf-8", errors="replace") as f:
        match = re.search(r"compilation: (\d+) programs compiled in ([0-9.]+) s, (\d+) loaded",
                          f.read())
    return None if match is None else {"compiled": int(match.group(1)),
                                       "compile_s": float(match.group(2)),
                                       "cache_hits": int(match.group(3))}


def _run_to_end(command: list[str], env: dict, log_path: str) -> None:
    with open(log_path, "w", encoding="utf-8") as log:
        result = subprocess.run(command, cwd=REPO, env=env, stdout=log,
                                stderr=subprocess.STDOUT)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command[:3])} ... exited {result.returncode}; see "
                           f"{log_path}")


def _interrupt(command: list[str], env: dict, workdir: str, log_path: str,
               sig: signal.Signals, new_steps: int, in_write: bool, rng: random.Random,
               timeout_s: float) -> Interruption:
    """Starts the command, waits for `new_steps` logged steps (0: a random moment of
    start-up), then for a checkpoint write to be under way (`in_write`) or a random
    part of a step, and sends `sig`."""
    offset = _size(workdir)
    stale = _tmp_dirs(workdir)  # a killed run's leftovers, removed by this start
    log = open(log_path, "w", encoding="utf-8")
    process = subprocess.Popen(command, cwd=REPO, env=env, stdout=log,
                               stderr=subprocess.STDOUT)
    start = time.monotonic()

    def wait_for(ready: Any, what: str) -> None:
        while not ready():
            if process.poll() is not None:
                raise RuntimeError(f"the run ended (exit {process.returncode}) before "
                                   f"{what}; see {log_path}")
            if time.monotonic() - start > timeout_s:
                process.kill()
                raise TimeoutError(f"not {what} in {timeout_s:.0f} s; see {log_path}")
            time.sleep(0.01)

    writing = lambda: bool(_tmp_dirs(workdir) - stale)  # noqa: E731
    if new_steps == 0:
        time.sleep(rng.uniform(0.0, 8.0))  # somewhere in imports, setup or compilation
    else:
        wait_for(lambda: len(_records(workdir, offset)) >= new_steps,
                 f"logging {new_steps} steps")
        if in_write:
            wait_for(writing, "writing a checkpoint")
        else:
            time.sleep(rng.uniform(0.0, 0.4))  # into the next step or the async write
    during_write = writing()
    process.send_signal(sig)
    code = process.wait(timeout=timeout_s)
    log.close()
    everything = _records(workdir)
    return Interruption(sig.name, new_steps, everything[-1]["step"] if everything else 0,
                        during_write, code, _complete_steps(workdir))


def _final_state(workdir: str) -> dict:
    import orbax.checkpoint as ocp  # noqa: PLC0415  (the driver itself runs no JAX)
    step = _complete_steps(workdir)[-1]
    return ocp.StandardCheckpointer().restore(os.path.join(workdir, "checkpoints", str(step),
                                                           "state"))


def _flat(tree: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(tree, dict):
        out = {}
        for key, value in tree.items():
            out.update(_flat(value, f"{prefix}/{key}" if prefix else str(key)))
        return out
    if isinstance(tree, (list, tuple)):
        return _flat({str(i): v for i, v in enumerate(tree)}, prefix)
    return {prefix: tree}


def soak(workdir: str, *, kills: int, sigterms: int, steps: int, seed: int = 0,
         timeout_s: float = 300.0, verbose: bool = True) -> dict:
    """Runs the reference and the interrupted run; returns the report (see module doc)."""
    import numpy as np  # noqa: PLC0415

    say = functools.partial(print, flush=True) if verbose else (lambda *a, **k: None)
    rng = random.Random(seed)
    data_dir = os.path.join(workdir, "tfds")
    reference, soaked = os.path.join(workdir, "reference"), os.path.join(workdir, "soaked")
    for d in (reference, soaked):
        if os.path.exists(d):
            raise FileExistsError(f"{d} exists: give the soak an empty --workdir")
    logs = os.path.join(workdir, "logs")
    os.makedirs(logs, exist_ok=True)
    t0 = time.monotonic()
    env = _environment(workdir)
    # Every start shares one persistent compilation cache, as a restarted pod job would
    # (main's --compilation_cache); the reference run fills it.
    cache_dir = os.path.join(workdir, "xla_cache")
    _run_to_end(_command(reference, data_dir, steps, cache_dir), env,
                os.path.join(logs, "reference.log"))
    want = {r["step"]: r for r in _records(reference)}
    say(f"reference: {steps} steps uninterrupted in {time.monotonic() - t0:.1f} s")

    plan = [signal.SIGKILL] * kills + [signal.SIGTERM] * sigterms
    rng.shuffle(plan)
    command = _command(soaked, data_dir, steps, cache_dir)
    interruptions: list[Interruption] = []
    starts: list[int] = []  # metrics.jsonl's size when each start began
    start_log = lambda i: os.path.join(logs, f"start_{i:02d}.log")  # noqa: E731
    t1 = time.monotonic()
    for i, sig in enumerate(plan):
        # Every third SIGKILL is aimed at a background checkpoint write (found by its
        # temporary directory); SIGTERM is only noticed once the loop runs.
        in_write = sig == signal.SIGKILL and plan[:i].count(signal.SIGKILL) % 3 == 0
        new_steps = rng.randint(1 if sig == signal.SIGTERM or in_write else 0, 3)
        done = _records(soaked)[-1]["step"] if _records(soaked) else 0
        if done + new_steps + 2 >= steps:
            say(f"stopping interruptions at {i}: the run is at step {done} of {steps}; "
                "raise --steps for more")
            break
        starts.append(_size(soaked))
        interruptions.append(_interrupt(command, env, soaked, start_log(i), sig, new_steps,
                                        in_write, rng, timeout_s))
    starts.append(_size(soaked))
    _run_to_end(command, env, start_log(len(interruptions)))
    starts.append(_size(soaked))
    soak_s = time.monotonic() - t1

    for i, item in enumerate(interruptions):
        # The first later start that got as far as restoring (a start killed during
        # its own start-up restores nothing and changes no checkpoint).
        j = next(j for j in range(i + 1, len(interruptions) + 1)
                 if _restored_step(start_log(j)) is not None)
        item.resumed_at = _restored_step(start_log(j))
        latest = item.complete_steps[-1] if item.complete_steps else 0
        logged = _records(soaked, starts[j], starts[j + 1])
        item.mismatched_steps = [r["step"] for r in logged
                                 if any(r.get(k) != want[r["step"]].get(k) for k in COMPARED)]
        first_ok = not logged or logged[0]["step"] == item.resumed_at + 1
        # SIGTERM: exit 143 with the last step it logged saved.
        clean_stop = item.signal == "SIGKILL" or (item.exit_code == 143
                                                   and latest == item.logged_step)
        item.identical = (item.resumed_at == latest and first_ok and not item.mismatched_steps
                          and clean_stop)
        during = ", during a checkpoint write" if item.during_checkpoint_write else ""
        later = f" (start {j - i} after it)" if j > i + 1 else ""
        say(f"{i + 1:2d}. {item.signal} after {item.after_new_steps} new step(s){during}; exit "
            f"{item.exit_code}; last logged step {item.logged_step}, newest complete "
            f"checkpoint {latest}; the next start to restore{later} resumed from step "
            f"{item.resumed_at}: {'identical' if item.identical else 'DIFFERENT'}")

    final_ref, final_soak = _flat(_final_state(reference)), _flat(_final_state(soaked))
    differing = sorted(k for k in final_ref
                       if k not in final_soak or not np.array_equal(np.asarray(final_ref[k]),
                                                                    np.asarray(final_soak[k])))
    all_steps = _records(soaked)
    trajectory_equal = all(all(r.get(k) == want[r["step"]].get(k) for k in COMPARED)
                           for r in all_steps) and {r["step"] for r in all_steps} == set(want)
    identical = sum(item.identical for item in interruptions)
    import jax  # noqa: PLC0415  (versions for the report)
    report = {
        "date": time.strftime("%Y-%m-%d"), "machine": platform.platform(),
        "cpus": os.cpu_count(), "python": platform.python_version(), "jax": jax.__version__,
        "steps": steps, "seed": seed, "interruptions": [dataclasses.asdict(i) for i in interruptions],
        "kills": sum(i.signal == "SIGKILL" for i in interruptions),
        "sigterms": sum(i.signal == "SIGTERM" for i in interruptions),
        "during_checkpoint_write": sum(i.during_checkpoint_write for i in interruptions),
        "identical_resumes": identical, "final_arrays": len(final_ref),
        "final_arrays_differing": differing, "loss_trajectory_equal": trajectory_equal,
        "soak_seconds": round(soak_s, 1),
        # What the first start compiled, and what the last one (a restart of the same
        # config) compiled and loaded from the cache instead.
        "reference_compilation": _compilation(os.path.join(logs, "reference.log")),
        "final_start_compilation": _compilation(start_log(len(interruptions))),
    }
    with open(os.path.join(workdir, "soak.json"), "w", encoding="utf-8") as f:
        json.dump(report, f, indent=1)
    say(f"identical resumes: {identical} of {len(interruptions)} ({report['kills']} SIGKILL, "
        f"{report['sigterms']} SIGTERM; {report['during_checkpoint_write']} during a "
        f"checkpoint write); final state: {len(final_ref) - len(differing)} of "
        f"{len(final_ref)} arrays equal; logged trajectory "
        f"{'equal' if trajectory_equal else 'DIFFERENT'}; soak {soak_s:.0f} s")
    return report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", required=True, help="an empty directory")
    parser.add_argument("--kills", type=int, default=20, help="SIGKILLs")
    parser.add_argument("--sigterms", type=int, default=2, help="SIGTERMs (preemption)")
    parser.add_argument("--steps", type=int, default=0,
                        help="training steps (default: 3 per interruption + 10)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    steps = args.steps or 3 * (args.kills + args.sigterms) + 10
    report = soak(args.workdir, kills=args.kills, sigterms=args.sigterms, steps=steps,
                  seed=args.seed)
    ok = (report["identical_resumes"] == len(report["interruptions"])
          and not report["final_arrays_differing"] and report["loss_trajectory_equal"])
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
