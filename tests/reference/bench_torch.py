#!/usr/bin/env python3
"""The PyTorch side of `tmca bench step`: one measurement of the mirror `tmca_ref.py`.

    python3 tests/reference/bench_torch.py --size 224 --mode train [--batch 8] [--warmup 2]
        [--steps 5] [--profile-reps 3] [--threads 2]

Builds the embedded default config's model (`cpu-small`, scratch text encoder, contrastive
alignment and LTE at every level) at SIZE² and prints one JSON line with the keys of tmca's probe
(`launch/src/cmd/step/result.rs`):

* `--mode train`: training steps as tmca takes them (batch -> tensors, forward with masks, loss,
  backward, gradient clipping, AdamW with tmca's parameter groups) on a synthetic batch; the
  median step, the median of each phase, peak RSS (`ru_maxrss`) after the timed steps; with
  `--profile-reps N` the replay profile: every call of the building blocks during one forward
  + loss is recorded (forward hooks on the modules, wrappers of the mirror's functions) and
  replayed alone N times, forward and forward + backward of sum(y * g), exactly as tmca's
  profile does (`launch/src/cmd/step/replay.rs`).
* `--mode infer`: forward passes without masks under `torch.no_grad()`.
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable, List, Tuple

import numpy as np
import torch
import torch.nn as nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
import tmca_ref as ref  # noqa: E402

# tmca's profile parts (trainer/src/profile.rs Part::name), in its display order.
PARTS = ["conv2d", "depthwise conv", "transposed conv", "attention core", "linear", "layernorm",
         "gelu", "contrastive & pooling", "seg. loss"]

VOCAB = 1000  # [text] vocab_size of the default config
LR = 2e-3  # [optim] lr
GRAD_CLIP = 1.0  # [optim] grad_clip


def build(size: int) -> ref.Tmca:
    """The default config's model ([model] preset = "cpu-small", [text] max_len = 40)."""
    cfg = ref.ModelConfig(preset="cpu-small")
    text = ref.TextConfig(max_len=40)
    cfg.resolve(text)
    torch.manual_seed(0)
    return ref.Tmca(cfg, ref.BertConfig.scratch(text, VOCAB))


