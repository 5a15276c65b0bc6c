#!/usr/bin/env python3
"""JAX peer of `fixpoint dino --bench-steps`: one random-teacher distillation step on CPU.

Plain JAX (no flax/optax), the same models and step as src/train/dino.rs::bench_distill_step:

* MLP student: 3072 -> 1024 -> 512 (ReLU after each), Kaiming-normal weights, zero biases.
* ViT student: patch 4 on 32x32 (64 patches + CLS), dim 192, depth 6, 3 heads, MLP 768,
  pre-norm (LayerNorm eps 1e-6), exact GELU, learned position embedding, final LN of CLS.
* VGG11 student (no BN; `--models vgg11`, `--width-mult`): torchvision list "A" of 3x3
  convs (pad 1, bias, ReLU) and 2x2 max-pools on 32x32, flattened 1x1x512 embedding,
  Kaiming-normal fan-out weights. Computed in NHWC (XLA's preferred CPU layout; the
  input is transposed once), so JAX gets its fastest convolution.
* DINO head: E -> 2048 -> 2048 -> 256 (exact GELU between), L2 normalisation, 256 -> m
  (no bias), trunc-normal 0.02 weights.
* Step: teacher logits from cached bottleneck outputs (z_T @ W_T), p = softmax(t),
  student forward, L = -mean_b sum_k p log_softmax(s), backward, AdamW (lr constant,
  betas 0.9/0.999, eps 1e-8, wd 0 on >=2-D parameters and 0.01 on 1-D ones).

Usage:  python3 benches/peers/dino_jax.py [--threads 2] [--batch 128] [--out-dim 4096]
                                          [--steps 10] [--models mlp,vit,vgg11] [--width-mult 1]
Pin the thread count the same way for both sides (this script restricts its CPU affinity
to the first N cores before importing JAX; run the Rust side with --threads N).
Prints one line per model and a JSON object as the last line.
"""
import argparse
import json
import os
import statistics
import time

ap = argparse.ArgumentParser()
ap.add_argument("--threads", type=int, default=None)
ap.add_argument("--batch", type=int, default=128)
ap.add_argument("--out-dim", type=int, default=4096)
ap.add_argument("--steps", type=int, default=10)
ap.add_argument("--warmup", type=int, default=2)
ap.add_argument("--models", default="mlp,vit")
ap.add_argument("--width-mult", type=float, default=1.0)
args = ap.parse_args()
if args.threads:
    os.sched_setaffinity(0, set(range(args.threads)))
    os.environ.setdefault("XLA_FLAGS", "")
    os.environ["XLA_FLAGS"] += f" --xla_cpu_multi_thread_eigen={'true' if args.threads > 1 else 'false'}"

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

jax.config.update("jax_default_matmul_precision", "highest")


def trunc(key, shape, std=0.02):
    return std * jax.random.truncated_normal(key, -2.0 / std, 2.0 / std, shape, jnp.float32)


def linear_default(key, i, o):
    k1, k2 = jax.random.split(key)
    b = 1.0 / i**0.5
    return {"w": jax.random.uniform(k1, (i, o), jnp.float32, -b, b), "b": jax.random.uniform(k2, (o,), jnp.float32, -b, b)}


def init_head(key, e, m):
    ks = jax.random.split(key, 4)
    dims = [e, 2048, 2048, 256]
    mlp = [{"w": trunc(ks[i], (dims[i], dims[i + 1])), "b": jnp.zeros(dims[i + 1])} for i in range(3)]
    return {"mlp": mlp, "last": trunc(ks[3], (256, m))}


def head_bottleneck(h, e):
    x = e
    for i, l in enumerate(h["mlp"]):
        x = x @ l["w"] + l["b"]
        if i < 2:
            x = jax.nn.gelu(x, approximate=False)
    return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def init_mlp(key, m):
    ks = jax.random.split(key, 3)
    dims = [3072, 1024, 512]
    enc = [{"w": jax.random.normal(ks[i], (dims[i], dims[i + 1])) * (2.0 / dims[i]) ** 0.5, "b": jnp.zeros(dims[i + 1])} for i in range(2)]
    return {"enc": enc, "head": init_head(ks[2], 512, m)}


def mlp_embed(p, x):
    h = x.reshape(x.shape[0], -1)
    for l in p["enc"]:
        h = jax.nn.relu(h @ l["w"] + l["b"])
    return h


D, DEPTH, HEADS, MLP, PATCH = 192, 6, 3, 768, 4


def init_vit(key, m):
    ks = jax.random.split(key, 4 + DEPTH)
    blocks = []
    for i in range(DEPTH):
        kb = jax.random.split(ks[4 + i], 4)
        blocks.append({
            "ln1": {"g": jnp.ones(D), "b": jnp.zeros(D)},
            "qkv": linear_default(kb[0], D, 3 * D),
            "proj": linear_default(kb[1], D, D),
            "ln2": {"g": jnp.ones(D), "b": jnp.zeros(D)},
            "fc1": linear_default(kb[2], D, MLP),
            "fc2": linear_default(kb[3], MLP, D),
        })
    return {
        "patch": linear_default(ks[0], 3 * PATCH * PATCH, D),
        "cls": jax.random.normal(ks[1], (1, 1, D)),
        "pos": jax.random.normal(ks[2], (1, 65, D)),
        "blocks": blocks,
        "ln": {"g": jnp.ones(D), "b": jnp.zeros(D)},
        "head": init_head(ks[3], D, m),
    }


def ln(p, x, eps=1e-6):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / jnp.sqrt(var + eps) * p["g"] + p["b"]


