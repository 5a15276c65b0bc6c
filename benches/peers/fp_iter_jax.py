#!/usr/bin/env python3
"""JAX peer of one Fixed-Point RNN iteration (mixer + gating + associative scan), for
`fp_iter_speedup_over_jax` of `fixpoint bench fixed-point`.

Same layer as the Rust bench: B = 8, D = 128, T = 1024, Householder rank 2 (scale 2),
input-only mixer (coefficients u, alpha fixed across iterations), lambda in (0, 1):

    x~ = Q (b*x - h) + h,   Q = H_2 H_1,  H_i = I - 2 alpha_i u_i u_i^T
    h' = scan(lambda, (1 - lambda) * x~)   via jax.lax.associative_scan

Run on CPU at the Rust bench's thread count, e.g.
    XLA_FLAGS="--xla_cpu_multi_thread_eigen=true intra_op_parallelism_threads=2" \
    JAX_PLATFORMS=cpu python3 benches/peers/fp_iter_jax.py --threads 2
It prints one JSON object: {"jax_fp_iter_ms": ..., "B": .., "D": .., "T": .., "rank": ..};
pass jax_fp_iter_ms as FixedPointOpts::peer_jax_iter_ms (or the CLI's --peer-json).
"""
import argparse
import json
import os
import time


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--time", type=int, default=1024)
    ap.add_argument("--rank", type=int, default=2)
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    os.environ.setdefault(
        "XLA_FLAGS",
        f"--xla_force_host_platform_device_count=1 --xla_cpu_multi_thread_eigen=true "
        f"intra_op_parallelism_threads={a.threads}",
    )
    import jax
    import jax.numpy as jnp

    key = jax.random.PRNGKey(0)
    k1, k2, k3, k4, k5 = jax.random.split(key, 5)
    B, T, D, R = a.batch, a.time, a.dim, a.rank
    u = jax.nn.silu(jax.random.normal(k1, (B, T, R, D)))
    u = u / jnp.maximum(jnp.linalg.norm(u, axis=-1, keepdims=True), 1e-6)
    alpha = jax.nn.sigmoid(jax.random.normal(k2, (B, T, R)))
    lam = jax.nn.sigmoid(jax.random.normal(k3, (B, T, D)))
    bx = jax.random.uniform(k4, (B, T, D), minval=-1.0, maxval=1.0)
    h = jax.random.uniform(k5, (B, T, D), minval=-0.1, maxval=0.1)

    def combine(l, r):
        a1, b1 = l
        a2, b2 = r
        return a1 * a2, a2 * b1 + b2

    @jax.jit
    def step(h):
        v = bx - h
        for i in range(R):
            ui = u[:, :, i, :]
            v = v - 2.0 * alpha[:, :, i, None] * ui * jnp.sum(ui * v, axis=-1, keepdims=True)
        xt = v + h
        _, out = jax.lax.associative_scan(combine, (lam, (1.0 - lam) * xt), axis=1)
        return out

    step(h).block_until_ready()
    ts = []
    for _ in range(a.reps):
        t0 = time.perf_counter()
        step(h).block_until_ready()
        ts.append(time.perf_counter() - t0)
    ts.sort()
    print(json.dumps({"jax_fp_iter_ms": ts[len(ts) // 2] * 1e3, "B": B, "D": D, "T": T, "rank": R,
                      "threads": a.threads, "jax": jax.__version__}))


if __name__ == "__main__":
    main()
