#!/usr/bin/env python3
"""Checks a tmca dump against the PyTorch mirror `tmca_ref.py`.

    python3 tests/reference/parity.py DUMP_DIR

DUMP_DIR is one case (a folder with `config.json`) or a folder of cases, as written by
`tests/torch_parity.rs` (the format is documented there). For each case this script

* resolves the raw model config with the mirror's presets and compares it with tmca's;
* builds `tmca_ref.Tmca`, requires its parameter names to equal tmca's and loads tmca's weights
  with `load_state_dict(strict=True)`; requires the same AdamW decay group as tmca's and the
  same learning-rate schedule (a table of steps);
* runs the first step's forward, loss and backward in f32 and compares the logits, every loss
  term, the enhancement maps and contrastive embeddings (relative error <= 1e-4) and the
  gradient of every parameter (<= 1e-3), failing when a gradient is missing on either side;
* takes 3 training steps (clipping, schedule, AdamW with tmca's groups) and compares each step's
  loss (<= 1e-4) and gradient norm (<= 1e-3), and every weight after the last step twice:
  applying the mirror's optimiser to tmca's own gradients of each step (the optimiser alone,
  relative error <= 1e-5), and end to end, the mirror computing its own gradients (see below).

Relative error of a tensor: max|mirror − tmca| / max(max|tmca|, floor). The floor is 0 except
for gradients, where it is 1e-2 × the largest gradient in the same module (the tensors sharing
the name up to the last dot): attention key biases get a mathematically zero gradient (softmax
cancels them), pure f32 rounding noise on both sides (~1e-8 of their weight's gradient in tmca,
differing by up to ~5e-7 of it from PyTorch's noise). A gradient under the floor is still held
to 1e-5 of its module's largest, absolutely.

End to end, weights are compared in units of the largest displacement AdamW can make,
Σ_k lr_k: max|mirror − tmca| / Σ_k lr_k <= 0.1. Relative to the weight it would be meaningless:
AdamW divides each gradient element by its own magnitude, so an element whose gradient is near
zero moves by up to ±lr on rounding differences. For the same reason tensors whose gradient is
pure noise (under 1e-5 of their module's largest) are left out of this comparison; the
optimiser-alone check still covers them.

Prints a table (case, worst errors and where) and exits 1 naming every failing check.
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional

import torch
from safetensors.torch import load_file

sys.path.insert(0, str(Path(__file__).resolve().parent))
import tmca_ref as ref  # noqa: E402

TOL_OUTPUT = 1e-4  # logits, loss terms, maps, contrastive embeddings, per-step loss
TOL_GRAD = 1e-3  # every parameter's gradient, per-step gradient norm
TOL_WEIGHT = 0.1  # every weight after the steps end to end, in units of Σ_k lr_k
TOL_OPT = 1e-5  # every weight after the steps, mirror's optimiser on tmca's gradients
GRAD_FLOOR = 1e-2  # × the largest gradient of the same module
NOISE = 1e-5  # a gradient under NOISE × its module's largest is rounding noise
TOL_LR = 1e-12


def rel_err(a: torch.Tensor, b: torch.Tensor, floor: float = 0.0) -> float:
    """max|a − b| / max(max|b|, floor); inf on a shape mismatch or a non-finite value."""
    a, b = a.detach().double(), b.detach().double()
    if a.shape != b.shape:
        return math.inf
    if a.numel() == 0:
        return 0.0
    if not (torch.isfinite(a).all() and torch.isfinite(b).all()):
        return math.inf
    d = float((a - b).abs().max())
    if d == 0.0:
        return 0.0
    return d / max(float(b.abs().max()), floor, 1e-30)


def abs_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """max|a − b|; inf on a shape mismatch or a non-finite value."""
    a, b = a.detach().double(), b.detach().double()
    if a.shape != b.shape:
        return math.inf
    d = float((a - b).abs().max()) if a.numel() else 0.0
    return d if math.isfinite(d) else math.inf


class Worst:
    """The largest error seen for one kind of check, and where."""

    def __init__(self) -> None:
        self.err, self.where = 0.0, "-"

    def add(self, err: float, where: str) -> None:
        if err > self.err or (math.isinf(err) and self.where == "-"):
            self.err, self.where = err, where

    def cell(self, with_where: bool = True) -> str:
        s = f"{self.err:.1e}"
        return f"{s} {self.where}" if with_where and self.where != "-" else s


class Case:
    """Checks one dump folder."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.cfg = json.loads((folder / "config.json").read_text())
        self.name = self.cfg.get("case", folder.name)
        self.failures: List[str] = []
        self.notes: List[str] = []
        self.worst = {k: Worst() for k in ("out", "grad", "weight", "opt")}
        self.noise: List[str] = []  # parameters whose gradient is rounding noise

    def fail(self, what: str) -> None:
        self.failures.append(f"{self.name}: {what}")

    def check(self, kind: str, where: str, err: float, tol: float, what: str = "") -> None:
        self.worst[kind].add(err, where)
        if not err <= tol:
            self.fail(f"{where}{what}: error {err:.3e} > {tol:g}")

    def run(self) -> None:
        try:
            self._run()
        except Exception as e:  # a crash of the mirror is a failure of this case
            self.fail(f"{type(e).__name__}: {e}")

    def _run(self) -> None:
        c = self.cfg
        # Configuration: the mirror resolves the presets itself.
        cfg = ref.ModelConfig.from_json(c["model_raw"])
        tr = c["text_raw"]
        text = ref.TextConfig(max_len=tr["max_len"], hidden=tr["hidden"], layers=tr["layers"],
                              heads=tr["heads"], intermediate=tr["intermediate"])
        cfg.resolve(text)
        if cfg.to_json() != c["model"]:
            self.fail(f"resolved model config differs: mirror {cfg.to_json()} tmca {c['model']}")
            cfg = ref.ModelConfig.from_json(c["model"])
        for k in ("hidden", "layers", "heads", "intermediate"):
            if getattr(text, k) != c["text"][k]:
                self.fail(f"resolved text.{k}: mirror {getattr(text, k)} tmca {c['text'][k]}")
        bert = ref.BertConfig.scratch(text, c["bert"]["vocab_size"])
        if dataclasses.asdict(bert) != c["bert"]:
            self.fail(f"BERT config differs: mirror {dataclasses.asdict(bert)} tmca {c['bert']}")
            bert = ref.BertConfig(**c["bert"])

        # Parameters: same names, strict load.
        model = ref.Tmca(cfg, bert)
        weights = load_file(str(self.folder / "weights.safetensors"))
        mine = set(model.state_dict())
        for n in sorted(mine - set(weights)):
            self.fail(f"parameter {n} of the mirror is missing in tmca's weights")
        for n in sorted(set(weights) - mine):
            self.fail(f"tmca parameter {n} is missing in the mirror")
        if self.failures:
            return
        model.load_state_dict(weights, strict=True)
        named = list(model.named_parameters())
        self.n_params = len(named)
        self.numel = sum(p.numel() for _, p in named)

        # Optimiser groups and schedule.
        decay = {n for n, p in named if ref.decays(n, p)}
        if decay != set(c["decay"]):
            self.fail(f"AdamW decay group differs: only mirror {sorted(decay - set(c['decay']))},"
                      f" only tmca {sorted(set(c['decay']) - decay)}")
        for row in c["schedule_table"]:
            s = ref.Schedule(row["base_lr"], row["warmup_steps"], row["total_steps"],
                             row["min_ratio"])
            for k, lr in enumerate(row["lrs"]):
                if abs(s.lr(k) - lr) > TOL_LR * max(1.0, abs(lr)):
                    self.fail(f"schedule {row} step {k}: mirror {s.lr(k)} tmca {lr}")
                    break

        b = load_file(str(self.folder / "batch.safetensors"))
        exp = load_file(str(self.folder / "expected.safetensors"))
        groups = b["groups"].tolist()
        adamw = ref.AdamWConfig(**c["adamw"])
        sched = ref.Schedule(**c["schedule"])
        clip = c["grad_clip"]
        steps = c["steps"]
        self.clipped = sum(1 for s in steps if clip > 0 and s["grad_norm"] > clip)

        # End to end: the mirror's own forward, backward and optimiser.
        opt = ref.make_adamw(named, adamw)
        for k, st in enumerate(steps):
            out, losses = ref.forward_backward(model, b, groups)
            if k == 0:
                self._compare_first_step(out, losses, exp, named)
            self.check("out", f"step {k} loss", rel_err(losses.total, torch.tensor(st["loss"])),
                       TOL_OUTPUT)
            norm, lr = ref.optimiser_step([p for _, p in named], opt, sched, k, clip)
            self.check("grad", f"step {k} grad norm",
                       rel_err(torch.tensor(norm), torch.tensor(st["grad_norm"])), TOL_GRAD)
            if abs(lr - st["lr"]) > TOL_LR:
                self.fail(f"step {k} learning rate: mirror {lr} tmca {st['lr']}")
        lr_sum = sum(st["lr"] for st in steps)
        self._compare_weights("weight", {n: p for n, p in named if n not in self.noise}, exp,
                              TOL_WEIGHT, scale=lr_sum, skipped=set(self.noise))

        # The optimiser alone: the mirror's clipping, schedule and AdamW on tmca's gradients.
        params = {n: torch.nn.Parameter(weights[n].clone()) for n, _ in named}
        opt = ref.make_adamw(list(params.items()), adamw)
        for k in range(len(steps)):
            for n, p in params.items():
                g = exp.get(f"grad.{k}.{n}")
                p.grad = None if g is None else g.clone()
            norm, _ = ref.optimiser_step(list(params.values()), opt, sched, k, clip)
            self.check("opt", f"step {k} grad norm (tmca's gradients)",
                       rel_err(torch.tensor(norm), torch.tensor(steps[k]["grad_norm"])), 1e-6)
        self._compare_weights("opt", params, exp, TOL_OPT)

    def _compare_first_step(self, out: ref.Output, losses: ref.Losses,
                            exp: Dict[str, torch.Tensor], named) -> None:
        def cmp(key: str, mine: Optional[torch.Tensor]) -> None:
            theirs = exp.get(key)
            if (mine is None) != (theirs is None):
                side = "tmca" if theirs is None else "the mirror"
                self.fail(f"{key} is missing in {side}")
                return
            if mine is not None:
                self.check("out", key, rel_err(mine, theirs), TOL_OUTPUT)

        cmp("logits", out.logits)
        cmp("loss.total", losses.total)
        cmp("loss.dice", losses.dice)
        cmp("loss.bce", losses.bce)
        cmp("loss.contrastive", losses.contrastive)
        cmp("loss.aux", losses.aux)
        for k in range(max(len(losses.per_level), 4)):
            cmp(f"loss.level.{k}", losses.per_level[k] if k < len(losses.per_level) else None)
        maps = dict(out.maps)
        for l in range(1, 5):
            cmp(f"map.{l}", maps.get(l))
        for k in range(max(len(out.contrastive), 4)):
            lb = out.contrastive[k] if k < len(out.contrastive) else None
            for f in ref.LevelBatch._fields:
                cmp(f"con.{k}.{f}", None if lb is None else getattr(lb, f))

        rust = {n: exp[f"grad.0.{n}"] for n, _ in named if f"grad.0.{n}" in exp}
        module_max: Dict[str, float] = {}
        for n, g in rust.items():
            m = n.rsplit(".", 1)[0]
            module_max[m] = max(module_max.get(m, 0.0), float(g.abs().max()))
        for n, p in named:
            if p.grad is None:
                self.fail(f"parameter {n} gets no gradient in the mirror")
            elif n not in rust:
                self.fail(f"parameter {n} gets no gradient in tmca")
            else:
                floor = GRAD_FLOOR * module_max[n.rsplit(".", 1)[0]]
                if float(rust[n].abs().max()) < NOISE * module_max[n.rsplit(".", 1)[0]]:
                    self.noise.append(n)
                self.check("grad", n, rel_err(p.grad, rust[n], floor), TOL_GRAD)
        names = {n for n, _ in named}
        for key in exp:
            if key.startswith("grad.") and key.split(".", 2)[2] not in names:
                self.fail(f"tmca has a gradient {key} for a parameter the mirror lacks")

    def _compare_weights(self, kind: str, params: Dict[str, torch.Tensor],
                         exp: Dict[str, torch.Tensor], tol: float,
                         scale: Optional[float] = None, skipped=frozenset()) -> None:
        """Weights after the steps: relative error, or max|a − b| / scale when scale is given."""
        for n, p in params.items():
            theirs = exp.get(f"after.{n}")
            if theirs is None:
                self.fail(f"tmca's weights after the steps lack {n}")
            elif scale is None:
                self.check(kind, n, rel_err(p, theirs), tol, " after the steps (optimiser alone)")
            else:
                self.check(kind, n, abs_err(p, theirs) / scale, tol,
                           " after the steps (end to end, in lr units)")
        for key in exp:
            name = key[len("after."):]
            if key.startswith("after.") and name not in params and name not in skipped:
                self.fail(f"tmca has a weight {key} the mirror lacks")