def vit_embed(p, x):
    b = x.shape[0]
    g = 32 // PATCH
    patches = x.reshape(b, 3, g, PATCH, g, PATCH).transpose(0, 2, 4, 1, 3, 5).reshape(b, g * g, 3 * PATCH * PATCH)
    h = patches @ p["patch"]["w"] + p["patch"]["b"]
    h = jnp.concatenate([jnp.broadcast_to(p["cls"], (b, 1, D)), h], axis=1) + p["pos"]
    dh = D // HEADS
    for blk in p["blocks"]:
        y = ln(blk["ln1"], h)
        qkv = (y @ blk["qkv"]["w"] + blk["qkv"]["b"]).reshape(b, 65, 3, HEADS, dh).transpose(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        a = jax.nn.softmax(q @ k.transpose(0, 1, 3, 2) / dh**0.5, axis=-1)
        o = (a @ v).transpose(0, 2, 1, 3).reshape(b, 65, D)
        h = h + o @ blk["proj"]["w"] + blk["proj"]["b"]
        y = ln(blk["ln2"], h)
        h = h + jax.nn.gelu(y @ blk["fc1"]["w"] + blk["fc1"]["b"], approximate=False) @ blk["fc2"]["w"] + blk["fc2"]["b"]
    return ln(p["ln"], h[:, 0])


VGG11 = [64, 0, 128, 0, 256, 256, 0, 512, 512, 0, 512, 512, 0]


def init_vgg(key, m):
    chans = [max(1, round(c * args.width_mult)) if c else 0 for c in VGG11]
    ks = jax.random.split(key, 9)
    convs, c_in, i = [], 3, 0
    for c in chans:
        if c:
            w = jax.random.normal(ks[i], (3, 3, c_in, c)) * (2.0 / (c * 9)) ** 0.5
            convs.append({"w": w, "b": jnp.zeros(c)})
            c_in, i = c, i + 1
    return {"enc": convs, "head": init_head(ks[8], c_in, m)}


def vgg_embed(p, x):
    h = x.transpose(0, 2, 3, 1)
    convs = iter(p["enc"])
    for c in VGG11:
        if c:
            l = next(convs)
            h = jax.lax.conv_general_dilated(h, l["w"], (1, 1), ((1, 1), (1, 1)),
                                             dimension_numbers=("NHWC", "HWIO", "NHWC"))
            h = jax.nn.relu(h + l["b"])
        else:
            h = jax.lax.reduce_window(h, -jnp.inf, jax.lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")
    return h.reshape(h.shape[0], -1)


def make_step(embed, lr=1e-4):
    def loss_fn(params, x, p):
        s = head_bottleneck(params["head"], embed(params, x)) @ params["head"]["last"]
        return -(p * jax.nn.log_softmax(s, axis=-1)).sum(-1).mean()

    @jax.jit
    def step(params, opt, t, x, zt, wt):
        p = jax.nn.softmax(zt @ wt, axis=-1)
        loss, g = jax.value_and_grad(loss_fn)(params, x, p)
        m, v = opt
        t = t + 1
        m = jax.tree.map(lambda m, g: 0.9 * m + 0.1 * g, m, g)
        v = jax.tree.map(lambda v, g: 0.999 * v + 0.001 * g * g, v, g)
        bc1, bc2 = 1 - 0.9**t, 1 - 0.999**t

        def upd(w, m, v):
            wd = 0.0 if w.ndim >= 2 else 0.01
            w = w * (1 - lr * wd)
            return w - lr / bc1 * m / (jnp.sqrt(v) / jnp.sqrt(bc2) + 1e-8)

        return jax.tree.map(upd, params, m, v), (m, v), t, loss

    return step


def bench(name, init, embed):
    key = jax.random.PRNGKey(0)
    kt, ks, kx = jax.random.split(key, 3)
    teacher, params = init(kt, args.out_dim), init(ks, args.out_dim)
    x = jax.random.normal(kx, (args.batch, 3, 32, 32))
    zt = jax.jit(lambda p, x: head_bottleneck(p["head"], embed(p, x)))(teacher, x)
    wt = teacher["head"]["last"]
    opt = (jax.tree.map(jnp.zeros_like, params), jax.tree.map(jnp.zeros_like, params))
    step = make_step(embed)
    t = jnp.float32(0.0)
    times = []
    for i in range(args.warmup + args.steps):
        t0 = time.perf_counter()
        params, opt, t, loss = step(params, opt, t, x, zt, wt)
        loss.block_until_ready()
        if i >= args.warmup:
            times.append(time.perf_counter() - t0)
    med = statistics.median(times)
    n = sum(int(v.size) for v in jax.tree.leaves(params))
    print(f"jax {name} step: {n} params, batch {args.batch}, m = {args.out_dim}: median {1e3 * med:.1f} ms/step, "
          f"{args.batch / med:.1f} images/s")
    return {"student_model": name, "params": n, "batch_size": args.batch, "out_dim": args.out_dim,
            "median_step_s": med, "images_per_s": args.batch / med, "step_s": times}


out = {"threads": args.threads or os.cpu_count(), "jax": jax.__version__, "results": []}
models = {"mlp": (init_mlp, mlp_embed), "vit": (init_vit, vit_embed), "vgg11": (init_vgg, vgg_embed)}
for name in args.models.split(","):
    out["results"].append(bench(name, *models[name]))
# The first model's rate, read by `fixpoint bench conv --peer-json`.
out["jax_images_per_s"] = out["results"][0]["images_per_s"]
print(json.dumps(out))
