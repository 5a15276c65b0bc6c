#!/usr/bin/env python3
"""JAX peer for the diagonal scan h_t = a_t * h_{t-1} + u_t on CPU.

Times jax.lax.associative_scan (on the (B, T, D) layout, along T) and jax.lax.scan
(time-major (T, B, D) inputs, transposed outside the timing; and the same with the
transposes from (B, T, D) inside the jitted function) at 1 and 2 threads, runs
`fixpoint bench scan --json --shape B,T,D` at the same thread counts (or reads its JSON),
and prints fixpoint's speed-up over each.

    python3 -m venv /tmp/jaxvenv && /tmp/jaxvenv/bin/pip install jax
    cargo build --release
    /tmp/jaxvenv/bin/python benches/peers/scan_jax.py            # B=8, T=16384, D=256

Thread counts: 1 thread = XLA_FLAGS="--xla_cpu_multi_thread_eigen=false
intra_op_parallelism_threads=1" and `taskset -c 0`; 2 threads = default flags and
`taskset -c 0,1`. fixpoint gets `--threads N` under the same taskset.
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time


def worker(b, t, d, reps):
    import jax
    import jax.numpy as jnp
    import numpy as np

    rng = np.random.default_rng(0)
    a = jnp.asarray(rng.uniform(0.9, 0.999, (b, t, d)).astype(np.float32))
    u = jnp.asarray(rng.uniform(-1.0, 1.0, (b, t, d)).astype(np.float32))

    def combine(x, y):
        a1, b1 = x
        a2, b2 = y
        return a1 * a2, a2 * b1 + b2

    @jax.jit
    def assoc(a, u):
        return jax.lax.associative_scan(combine, (a, u), axis=1)[1]

    def step(h, x):
        h = x[0] * h + x[1]
        return h, h

    @jax.jit
    def seq_time_major(a_tm, u_tm):
        return jax.lax.scan(step, jnp.zeros(a_tm.shape[1:], a_tm.dtype), (a_tm, u_tm))[1]

    @jax.jit
    def seq_btd(a, u):
        a_tm, u_tm = jnp.swapaxes(a, 0, 1), jnp.swapaxes(u, 0, 1)
        return jnp.swapaxes(jax.lax.scan(step, jnp.zeros((a.shape[0], a.shape[2]), a.dtype), (a_tm, u_tm))[1], 0, 1)

    a_tm = jnp.swapaxes(a, 0, 1).block_until_ready()
    u_tm = jnp.swapaxes(u, 0, 1).block_until_ready()

    def timeit(f, *args):
        f(*args).block_until_ready()  # compile and warm up
        times = []
        for _ in range(reps):
            start = time.perf_counter()
            f(*args).block_until_ready()
            times.append(time.perf_counter() - start)
        return statistics.median(times)

    out = {
        "associative_scan_s": timeit(assoc, a, u),
        "lax_scan_time_major_s": timeit(seq_time_major, a_tm, u_tm),
        "lax_scan_btd_s": timeit(seq_btd, a, u),
        "jax_version": jax.__version__,
    }
    # The two formulations agree (a check that the timed code computes the scan).
    diff = jnp.max(jnp.abs(assoc(a, u) - jnp.swapaxes(seq_time_major(a_tm, u_tm), 0, 1)))
    scale = jnp.max(jnp.abs(assoc(a, u)))
    out["assoc_vs_scan_max_rel_diff"] = float(diff / scale)
    print(json.dumps(out))


def pin(threads):
    cpus = ",".join(str(i) for i in range(threads))
    return ["taskset", "-c", cpus] if shutil.which("taskset") else []


def jax_env(threads):
    env = dict(os.environ)
    if threads == 1:
        env["XLA_FLAGS"] = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
    else:
        env.pop("XLA_FLAGS", None)
    env["JAX_PLATFORMS"] = "cpu"
    return env


def run_jax(threads, shape, reps):
    cmd = pin(threads) + [sys.executable, __file__, "--worker", "--shape", ",".join(map(str, shape)), "--reps", str(reps)]
    res = subprocess.run(cmd, env=jax_env(threads), capture_output=True, text=True, check=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


def fixpoint_times(report, shape, threads):
    for r in report["results"]:
        if [r["b"], r["t"], r["d"]] == list(shape) and r["threads"] == threads:
            k = r["kernels"][r["auto"]]
            return {"kernel": r["auto"], "fwd_s": k["fwd_s"], "bwd_s": k["bwd_s"], "triad_s": r["triad_s"]}
    raise SystemExit(f"no fixpoint result for shape {shape} at {threads} threads")


def run_fixpoint(binary, threads, shape, reps):
    cmd = pin(threads) + [binary, "bench", "scan", "--json", "--threads", str(threads), "--shape", ",".join(map(str, shape)),
                          "--kernels", "simd,chunked", "--reps", str(reps)]
    res = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shape", default="8,16384,256", help="B,T,D")
    p.add_argument("--threads", default="1,2")
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--fixpoint", default=os.path.join(os.path.dirname(__file__), "../../target/release/fixpoint"))
    p.add_argument("--fixpoint-json", help="read fixpoint's `bench scan --json` output from this file instead")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    shape = tuple(int(x) for x in args.shape.split(","))
    if args.worker:
        worker(*shape, args.reps)
        return
    file_report = None
    if args.fixpoint_json:
        with open(args.fixpoint_json) as f:
            file_report = json.loads(f.read().strip().splitlines()[-1])
    rows = []
    for threads in [int(x) for x in args.threads.split(",")]:
        j = run_jax(threads, shape, args.reps)
        report = file_report or run_fixpoint(args.fixpoint, threads, shape, args.reps)
        fx = fixpoint_times(report, shape, threads)
        row = {
            "threads": threads,
            "fixpoint_kernel": fx["kernel"],
            "fixpoint_fwd_ms": 1e3 * fx["fwd_s"],
            "fixpoint_bwd_ms": 1e3 * fx["bwd_s"],
            "triad_ms": 1e3 * fx["triad_s"],
            "jax_associative_scan_ms": 1e3 * j["associative_scan_s"],
            "jax_lax_scan_time_major_ms": 1e3 * j["lax_scan_time_major_s"],
            "jax_lax_scan_btd_ms": 1e3 * j["lax_scan_btd_s"],
            "speedup_over_associative_scan": j["associative_scan_s"] / fx["fwd_s"],
            "speedup_over_lax_scan": j["lax_scan_time_major_s"] / fx["fwd_s"],
            "speedup_over_lax_scan_btd": j["lax_scan_btd_s"] / fx["fwd_s"],
            "jax_assoc_vs_scan_max_rel_diff": j["assoc_vs_scan_max_rel_diff"],
            "jax_version": j["jax_version"],
        }
        rows.append(row)
        print(
            f"{threads} thread(s), B,T,D = {shape}: fixpoint ({fx['kernel']}) {row['fixpoint_fwd_ms']:.2f} ms | "
            f"JAX associative_scan {row['jax_associative_scan_ms']:.1f} ms ({row['speedup_over_associative_scan']:.1f}x) | "
            f"lax.scan time-major {row['jax_lax_scan_time_major_ms']:.1f} ms ({row['speedup_over_lax_scan']:.1f}x) | "
            f"lax.scan (B,T,D) {row['jax_lax_scan_btd_ms']:.1f} ms ({row['speedup_over_lax_scan_btd']:.1f}x)"
        )
    print(json.dumps({"shape": shape, "rows": rows}))


if __name__ == "__main__":
    main()
