#!/usr/bin/env python3
"""Masks from images and reports with a TMCA model exported by `tmca export` (PyTorch only).

Command line (writes <stem>_mask.png, 0/255 at the image's size, and <stem>_prob.npy, the
foreground probability as float32):

    python tmca_predict.py EXPORT_DIR --image chest.png --report "Bilateral pulmonary ..." \\
        [--output predictions] [--device cpu] [--tta]

From Python:

    from tmca_predict import Predictor
    p = Predictor("EXPORT_DIR")                 # or Predictor() next to this file
    prob = p.predict(Image.open("chest.png"), "Bilateral pulmonary ...")   # (H, W) in [0, 1]
    mask = prob > p.threshold
    probs = p.predict_batch([img1, img2], [report1, report2])

The preprocessing is tmca's (`tmca predict`), which prepares a new image as `tmca data convert`
prepared the training images: the image as 8-bit RGB at its own size, gray by the Rec. 709
weights in integers for a one-channel model (tmca's `imageops::gray8`), resized to the model's size with
the image crate's triangle filter (anti-aliased when shrinking; reproduced exactly here), scaled
to [0, 1] and normalised with the run's mean and std; the report tokenised with the run's tokenizer.json
([CLS] ... [SEP], truncated to max_len keeping the closing [SEP], padded); the probability map
resized back to the image's size bilinearly with pixel centres aligned (PyTorch's
align_corners=False). Needs torch, numpy, safetensors, tokenizers and
Pillow.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import tmca_torch  # noqa: E402  (the model, shipped beside this file)

ImageLike = Union["PIL.Image.Image", np.ndarray]  # noqa: F821


def _narrow(a: np.ndarray, bits: Optional[int] = None) -> np.ndarray:
    """16-bit pixels as 8-bit, as tmca reads them: scaled from `bits`, the depth the training
    images were imported at, else from the smallest bit depth (8, 10, 12, 14 or 16) that holds
    the largest value (12-bit CT in a 16-bit PNG keeps its contrast)."""
    if bits is None:
        top = int(a.max(initial=0))
        bits = next((b for b in (8, 10, 12, 14, 16) if top < (1 << b)), 16)
    k = np.float32(255.0 / ((1 << bits) - 1))
    # tmca rounds half away from zero (Rust's f32::round); the values are not negative.
    return np.minimum(np.floor(a.astype(np.float32) * k + np.float32(0.5)), 255).astype(np.uint8)


def _rgb(image: ImageLike, bits: Optional[int] = None) -> np.ndarray:
    """An (H, W, 3) uint8 array as tmca reads the image: PIL images turned by their EXIF
    orientation and converted to RGB, 16-bit gray images (PIL mode I;16/I) and uint16 arrays
    scaled by `bits` (else their own bit depth), gray arrays replicated. (PIL itself reduces 16-bit RGB files to
    8 bits by their high byte; tmca scales those by their bit depth too.)"""
    if hasattr(image, "convert"):
        from PIL import ImageOps

        image = ImageOps.exif_transpose(image)
        if image.mode.startswith("I"):
            image = _narrow(np.asarray(image).astype(np.uint32).clip(0, 65535), bits)
        else:
            image = np.asarray(image.convert("RGB"))
    a = np.asarray(image)
    if a.dtype == np.uint16:
        a = _narrow(a, bits)
    if a.dtype != np.uint8:
        raise ValueError(f"expected 8- or 16-bit pixels, got {a.dtype}")
    if a.ndim == 2:
        a = np.repeat(a[:, :, None], 3, axis=2)
    if a.ndim != 3 or a.shape[2] not in (3, 4):
        raise ValueError(f"expected an (H, W), (H, W, 3) or (H, W, 4) image, got {a.shape}")
    return a[:, :, :3]


def swap_left_right(report: str) -> str:
    """"left" <-> "right" as whole words (any case, capitalisation kept): the report of the
    mirrored image (tmca's augment::swap_left_right)."""
    out, word = [], []

    def flush():
        w = "".join(word)
        r = {"left": "right", "right": "left"}.get(w.lower())
        if r is None:
            out.append(w)
        elif w.isupper():
            out.append(r.upper())
        elif w[:1].isupper():
            out.append(r[0].upper() + r[1:])
        else:
            out.append(r)
        word.clear()

    for ch in report:
        if ch.isalpha():
            word.append(ch)
        else:
            flush()
            out.append(ch)
    flush()
    return "".join(out)


def _luma(a: np.ndarray) -> np.ndarray:
    """Gray of (H, W, 3) uint8 RGB as tmca's import makes it (imageops::gray8: Rec. 709
    weights in integers, rounded)."""
    r, g, b = (a[:, :, k].astype(np.uint32) for k in range(3))
    return ((2126 * r + 7152 * g + 722 * b + 5000) // 10000).astype(np.uint8)


def _triangle_taps(n_in: int, n_out: int) -> List[Tuple[int, List[np.float32]]]:
    """First input index and weights of each output pixel of the image crate's triangle-filter
    resize (`imageops::resize(.., FilterType::Triangle)`), in its float32 arithmetic."""
    f = np.float32
    ratio = f(n_in) / f(n_out)
    sratio = ratio if ratio >= f(1) else f(1)
    support = f(1) * sratio
    taps = []
    for o in range(n_out):
        centre = (f(o) + f(0.5)) * ratio
        left = min(max(int(np.floor(centre - support)), 0), n_in - 1)
        right = min(max(int(np.ceil(centre + support)), left + 1), n_in)
        centre = centre - f(0.5)
        ws, total = [], f(0)
        for i in range(left, right):
            x = abs((f(i) - centre) / sratio)
            w = f(1) - x if x < f(1) else f(0)
            ws.append(w)
            total = f(total + w)
        taps.append((left, [f(w / total) for w in ws]))
    return taps


def _resize_u8(a: np.ndarray, hw: Tuple[int, int]) -> np.ndarray:
    """(H, W, C) uint8 resized to `hw` exactly as tmca's import resizes images (the image
    crate's triangle filter, anti-aliased when shrinking: columns, then rows, in float32,
    rounded half away from zero)."""
    h, w = hw
    if a.shape[:2] == (h, w):
        return a
    src = a.astype(np.float32)
    tmp = np.empty((h, a.shape[1], a.shape[2]), np.float32)
    for o, (left, ws) in enumerate(_triangle_taps(a.shape[0], h)):
        t = np.zeros(tmp.shape[1:], np.float32)
        for k, wt in enumerate(ws):
            t += src[left + k] * wt
        tmp[o] = t
    out = np.empty((h, w, a.shape[2]), np.float32)
    for o, (left, ws) in enumerate(_triangle_taps(a.shape[1], w)):
        t = np.zeros((h, a.shape[2]), np.float32)
        for k, wt in enumerate(ws):
            t += tmp[:, left + k] * wt
        out[:, o] = t
    out = np.clip(out, 0, 255)
    whole = np.trunc(out)
    return (whole + (out - whole >= 0.5)).astype(np.uint8)


def _resize(x: torch.Tensor, hw: Tuple[int, int]) -> torch.Tensor:
    if tuple(x.shape[-2:]) == tuple(hw):
        return x
    return F.interpolate(x, size=hw, mode="bilinear", align_corners=False, antialias=False)


class Predictor:
    """An exported model with its tokenizer and preprocessing."""

    def __init__(self, export_dir: Union[str, Path] = HERE, device: str = "cpu"):
        from safetensors.torch import load_file
        from tokenizers import Tokenizer

        d = Path(export_dir)
        meta = json.loads((d / "model.json").read_text())
        if meta.get("format") != "tmca-torch-export" or meta.get("version") != 1:
            raise ValueError(f"{d / 'model.json'}: not a version-1 tmca export")
        self.meta = meta
        self.device = device
        self.threshold = meta["threshold"]
        # An ensemble (`tmca export RUN RUN...`): one Predictor per member, probabilities averaged.
        self.members = [Predictor(d / m, device) for m in meta.get("ensemble", [])]
        if self.members:
            return
        cfg = tmca_torch.ModelConfig.from_json(meta["model"])
        bert = tmca_torch.BertConfig(**meta["bert"])
        self.model = tmca_torch.Tmca(cfg, bert)
        # strict: every parameter of the mirror comes from the file, and nothing else is there.
        self.model.load_state_dict(load_file(str(d / "weights.safetensors")), strict=True)
        self.model.eval().to(device)
        self.tokenizer = Tokenizer.from_file(str(d / "tokenizer.json"))
        self.tokenizer.no_truncation()
        self.tokenizer.no_padding()
        inp = meta["input"]
        self.channels, self.height, self.width = inp["channels"], inp["height"], inp["width"]
        # Channels the training images were stored with (1: gray, also for a 3-channel model),
        # and the bit depth their 16-bit images were imported at (None: each image its own).
        self.stored_channels = inp.get("stored_channels", self.channels)
        self.bit_depth = inp.get("bit_depth")
        self.mean = torch.tensor(inp["mean"], dtype=torch.float32).view(1, -1, 1, 1)
        self.std = torch.tensor(inp["std"], dtype=torch.float32).view(1, -1, 1, 1)
        self.max_len, self.pad_id = meta["max_len"], meta["pad_id"]

    def tokens(self, report: str) -> Tuple[List[int], List[int]]:
        """Token ids and attention mask of one report, `max_len` each (TextTokenizer::encode)."""
        enc = self.tokenizer.encode(report)
        ids = list(enc.ids)
        if len(ids) > self.max_len:
            last = ids[-1]
            ids = ids[: self.max_len]
            if enc.special_tokens_mask and enc.special_tokens_mask[-1] == 1:
                ids[-1] = last
        n = len(ids)
        pad = self.max_len - n
        return ids + [self.pad_id] * pad, [1] * n + [0] * pad

    def inputs(self, image: ImageLike) -> torch.Tensor:
        """The (1, C, h, w) model input of one image: prepared as tmca's import stored the
        training images (gray by Rec. 709 weights when they were gray, resized with an
        anti-aliasing triangle filter, `_resize_u8`), gray repeated into every channel of a
        3-channel model, then normalised (augment::process without augmentation)."""
        a = _rgb(image, self.bit_depth)
        if self.channels == 1 or self.stored_channels == 1:
            a = _luma(a)[:, :, None]
        a = _resize_u8(a, (self.height, self.width))
        x = torch.from_numpy(np.ascontiguousarray(a)).float().permute(2, 0, 1)[None] / 255.0
        if x.shape[1] != self.channels:
            x = x.expand(-1, self.channels, -1, -1)
        return (x.clamp(0.0, 1.0) - self.mean) / self.std

    def _tokens(self, reports: Sequence[str]) -> Tuple[torch.Tensor, torch.Tensor]:
        toks = [self.tokens(r) for r in reports]
        ids = torch.tensor([t[0] for t in toks], dtype=torch.long, device=self.device)
        att = torch.tensor([t[1] for t in toks], dtype=torch.float32, device=self.device)
        return ids, att

    @torch.no_grad()
    def predict_batch(self, images: Sequence[ImageLike], reports: Sequence[str],
                      tta: bool = False) -> List[np.ndarray]:
        """Foreground probabilities of each image (at its own size) described by its report;
        with `tta`, averaged with those of the mirrored image described by the mirrored report,
        mirrored back (`tmca predict --tta`); for an ensemble, the members' mean."""
        if len(images) != len(reports):
            raise ValueError(f"{len(images)} images but {len(reports)} reports")
        if not images:
            return []
        if self.members:
            each = [m.predict_batch(images, reports, tta) for m in self.members]
            return [np.mean([e[k] for e in each], axis=0) for k in range(len(images))]
        sizes = [_rgb(im, self.bit_depth).shape[:2] for im in images]
        x = torch.cat([self.inputs(im) for im in images]).to(self.device)
        probs = torch.sigmoid(self.model(x, *self._tokens(reports)).logits)
        if tta:
            mirrored = [swap_left_right(r) for r in reports]
            q = torch.sigmoid(self.model(x.flip(-1), *self._tokens(mirrored)).logits).flip(-1)
            probs = (probs + q) * 0.5
        probs = probs.float().cpu()
        return [_resize(probs[k : k + 1], hw)[0, 0].numpy() for k, hw in enumerate(sizes)]

    def predict(self, image: ImageLike, report: str, tta: bool = False) -> np.ndarray:
        """Foreground probabilities (H, W) of one image described by `report`."""
        return self.predict_batch([image], [report], tta)[0]


class _Usage(Exception):
    pass


def _fail(message: str, code: int) -> int:
    print(f"error: {message}", file=sys.stderr)
    return code


def main(argv: Sequence[str] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("export", nargs="?", default=str(HERE), help="the export folder (default: this file's)")
    ap.add_argument("--image", required=True, help="image file (PNG, JPEG, ...)")
    ap.add_argument("--report", required=True, help="the report describing it")
    ap.add_argument("--output", default="predictions", help="folder for <stem>_mask.png and <stem>_prob.npy")
    ap.add_argument("--device", default="cpu", help="torch device, e.g. cuda")
    ap.add_argument("--tta", action="store_true",
                    help="flip test-time augmentation (with the mirrored report), as tmca predict --tta")
    a = ap.parse_args(argv)
    from PIL import Image, UnidentifiedImageError

    # Mistakes get a line and tmca's exit codes (2 usage, 3 bad input, 4 I/O), no traceback.
    try:
        if not (Path(a.export) / "model.json").is_file():
            raise _Usage(f"{a.export}: not a tmca export (no model.json; `tmca export RUN --output DIR` writes one)")
        p = Predictor(a.export, a.device)
        image = Image.open(a.image)
        prob = p.predict(image, a.report, a.tta)
        out = Path(a.output)
        out.mkdir(parents=True, exist_ok=True)
    except _Usage as e:
        return _fail(str(e), 2)
    except (UnidentifiedImageError, ValueError) as e:
        return _fail(f"{a.image}: {e}", 3)
    except OSError as e:
        return _fail(str(e), 4)
    except RuntimeError as e:  # e.g. a device torch cannot use
        return _fail(f"--device {a.device}: {e}", 2)
    stem = Path(a.image).stem
    Image.fromarray(np.where(prob > p.threshold, 255, 0).astype(np.uint8)).save(out / f"{stem}_mask.png")
    np.save(out / f"{stem}_prob.npy", prob.astype(np.float32))
    print(f"{out / (stem + '_mask.png')}: {int((prob > p.threshold).sum())} foreground pixels of {prob.size}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