def main(argv: List[str]) -> int:
    if len(argv) != 2:
        print(__doc__.strip().splitlines()[0])
        print("usage: parity.py DUMP_DIR", file=sys.stderr)
        return 2
    torch.set_num_threads(2)
    torch.set_default_dtype(torch.float32)
    root = Path(argv[1])
    folders = [root] if (root / "config.json").exists() else sorted(
        p for p in root.iterdir() if (p / "config.json").exists())
    if not folders:
        print(f"no dumps (config.json) under {root}", file=sys.stderr)
        return 2
    print("clipped: steps whose gradient norm was clipped; noise: gradients that are rounding"
          " noise (left out of the end-to-end weights)")
    print(f"torch {torch.__version__}; tolerances: outputs {TOL_OUTPUT:g}, gradients "
          f"{TOL_GRAD:g} (floor {GRAD_FLOOR:g}·module max), weights {TOL_WEIGHT:g} lr units, "
          f"optimiser alone {TOL_OPT:g}")
    header = ("case", "params", "clipped", "noise", "outputs", "gradients",
              "weights (lr units)", "optimiser", "s")
    rows, failures = [], []
    for f in folders:
        t = time.time()
        case = Case(f)
        case.run()
        w = case.worst
        rows.append((case.name, str(getattr(case, "numel", "?")),
                     f"{getattr(case, 'clipped', '?')}/{len(case.cfg.get('steps', []))}",
                     str(len(case.noise)),
                     w["out"].cell(), w["grad"].cell(), w["weight"].cell(), w["opt"].cell(False),
                     f"{time.time() - t:.1f}"))
        failures += case.failures
    widths = [max(len(r[i]) for r in rows + [header]) for i in range(len(header))]
    for r in [header] + rows:
        print("  ".join(s.ljust(widths[i]) for i, s in enumerate(r)).rstrip())
    if failures:
        print(f"\nFAILED: {len(failures)} check(s)")
        for m in failures[:50]:
            print(f"  {m}")
        if len(failures) > 50:
            print(f"  ... and {len(failures) - 50} more")
        return 1
    print(f"\nOK: {len(rows)} case(s) match")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