def synthetic_batch(size: int, batch: int, max_len: int = 40) -> Tuple[dict, List[int]]:
    """Host arrays as tmca's probe makes them (launch/src/cmd/step/inputs.rs): uniform images,
    rectangular masks (sample 0 empty), 8..max_len random tokens, samples 1 and 2 with the same
    report."""
    rng = np.random.default_rng(0)
    images = rng.uniform(-1.0, 1.0, (batch, 3, size, size)).astype(np.float32)
    masks = np.zeros((batch, 1, size, size), np.float32)
    for i in range(1, batch):
        h, w = rng.integers(size // 4, size // 2 + 1, 2)
        y0, x0 = rng.integers(0, size - h + 1), rng.integers(0, size - w + 1)
        masks[i, 0, y0:y0 + h, x0:x0 + w] = 1.0
    ids = np.zeros((batch, max_len), np.int64)
    att = np.zeros((batch, max_len), np.int64)
    for i in range(batch):
        n = rng.integers(min(8, max_len), max_len + 1)
        ids[i, :n] = rng.integers(1, VOCAB, n)
        att[i, :n] = 1
    groups = [1 if i == 2 else i for i in range(batch)]
    return {"images": images, "token_ids": ids, "attention": att, "masks": masks}, groups


def to_tensors(host: dict) -> dict:
    return {k: torch.from_numpy(v) for k, v in host.items()}


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e6  # KiB on Linux


# --------------------------------------------------------------------------------------------
# Training and inference
# --------------------------------------------------------------------------------------------


def train_step(model, params, opt, host, groups) -> List[Tuple[str, float]]:
    """One step of train/mod.rs; returns its phases in ms."""
    t = [time.perf_counter()]

    def lap() -> float:
        now = time.perf_counter()
        ms = (now - t[0]) * 1e3
        t[0] = now
        return ms

    b = to_tensors(host)
    inputs = lap()
    for p in params:
        p.grad = None
    out = model(b["images"], b["token_ids"], b["attention"], b["masks"])
    losses = model.loss(out, b["masks"], groups)
    v = losses.total.item()
    if not math.isfinite(v):
        raise RuntimeError(f"loss {v}")
    forward = lap()
    losses.total.backward()
    backward = lap()
    # What a PyTorch training loop does (the mirror's clip_grad_norm adds in float64 to check
    # tmca's rule, which costs copies a PyTorch user would not make).
    torch.nn.utils.clip_grad_norm_([p for p in params if p.grad is not None], GRAD_CLIP)
    clip = lap()
    opt.step()
    optimizer = lap()
    del out, losses, b
    release = lap()
    return [("inputs", inputs), ("forward", forward), ("backward", backward), ("clip", clip),
            ("optimizer", optimizer), ("release", release)]


def run_train(a) -> dict:
    model = build(a.size)
    params = list(model.parameters())
    opt = ref.make_adamw(list(model.named_parameters()), ref.AdamWConfig(), lr=LR)
    host, groups = synthetic_batch(a.size, a.batch)
    steps, phases = [], {}
    for i in range(a.warmup + a.steps):
        ph = train_step(model, params, opt, host, groups)
        if i >= a.warmup:
            steps.append(sum(ms for _, ms in ph))
            for k, ms in ph:
                phases.setdefault(k, []).append(ms)
    r = result(a, steps)
    r["phases"] = {k: statistics.median(v) for k, v in phases.items()}
    if a.profile_reps > 0:
        r["profile"] = profile(model, host, groups, a.profile_reps)
    return r


def run_infer(a) -> dict:
    model = build(a.size)
    host, _ = synthetic_batch(a.size, a.batch)
    steps = []
    with torch.no_grad():
        for i in range(a.warmup + a.steps):
            t = time.perf_counter()
            b = to_tensors(host)
            logits = model(b["images"], b["token_ids"], b["attention"], None).logits
            ms = (time.perf_counter() - t) * 1e3
            del logits
            if i >= a.warmup:
                steps.append(ms)
    return result(a, steps)


def result(a, steps: List[float]) -> dict:
    return {
        "framework": "pytorch",
        "version": torch.__version__,
        "mode": a.mode,
        "size": a.size,
        "batch": a.batch,
        "threads": torch.get_num_threads(),
        "img_per_s": a.batch * 1e3 / statistics.median(steps),
        "step_ms": steps,
        "peak_rss_mb": peak_rss_mb(),
    }


# --------------------------------------------------------------------------------------------
# Profile: record the building blocks' calls, replay each alone
# --------------------------------------------------------------------------------------------


class Recorder:
    def __init__(self):
        self.on = False
        self.depth = 0
        self.calls: List[Tuple[str, Callable, Any]] = []  # (part, fn, args)

    def record(self, part: str, fn: Callable, args: tuple) -> None:
        if self.on and self.depth == 0:
            self.calls.append((part, fn, args))


REC = Recorder()


def flatten(obj, out: List[torch.Tensor]):
    """A spec of `obj` with its tensors moved into `out` (rebuilt by `rebuild`)."""
    if isinstance(obj, torch.Tensor):
        out.append(obj)
        return ("T", len(out) - 1)
    if isinstance(obj, tuple) and hasattr(obj, "_fields"):
        return ("N", type(obj), [flatten(x, out) for x in obj])
    if isinstance(obj, (list, tuple)):
        return ("L", type(obj), [flatten(x, out) for x in obj])
    return ("C", obj)


def rebuild(spec, ts: List[torch.Tensor]):
    kind = spec[0]
    if kind == "T":
        return ts[spec[1]]
    if kind == "N":
        return spec[1](*[rebuild(s, ts) for s in spec[2]])
    if kind == "L":
        return spec[1](rebuild(s, ts) for s in spec[2])
    return spec[1]


def wrap_function(owner, name: str, part: str) -> None:
    """Replaces owner.name by a recording wrapper (calls inside it are not recorded)."""
    orig = getattr(owner, name)

    def wrapper(*args):
        REC.record(part, orig, args)
        REC.depth += 1
        try:
            return orig(*args)
        finally:
            REC.depth -= 1

    setattr(owner, name, wrapper)


def module_part(m: nn.Module):
    if isinstance(m, nn.Conv2d):
        return "depthwise conv" if m.groups > 1 else "conv2d"
    if isinstance(m, nn.ConvTranspose2d):
        return "transposed conv"
    if isinstance(m, nn.Linear):
        return "linear"
    if isinstance(m, ref.LayerNorm):
        return "layernorm"
    if isinstance(m, ref.ContrastiveLoss):
        return "contrastive & pooling"
    return None


def mha_core(q, k, v, bias, scale):
    """The attention core of tmca_ref.MultiHeadAttention.forward (same expression)."""
    scores = q @ k.transpose(2, 3) * scale
    if bias is not None:
        scores = scores + bias
    return torch.softmax(scores, dim=-1) @ v


def bert_core(q, k, v, mask_bias, hd):
    """The attention core of tmca_ref.BertAttention.forward (same expression)."""
    scores = q @ k.transpose(2, 3) / math.sqrt(hd) + mask_bias
    return torch.softmax(scores, dim=-1) @ v


def attention_cores(m: nn.Module, args: tuple) -> None:
    """Records the attention core of an MHA / BERT attention call, its q, k, v computed aside
    (the projections themselves are recorded as linear layers by the real call)."""
    if not REC.on or REC.depth:
        return
    REC.depth += 1
    try:
        if isinstance(m, ref.MultiHeadAttention):
            x, ctx, key_mask = args
            q, k, v = m._split(m.q(x)), m._split(m.k(ctx)), m._split(m.v(ctx))
            bias = None if key_mask is None else ref.padding_bias(key_mask, x.dtype)
            core_args = (q, k, v, bias, 1.0 / math.sqrt(m.head_dim))
            fn = mha_core
        else:
            x, mask_bias = args
            b, l, h = x.shape
            hd = h // m.heads

            def split(t):
                return t.reshape(b, l, m.heads, hd).transpose(1, 2)

            sa = m.self
            q, k, v = split(sa.query(x)), split(sa.key(x)), split(sa.value(x))
            core_args, fn = (q, k, v, mask_bias, hd), bert_core
    finally:
        REC.depth -= 1
    REC.record("attention core", fn, core_args)


def install(model: nn.Module) -> None:
    for m in model.modules():
        part = module_part(m)
        if part is not None:
            def pre(mod, args, part=part):
                REC.record(part, mod, args)
                REC.depth += 1

            def post(mod, args, out):
                REC.depth -= 1

            m.register_forward_pre_hook(pre)
            m.register_forward_hook(post)
        elif isinstance(m, (ref.MultiHeadAttention, ref.BertAttention)):
            m.register_forward_pre_hook(attention_cores)
    wrap_function(ref, "gelu", "gelu")
    wrap_function(ref, "l2_normalize", "contrastive & pooling")
    wrap_function(ref, "masked_pool", "contrastive & pooling")
    wrap_function(ref, "downsample_mask", "contrastive & pooling")
    wrap_function(ref.Lte, "map", "contrastive & pooling")
    wrap_function(ref, "soft_dice", "seg. loss")
    wrap_function(ref, "bce_with_logits", "seg. loss")


def median_ms(reps: int, f: Callable[[], float]) -> float:
    return statistics.median(f() for _ in range(max(reps, 1)))


def replay(model: nn.Module, part: str, fn: Callable, args: tuple, reps: int
           ) -> Tuple[float, float]:
    """(forward ms, backward ms) of one recorded call replayed alone."""
    tensors: List[torch.Tensor] = []
    spec = flatten(args, tensors)
    ins = [t.detach().clone().requires_grad_(True) if t.requires_grad else t.detach()
           for t in tensors]

    def run() -> List[torch.Tensor]:
        out: List[torch.Tensor] = []
        flatten(fn(*rebuild(spec, ins)), out)
        return [y for y in out if y.is_floating_point()]

    def clear():
        for p in model.parameters():
            p.grad = None
        for t in ins:
            t.grad = None

    first = run()
    if not first:
        return 0.0, 0.0
    gen = torch.Generator().manual_seed(0)
    gs = [torch.randn(y.shape, generator=gen, dtype=y.dtype) for y in first]

    def weighted(ys):
        return sum((y * g).sum() for y, g in zip(ys, gs))

    def backward(ys) -> None:
        s = weighted(ys)
        if s.requires_grad:
            s.backward()

    backward(run())  # warm-up

    def t_forward() -> float:
        t = time.perf_counter()
        ys = run()
        ms = (time.perf_counter() - t) * 1e3
        del ys
        return ms

    def t_full() -> float:
        clear()
        t = time.perf_counter()
        backward(run())
        return (time.perf_counter() - t) * 1e3

    detached = [y.detach().requires_grad_(y.requires_grad) for y in first]

    def t_glue() -> float:
        clear()
        for y in detached:
            y.grad = None
        t = time.perf_counter()
        backward(detached)
        return (time.perf_counter() - t) * 1e3

    fwd = median_ms(reps, t_forward)
    full = median_ms(reps, t_full)
    glue = median_ms(reps, t_glue)
    clear()
    return fwd, max(full - fwd - glue, 0.0)


def profile(model: ref.Tmca, host: dict, groups: List[int], reps: int) -> List[dict]:
    install(model)
    b = to_tensors(host)
    REC.on, REC.calls = True, []
    out = model(b["images"], b["token_ids"], b["attention"], b["masks"])
    losses = model.loss(out, b["masks"], groups)
    REC.on = False
    del out, losses
    parts = {}
    for part, fn, args in REC.calls:
        f, bw = replay(model, part, fn, args, reps)
        p = parts.setdefault(part, {"part": part, "calls": 0, "forward_ms": 0.0,
                                    "backward_ms": 0.0})
        p["calls"] += 1
        p["forward_ms"] += f
        p["backward_ms"] += bw
    return [parts[p] for p in PARTS if p in parts]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=int, required=True, help="image size (a multiple of 32)")
    ap.add_argument("--mode", choices=["train", "infer"], required=True)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    ap.add_argument("--steps", type=int, default=5, help="timed steps")
    ap.add_argument("--profile-reps", type=int, default=0,
                    help="repetitions of each replayed call (train; 0 = no profile)")
    ap.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    r = run_train(a) if a.mode == "train" else run_infer(a)
    print(json.dumps(r))


if __name__ == "__main__":
    main()
