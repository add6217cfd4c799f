"""PyTorch reference of tmca's TMCA model, its losses and its optimiser.

A readable mirror of the Rust code in `trainer/src`, written to check it (see `parity.py` and
`tests/torch_parity.rs`): one class or function per tmca module, each saying which Rust file it
mirrors. Module and parameter names equal tmca's `vb.pp(...)` paths, so

    model = Tmca(cfg, bert)
    model.load_state_dict(safetensors.torch.load_file("weights.safetensors"), strict=True)

loads a tmca checkpoint's `weights.safetensors` as is.

Where PyTorch has the standard operation tmca claims to implement (GELU with erf, LayerNorm,
depthwise/transposed convolutions, BCE with logits, log-softmax, AdamW), this file uses
PyTorch's own, so parity also checks tmca's decompositions of them. Where tmca deliberately
differs from the common PyTorch idiom (L2 normalisation smooth at 0, the clamped BCE of the
enhancement maps, the -1e4 padding bias, gradient clipping that only ever scales down), this file
follows tmca and says so.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Dict, List, NamedTuple, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

Tensor = torch.Tensor


# --------------------------------------------------------------------------------------------
# Configuration (trainer/src/model/config.rs, trainer/src/model/text_encoder.rs BertConfig)
# --------------------------------------------------------------------------------------------

# name -> (dims, depths, embed_dim, (text hidden, layers, heads, intermediate))
PRESETS = {
    "cpu-tiny": ([8, 16, 24, 32], [1, 1, 1, 1], 16, (16, 1, 2, 32)),
    "cpu-small": ([16, 32, 64, 96], [1, 1, 2, 1], 32, (64, 2, 4, 128)),
    "tiny": ([96, 192, 384, 768], [3, 3, 9, 3], 256, (256, 4, 4, 1024)),
}


@dataclass
class ModelConfig:
    """`[model]` (model/config.rs ModelConfig), with the same defaults."""

    preset: str = "cpu-small"
    dims: List[int] = field(default_factory=list)
    depths: List[int] = field(default_factory=list)
    kernel_size: int = 7
    layer_scale_init: float = 1e-2
    in_channels: int = 3
    embed_dim: int = 0
    text_guidance: bool = True
    contrastive_levels: List[int] = field(default_factory=lambda: [1, 2, 3, 4])
    contrastive_weights: List[float] = field(default_factory=lambda: [1.0, 1.0, 1.0, 1.0])
    # `lambda` is a Python keyword: the JSON key "lambda" maps to this field.
    lambda_: float = 0.1
    tau_init: float = 0.07
    tau_min: float = 0.01
    tau_max: float = 1.0
    background_negatives: bool = True
    target_sensitive: bool = True
    lte_levels: List[int] = field(default_factory=lambda: [1, 2, 3, 4])
    lte_tau: float = 0.1
    cross_attention: bool = True
    attn_heads: int = 2
    aux_weight: float = 0.0
    # tmca's choice of implementation (fused kernels or composed candle ops) of the same maths;
    # the mirror has one implementation, so the value only has to be a valid one.
    ops: str = "fused"

    @classmethod
    def from_json(cls, d: dict) -> "ModelConfig":
        d = dict(d)
        if "lambda" in d:
            d["lambda_"] = d.pop("lambda")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"unknown model config fields {sorted(unknown)}")
        return cls(**d)

    def to_json(self) -> dict:
        d = dataclasses.asdict(self)
        d["lambda"] = d.pop("lambda_")
        return d

    def resolve(self, text: "TextConfig") -> None:
        """Fills preset-derived fields left empty / 0 (ModelConfig::resolve; validation is
        tmca's job, only the filling is mirrored)."""
        dims, depths, embed, (hidden, layers, heads, inter) = PRESETS[self.preset]
        if not self.dims:
            self.dims = list(dims)
        if not self.depths:
            self.depths = list(depths)
        if self.embed_dim == 0:
            self.embed_dim = embed
        if text.hidden == 0:
            text.hidden = hidden
        if text.layers == 0:
            text.layers = layers
        if text.heads == 0:
            text.heads = heads
        if text.intermediate == 0:
            text.intermediate = inter

    def uses_contrastive(self) -> bool:
        return self.text_guidance and self.lambda_ > 0.0 and len(self.contrastive_levels) > 0

    def uses_lte(self) -> bool:
        return self.text_guidance and len(self.lte_levels) > 0

    def projected_levels(self) -> List[int]:
        """Levels that need the projections g_l, h_l (contrastive ∪ LTE), ascending."""
        v = set()
        if self.uses_contrastive():
            v.update(self.contrastive_levels)
        if self.uses_lte():
            v.update(self.lte_levels)
        return sorted(v)


@dataclass
class TextConfig:
    """The sizes of `[text]` (model/config.rs TextConfig) the scratch encoder uses."""

    max_len: int = 24
    hidden: int = 0
    layers: int = 0
    heads: int = 0
    intermediate: int = 0


@dataclass
class BertConfig:
    """The Hugging Face BERT fields the encoder uses (text_encoder.rs BertConfig)."""

    vocab_size: int
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    hidden_act: str = "gelu"

    @classmethod
    def scratch(cls, text: TextConfig, vocab_size: int) -> "BertConfig":
        """BertConfig::scratch: the from-scratch encoder of `[text]`."""
        return cls(vocab_size, text.hidden, text.layers, text.heads, text.intermediate,
                   max_position_embeddings=text.max_len, type_vocab_size=2,
                   layer_norm_eps=1e-12, hidden_act="gelu")


# --------------------------------------------------------------------------------------------
# Building blocks (trainer/src/nn)
# --------------------------------------------------------------------------------------------


def gelu(x: Tensor) -> Tensor:
    """nn/mod.rs gelu: the exact (erf) GELU."""
    return F.gelu(x, approximate="none")


def l2_normalize(x: Tensor, dim: int) -> Tensor:
    """nn/mod.rs l2_normalize: x / sqrt(Σx² + 1e-12). Not F.normalize (max(‖x‖, ε)): tmca's
    form is smooth at 0."""
    return x / torch.sqrt(x.square().sum(dim, keepdim=True) + 1e-12)


class LayerNorm(nn.Module):
    """nn/norm.rs LayerNorm: over the last dimension, keys `weight`, `bias`."""

    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        return F.layer_norm(x, (x.shape[-1],), self.weight, self.bias, self.eps)


class LayerNorm2d(LayerNorm):
    """nn/norm.rs LayerNorm2d: LayerNorm over the channels of (B, C, H, W)."""

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


def depthwise_conv2d(dim: int, k: int) -> nn.Conv2d:
    """nn/depthwise.rs DepthwiseConv2d: `nn.Conv2d(dim, dim, k, padding=k/2, groups=dim)`
    (tmca computes it as a sum of shifted copies)."""
    return nn.Conv2d(dim, dim, k, padding=k // 2, groups=dim)


def padding_bias(mask: Tensor, dtype: torch.dtype) -> Tensor:
    """(B, L) 1/0 key mask -> (B, 1, 1, L) additive bias: 0 for tokens, -1e4 for padding (as
    nn/attention.rs and text_encoder.rs, not -inf)."""
    return ((mask.to(dtype) - 1.0) * 1e4)[:, None, None, :]


class MultiHeadAttention(nn.Module):
    """nn/attention.rs MultiHeadAttention: q from one sequence, k/v from another, key-padding
    mask; keys `q`, `k`, `v`, `o`."""

    def __init__(self, q_dim: int, kv_dim: int, dim: int, heads: int):
        super().__init__()
        assert heads > 0 and dim % heads == 0
        self.q = nn.Linear(q_dim, dim)
        self.k = nn.Linear(kv_dim, dim)
        self.v = nn.Linear(kv_dim, dim)
        self.o = nn.Linear(dim, q_dim)
        self.heads = heads
        self.head_dim = dim // heads

    def _split(self, x: Tensor) -> Tensor:
        b, n, _ = x.shape
        return x.reshape(b, n, self.heads, self.head_dim).transpose(1, 2)

    def forward(self, x: Tensor, ctx: Tensor, key_mask: Optional[Tensor]) -> Tensor:
        b, n, _ = x.shape
        q, k, v = self._split(self.q(x)), self._split(self.k(ctx)), self._split(self.v(ctx))
        scores = q @ k.transpose(2, 3) * (1.0 / math.sqrt(self.head_dim))
        if key_mask is not None:
            scores = scores + padding_bias(key_mask, x.dtype)
        out = torch.softmax(scores, dim=-1) @ v
        return self.o(out.transpose(1, 2).reshape(b, n, self.heads * self.head_dim))


# --------------------------------------------------------------------------------------------
# Image encoder (trainer/src/model/image_encoder.rs)
# --------------------------------------------------------------------------------------------


class Block(nn.Module):
    """image_encoder.rs Block: ConvNeXt block (depthwise conv, LayerNorm, MLP ×4, layer scale
    `gamma`, residual)."""

    def __init__(self, dim: int, cfg: ModelConfig):
        super().__init__()
        self.dwconv = depthwise_conv2d(dim, cfg.kernel_size)
        self.norm = LayerNorm(dim, 1e-6)
        self.pwconv1 = nn.Linear(dim, 4 * dim)
        self.pwconv2 = nn.Linear(4 * dim, dim)
        self.gamma = nn.Parameter(torch.full((dim,), cfg.layer_scale_init))

    def forward(self, x: Tensor) -> Tensor:
        y = self.norm(self.dwconv(x).permute(0, 2, 3, 1))
        y = self.pwconv2(gelu(self.pwconv1(y))) * self.gamma
        return x + y.permute(0, 3, 1, 2)


class Downsample(nn.Module):
    """image_encoder.rs Downsample: LayerNorm then a 2×2 stride-2 convolution."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.norm = LayerNorm2d(cin, 1e-6)
        self.conv = nn.Conv2d(cin, cout, 2, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(self.norm(x))


class Stem(nn.Module):
    """image_encoder.rs ImageEncoder's stem (`stem.conv`, `stem.norm`): 4×4 stride-4 conv,
    LayerNorm."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 4, stride=4)
        self.norm = LayerNorm2d(cout, 1e-6)

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(self.conv(x))


class ImageEncoder(nn.Module):
    """image_encoder.rs ImageEncoder: stem + 4 ConvNeXt stages at strides 4/8/16/32."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        d = cfg.dims
        self.stem = Stem(cfg.in_channels, d[0])
        self.downsample = nn.ModuleList(Downsample(d[i - 1], d[i]) for i in range(1, 4))
        self.stages = nn.ModuleList(
            nn.ModuleList(Block(d[i], cfg) for _ in range(cfg.depths[i])) for i in range(4))

    def forward(self, x: Tensor) -> List[Tensor]:
        """x (B, C, H, W) -> [F1 (B, d0, H/4, W/4), F2, F3, F4 (B, d3, H/32, W/32)]."""
        h = self.stem(x)
        feats = []
        for i, stage in enumerate(self.stages):
            if i > 0:
                h = self.downsample[i - 1](h)
            for block in stage:
                h = block(h)
            feats.append(h)
        return feats


# --------------------------------------------------------------------------------------------
# Text encoder (trainer/src/model/text_encoder.rs): BERT with Hugging Face key names
# --------------------------------------------------------------------------------------------


class BertEmbeddings(nn.Module):
    """text_encoder.rs TextEncoder's `embeddings.*`: word + position + token type (all 0),
    LayerNorm."""

    def __init__(self, c: BertConfig):
        super().__init__()
        self.word_embeddings = nn.Embedding(c.vocab_size, c.hidden_size)
        self.position_embeddings = nn.Embedding(c.max_position_embeddings, c.hidden_size)
        self.token_type_embeddings = nn.Embedding(c.type_vocab_size, c.hidden_size)
        self.LayerNorm = LayerNorm(c.hidden_size, c.layer_norm_eps)
        for e in (self.word_embeddings, self.position_embeddings, self.token_type_embeddings):
            nn.init.normal_(e.weight, 0.0, 0.02)

    def forward(self, ids: Tensor) -> Tensor:
        b, l = ids.shape
        pos = torch.arange(l, device=ids.device).unsqueeze(0).expand(b, l)
        types = torch.zeros_like(ids)
        x = self.word_embeddings(ids) + self.position_embeddings(pos) \
            + self.token_type_embeddings(types)
        return self.LayerNorm(x)


class BertSelfAttentionProjections(nn.Module):
    """text_encoder.rs SelfAttention's `attention.self.{query,key,value}`."""

    def __init__(self, c: BertConfig):
        super().__init__()
        h = c.hidden_size
        self.query = nn.Linear(h, h)
        self.key = nn.Linear(h, h)
        self.value = nn.Linear(h, h)


class BertDenseNorm(nn.Module):
    """A `dense` linear followed (by the caller) by a residual and `LayerNorm`
    (text_encoder.rs: `attention.output.*` and `output.*`)."""

    def __init__(self, cin: int, cout: int, eps: float):
        super().__init__()
        self.dense = nn.Linear(cin, cout)
        self.LayerNorm = LayerNorm(cout, eps)

    def forward(self, x: Tensor, residual: Tensor) -> Tensor:
        return self.LayerNorm(self.dense(x) + residual)


class BertAttention(nn.Module):
    """text_encoder.rs SelfAttention: multi-head self-attention, dense, residual, post-LN."""

    def __init__(self, c: BertConfig):
        super().__init__()
        self.self = BertSelfAttentionProjections(c)
        self.output = BertDenseNorm(c.hidden_size, c.hidden_size, c.layer_norm_eps)
        self.heads = c.num_attention_heads

    def forward(self, x: Tensor, mask_bias: Tensor) -> Tensor:
        b, l, h = x.shape
        hd = h // self.heads

        def split(t: Tensor) -> Tensor:
            return t.reshape(b, l, self.heads, hd).transpose(1, 2)

        q, k, v = split(self.self.query(x)), split(self.self.key(x)), split(self.self.value(x))
        scores = q @ k.transpose(2, 3) / math.sqrt(hd) + mask_bias
        ctx = (torch.softmax(scores, dim=-1) @ v).transpose(1, 2).reshape(b, l, h)
        return self.output(ctx, x)


class BertIntermediate(nn.Module):
    """text_encoder.rs Layer's `intermediate.dense` + GELU."""

    def __init__(self, c: BertConfig):
        super().__init__()
        self.dense = nn.Linear(c.hidden_size, c.intermediate_size)

    def forward(self, x: Tensor) -> Tensor:
        return gelu(self.dense(x))


class BertLayer(nn.Module):
    """text_encoder.rs Layer: attention, feed-forward, residual, post-LN."""

    def __init__(self, c: BertConfig):
        super().__init__()
        self.attention = BertAttention(c)
        self.intermediate = BertIntermediate(c)
        self.output = BertDenseNorm(c.intermediate_size, c.hidden_size, c.layer_norm_eps)

    def forward(self, x: Tensor, mask_bias: Tensor) -> Tensor:
        a = self.attention(x, mask_bias)
        return self.output(self.intermediate(a), a)


class BertEncoder(nn.Module):
    """`encoder.layer.N` of text_encoder.rs TextEncoder."""

    def __init__(self, c: BertConfig):
        super().__init__()
        self.layer = nn.ModuleList(BertLayer(c) for _ in range(c.num_hidden_layers))


class TextEncoder(nn.Module):
    """text_encoder.rs TextEncoder: token features T (B, L, H) and the sentence embedding t
    (B, H), the mean over non-pad tokens."""

    def __init__(self, c: BertConfig):
        super().__init__()
        if c.hidden_act != "gelu":
            raise ValueError(f"BERT hidden_act '{c.hidden_act}' is not supported (only gelu)")
        self.embeddings = BertEmbeddings(c)
        self.encoder = BertEncoder(c)
        self.hidden = c.hidden_size

    def forward(self, ids: Tensor, attention: Tensor) -> Tuple[Tensor, Tensor]:
        x = self.embeddings(ids)
        am = attention.to(x.dtype)
        mask_bias = padding_bias(attention, x.dtype)
        for layer in self.encoder.layer:
            x = layer(x, mask_bias)
        w = am.unsqueeze(-1)
        count = w.sum(1).clamp(min=1.0)
        return x, (x * w).sum(1) / count


# --------------------------------------------------------------------------------------------
# Target-sensitive semantic distance (trainer/src/model/tssd.rs)
# --------------------------------------------------------------------------------------------


class LevelProjection(nn.Module):
    """tssd.rs LevelProjection: g_l (`image`, 1×1 conv on F_l) and h_l (`text`, linear on t)."""

    def __init__(self, image_dim: int, text_dim: int, embed_dim: int):
        super().__init__()
        self.image = nn.Conv2d(image_dim, embed_dim, 1)
        self.text = nn.Linear(text_dim, embed_dim)

    def pixels(self, f: Tensor) -> Tensor:
        """z_l (B, D, h, w), L2-normalised over D."""
        return l2_normalize(self.image(f), 1)

    def report(self, t: Tensor) -> Tensor:
        """u_l (B, D), L2-normalised (tssd.rs `LevelProjection::text`)."""
        return l2_normalize(self.text(t), 1)


class Pooled(NamedTuple):
    """tssd.rs Pooled."""

    target: Tensor  # v+ (B, D), normalised; the global mean for samples without target
    background: Tensor  # v- (B, D), normalised
    has_background: Tensor  # (B,) 1.0 where both foreground and background are present


def downsample_mask(mask: Tensor, h: int, w: int) -> Tensor:
    """tssd.rs downsample_mask: area (average-pool) downsampling to (h, w)."""
    mh, mw = mask.shape[-2:]
    if mh % h or mw % w or mh // h != mw // w:
        raise ValueError(f"mask {mh}x{mw} cannot be area-downsampled to {h}x{w}")
    k = mh // h
    return mask if k == 1 else F.avg_pool2d(mask, k)


def masked_pool(z: Tensor, m: Tensor) -> Pooled:
    """tssd.rs masked_pool: mask-weighted mean of z (B, D, h, w) under the soft mask m
    (B, 1, h, w); samples without target pool over the whole image."""
    b, d, h, w = z.shape
    z = z.reshape(b, d, h * w)
    m = m.reshape(b, 1, h * w)
    area = m.sum(-1)  # (B, 1)
    has = (area > 0).to(z.dtype)
    m_eff = m * has.unsqueeze(2) + (1.0 - has).unsqueeze(2)

    def pool(weights: Tensor) -> Tensor:
        s = (z * weights).sum(-1)
        n = weights.sum(-1).clamp(min=1e-6)
        return l2_normalize(s / n, 1)

    inv = 1.0 - m
    has_bg = (inv.sum(-1) > 0).to(z.dtype) * has
    return Pooled(pool(m_eff), pool(inv), has_bg.squeeze(1))


# --------------------------------------------------------------------------------------------
# Multi-level contrastive alignment (trainer/src/model/contrastive.rs)
# --------------------------------------------------------------------------------------------


class LevelBatch(NamedTuple):
    """contrastive.rs LevelBatch: one level's embeddings over the (global) batch."""

    target: Tensor
    text: Tensor
    background: Tensor
    has_background: Tensor


def positives(groups: List[int], dtype: torch.dtype, device=None) -> Tensor:
    """contrastive.rs positives: P_ij = 1 where samples i and j have the same report."""
    g = torch.as_tensor(groups, device=device)
    return (g[:, None] == g[None, :]).to(dtype)


def multi_positive_nce(logits: Tensor, pos: Tensor) -> Tensor:
    """contrastive.rs multi_positive_nce: mean over rows of −Σ_j P_ij log softmax_ij / Σ_j P_ij."""
    logp = F.log_softmax(logits, dim=-1)
    return -((logp * pos).sum(-1) / pos.sum(-1)).mean()


class ContrastiveLoss(nn.Module):
    """contrastive.rs ContrastiveLoss: symmetric multi-positive InfoNCE per level, learnable
    log inverse temperatures `logit_scale` (one per level, clamped to [ln 1/τ_max, ln 1/τ_min]),
    each sample's background embedding an extra negative for its own report."""

    def __init__(self, levels: List[int], weights: List[float], tau_init: float,
                 tau_min: float, tau_max: float, background: bool):
        super().__init__()
        self.logit_scale = nn.Parameter(torch.full((len(levels),), math.log(1.0 / tau_init)))
        self.levels = list(levels)
        self.weights = list(weights)
        self.min_scale = math.log(1.0 / tau_max)
        self.max_scale = math.log(1.0 / tau_min)
        self.background = background

    def temperatures(self) -> List[float]:
        s = self.logit_scale.detach().clamp(self.min_scale, self.max_scale)
        return [math.exp(-x) for x in s.tolist()]

    def level_loss(self, k: int, b: LevelBatch, pos: Tensor) -> Tensor:
        scale = self.logit_scale.clamp(self.min_scale, self.max_scale)[k].exp()
        sim = b.target @ b.text.t()  # (N, N): image i vs text j
        l_i2t = multi_positive_nce(sim * scale, pos)
        t2i = sim.t() * scale
        if self.background:
            n = pos.shape[0]
            # cos(u_i, v-_i), masked out (-1e4) where there is no target or no background.
            bg = (b.text * b.background).sum(1, keepdim=True) * scale
            has = b.has_background.unsqueeze(1)
            bg = bg * has + (has - 1.0) * 1e4
            logits = torch.cat([t2i, bg], 1)
            pos_ext = torch.cat([pos, pos.new_zeros(n, 1)], 1)
            l_t2i = multi_positive_nce(logits, pos_ext)
        else:
            l_t2i = multi_positive_nce(t2i, pos)
        return (l_i2t + l_t2i) * 0.5

    def forward(self, batches: List[LevelBatch], groups: List[int]) -> Tuple[Tensor, List[Tensor]]:
        """Σ_l w_l L_l and the per-level losses; batches[k] belongs to levels[k]."""
        pos = positives(groups, self.logit_scale.dtype, self.logit_scale.device)
        total = self.logit_scale.new_zeros(())
        per_level = []
        for k, b in enumerate(batches):
            l = self.level_loss(k, b, pos)
            total = total + l * self.weights[k]
            per_level.append(l)
        return total, per_level


# --------------------------------------------------------------------------------------------
# Language-guided target enhancement (trainer/src/model/lte.rs)
# --------------------------------------------------------------------------------------------


class Lte(nn.Module):
    """lte.rs Lte: A = σ((cos(z, u) − b)/τ_a); G' = G ⊙ (1 + A) + CrossAttn(LN(G), T)."""

    def __init__(self, dim: int, text_dim: int, tau: float, cross_attention: bool, heads: int):
        super().__init__()
        if cross_attention:
            self.attn_norm = LayerNorm(dim, 1e-6)
            self.attn = MultiHeadAttention(dim, text_dim, dim, heads)
        else:
            self.attn_norm = None
            self.attn = None
        self.bias = nn.Parameter(torch.zeros(1))
        self.tau = tau

    def map(self, z: Tensor, u: Tensor) -> Tensor:
        """A (B, 1, h, w) from normalised z (B, D, h, w) and u (B, D)."""
        cos = (z * u[:, :, None, None]).sum(1, keepdim=True)
        return torch.sigmoid((cos - self.bias) / self.tau)

    def forward(self, g: Tensor, a: Tensor, tokens: Tensor, attention: Tensor) -> Tensor:
        out = g * (a + 1.0)
        if self.attn is None:
            return out
        b, c, h, w = g.shape
        q = self.attn_norm(g.flatten(2).transpose(1, 2))  # (B, hw, C)
        y = self.attn(q, tokens, attention)
        return out + y.transpose(1, 2).reshape(b, c, h, w)


# --------------------------------------------------------------------------------------------
# Decoder (trainer/src/model/decoder.rs)
# --------------------------------------------------------------------------------------------


class ConvBlock(nn.Module):
    """decoder.rs ConvBlock: (conv3×3 → LayerNorm → GELU) × 2."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.norm1 = LayerNorm2d(cout, 1e-6)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.norm2 = LayerNorm2d(cout, 1e-6)

    def forward(self, x: Tensor) -> Tensor:
        x = gelu(self.norm1(self.conv1(x)))
        return gelu(self.norm2(self.conv2(x)))


class UpStage(nn.Module):
    """decoder.rs UpStage: ×2 transposed conv of the deeper features, concat the skip, conv."""

    def __init__(self, deep: int, skip: int):
        super().__init__()
        self.up = nn.ConvTranspose2d(deep, skip, 2, stride=2)
        self.block = ConvBlock(2 * skip, skip)

    def forward(self, deep: Tensor, skip: Tensor) -> Tensor:
        return self.block(torch.cat([self.up(deep), skip], 1))


class Head(nn.Module):
    """decoder.rs Head: from stride 4 to full resolution, one logit channel."""

    def __init__(self, dim: int):
        super().__init__()
        half = max(dim // 2, 4)
        self.up1 = nn.ConvTranspose2d(dim, half, 2, stride=2)
        self.conv1 = nn.Conv2d(half, half, 3, padding=1)
        self.up2 = nn.ConvTranspose2d(half, half, 2, stride=2)
        self.out = nn.Conv2d(half, 1, 1)

    def forward(self, x: Tensor) -> Tensor:
        x = gelu(self.conv1(self.up1(x)))
        return self.out(gelu(self.up2(x)))


class Decoder(nn.Module):
    """The `decoder.up.N` and `decoder.head` parts of model/mod.rs Tmca."""

    def __init__(self, d: List[int]):
        super().__init__()
        self.up = nn.ModuleList(UpStage(d[i], d[i - 1]) for i in range(1, 4))
        self.head = Head(d[0])


# --------------------------------------------------------------------------------------------
# Losses (trainer/src/model/loss.rs)
# --------------------------------------------------------------------------------------------


def bce_with_logits(logits: Tensor, target: Tensor) -> Tensor:
    """loss.rs bce_with_logits: mean BCE on logits (PyTorch's own)."""
    return F.binary_cross_entropy_with_logits(logits, target)


def bce(prob: Tensor, target: Tensor) -> Tensor:
    """loss.rs bce: BCE on probabilities clamped to [1e-6, 1 − 1e-6] (tmca's clamp, not
    F.binary_cross_entropy's log clamp at −100)."""
    p = prob.clamp(1e-6, 1.0 - 1e-6)
    return -(target * p.log() + (1.0 - target) * (1.0 - p).log()).mean()


def soft_dice(logits: Tensor, target: Tensor) -> Tensor:
    """loss.rs soft_dice: 1 − (2Σpy + 1)/(Σp + Σy + 1) per image, batch mean."""
    p = torch.sigmoid(logits).flatten(1)
    y = target.flatten(1)
    dice = (2.0 * (p * y).sum(-1) + 1.0) / (p.sum(-1) + y.sum(-1) + 1.0)
    return (1.0 - dice).mean()


# --------------------------------------------------------------------------------------------
# The model (trainer/src/model/mod.rs)
# --------------------------------------------------------------------------------------------


class Output(NamedTuple):
    """mod.rs Output."""

    logits: Tensor  # (B, 1, H, W)
    contrastive: List[LevelBatch]  # in contrastive_levels order (with masks only)
    maps: List[Tuple[int, Tensor]]  # (level, A_l), in the order computed (4, 3, 2, 1)


class Losses(NamedTuple):
    """mod.rs Losses."""

    total: Tensor
    dice: Tensor
    bce: Tensor
    contrastive: Optional[Tensor]  # Σ_l w_l L_con,l before λ
    per_level: List[Tensor]
    aux: Optional[Tensor]  # Σ_l BCE(A_l, m_l) before μ


class Tmca(nn.Module):
    """mod.rs Tmca: image encoder, text encoder (under `text.`), per-level projections
    (`tssd.L`), contrastive temperatures (`contrastive.logit_scale`), enhancement (`lte.L`) and
    the U-Net decoder."""

    def __init__(self, cfg: ModelConfig, bert: BertConfig):
        super().__init__()
        self.cfg = cfg
        d = cfg.dims
        self.image_encoder = ImageEncoder(cfg)
        self.text = TextEncoder(bert) if cfg.text_guidance else None
        td = bert.hidden_size
        self.tssd = nn.ModuleDict({
            str(l): LevelProjection(d[l - 1], td, cfg.embed_dim) for l in cfg.projected_levels()})
        self.contrastive = ContrastiveLoss(
            cfg.contrastive_levels, cfg.contrastive_weights, cfg.tau_init, cfg.tau_min,
            cfg.tau_max, cfg.background_negatives) if cfg.uses_contrastive() else None
        self.lte = nn.ModuleDict({
            str(l): Lte(d[l - 1], td, cfg.lte_tau, cfg.cross_attention, cfg.attn_heads)
            for l in (cfg.lte_levels if cfg.uses_lte() else [])})
        self.decoder = Decoder(d)

    def forward(self, images: Tensor, token_ids: Tensor, attention: Tensor,
                masks: Optional[Tensor] = None) -> Output:
        feats = self.image_encoder(images)
        text = self.text(token_ids, attention) if self.text is not None else None
        # Aligned projections z_l, u_l of every level that needs them.
        proj: Dict[int, Tuple[Tensor, Tensor]] = {}
        if text is not None:
            for l, p in self.tssd.items():
                proj[int(l)] = (p.pixels(feats[int(l) - 1]), p.report(text[1]))

        contrastive = []
        if self.contrastive is not None and masks is not None:
            for l in self.contrastive.levels:
                if l in proj:
                    z, u = proj[l]
                    # Not target-sensitive: the whole image is the target (no background).
                    m = masks if self.cfg.target_sensitive else torch.ones_like(masks)
                    pooled = masked_pool(z, downsample_mask(m, *z.shape[-2:]))
                    contrastive.append(LevelBatch(pooled.target, u, pooled.background,
                                                  pooled.has_background))

        maps: List[Tuple[int, Tensor]] = []

        def enhance(level: int, g: Tensor) -> Tensor:
            if str(level) in self.lte and level in proj and text is not None:
                lte = self.lte[str(level)]
                a = lte.map(*proj[level])
                g = lte(g, a, text[0], attention)
                maps.append((level, a))
            return g

        g = enhance(4, feats[3])
        for l in (3, 2, 1):
            g = self.decoder.up[l - 1](g, feats[l - 1])
            g = enhance(l, g)
        return Output(self.decoder.head(g), contrastive, maps)

    def loss(self, out: Output, masks: Tensor, groups: List[int],
             gathered: Optional[List[LevelBatch]] = None) -> Losses:
        """mod.rs Tmca::loss: Dice + BCE + λ·Σ_l w_l L_con,l + μ·Σ_l BCE(A_l, m_l)."""
        dice = soft_dice(out.logits, masks)
        bce_ = bce_with_logits(out.logits, masks)
        total = dice + bce_
        contrastive, per_level, aux = None, [], None
        if self.contrastive is not None:
            batches = gathered if gathered is not None else out.contrastive
            if batches:
                contrastive, per_level = self.contrastive(batches, groups)
                total = total + contrastive * self.cfg.lambda_
        if self.cfg.aux_weight > 0.0 and out.maps:
            aux = masks.new_zeros(())
            for _, a in out.maps:
                aux = aux + bce(a, downsample_mask(masks, *a.shape[-2:]))
            total = total + aux * self.cfg.aux_weight
        return Losses(total, dice, bce_, contrastive, per_level, aux)


# --------------------------------------------------------------------------------------------
# Optimisation (trainer/src/params.rs decays, trainer/src/optim/*.rs)
# --------------------------------------------------------------------------------------------


def decays(name: str, p: Tensor) -> bool:
    """params.rs ParamStore::decays: AdamW decays matrices and kernels; never biases, norms,
    scales, temperatures or embeddings."""
    return (p.dim() >= 2 and "norm" not in name and "LayerNorm" not in name
            and not name.endswith("embeddings.weight"))


@dataclass
class AdamWConfig:
    """optim/adamw.rs AdamWConfig (same defaults)."""

    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    weight_decay: float = 0.05


def make_adamw(named_params: List[Tuple[str, nn.Parameter]], cfg: AdamWConfig,
               lr: float = 1e-3) -> torch.optim.AdamW:
    """optim/adamw.rs AdamW: PyTorch's AdamW with tmca's two parameter groups (weight decay for
    matrices and kernels, none for the rest). The learning rate is set before every step."""
    decay = [p for n, p in named_params if decays(n, p)]
    rest = [p for n, p in named_params if not decays(n, p)]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay},
              {"params": rest, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr, betas=(cfg.beta1, cfg.beta2), eps=cfg.eps,
                             foreach=False)


@dataclass
class Schedule:
    """optim/schedule.rs Schedule: linear warm-up, then cosine decay to base_lr · min_ratio."""

    base_lr: float
    warmup_steps: int
    total_steps: int
    min_ratio: float

    def lr(self, step: int) -> float:
        """Learning rate of optimiser step `step` (0-based)."""
        if step < self.warmup_steps:
            return self.base_lr * (step + 1) / self.warmup_steps
        span = max(max(self.total_steps - self.warmup_steps, 0), 1)
        p = min((step - self.warmup_steps) / span, 1.0)
        cos = 0.5 * (1.0 + math.cos(math.pi * p))
        return self.base_lr * (self.min_ratio + (1.0 - self.min_ratio) * cos)


def clip_grad_norm(grads: List[Tensor], max_norm: float) -> float:
    """optim/grads.rs Grads::clip, checked against PyTorch's own rule rather than a copy of
    tmca's: torch.nn.utils.get_total_norm (the global L2 norm, here of float64 copies: tmca adds
    in f64, and float32 sums over ConvNeXt-T's 28M gradients drift by ~4e-6) and
    clip_grads_with_norm_ (every gradient scaled in place by max_norm / (norm + 1e-6) when that
    is below 1). Returns the norm before clipping."""
    total = torch.nn.utils.get_total_norm([g.double() for g in grads])
    if max_norm > 0.0:
        holders = []
        for g in grads:
            p = torch.zeros_like(g)
            p.grad = g  # clipped in place, as tmca clips its gradients
            holders.append(p)
        torch.nn.utils.clip_grads_with_norm_(holders, max_norm, total)
    return float(total)


def forward_backward(model: Tmca, batch: Dict[str, Tensor], groups: List[int]
                     ) -> Tuple[Output, Losses]:
    """The gradient part of one training step (train/mod.rs, one micro-batch): forward with
    masks, loss, backward into `p.grad`."""
    for p in model.parameters():
        p.grad = None
    out = model(batch["images"], batch["token_ids"], batch["attention"], batch["masks"])
    losses = model.loss(out, batch["masks"], groups)
    losses.total.backward()
    return out, losses


def optimiser_step(params: List[nn.Parameter], opt: torch.optim.Optimizer, sched: Schedule,
                   step: int, grad_clip: float) -> Tuple[float, float]:
    """The update part of one training step (train/mod.rs): clip the gradients in `p.grad`,
    then AdamW at sched.lr(step). Returns (norm before clipping, lr)."""
    norm = clip_grad_norm([p.grad for p in params if p.grad is not None], grad_clip)
    lr = sched.lr(step)
    for g in opt.param_groups:
        g["lr"] = lr
    opt.step()
    return norm, lr


def train_step(model: Tmca, opt: torch.optim.Optimizer, sched: Schedule, step: int,
               batch: Dict[str, Tensor], groups: List[int], grad_clip: float
               ) -> Tuple[Losses, float, float]:
    """One optimiser step over one micro-batch, as train/mod.rs takes it. Returns the losses,
    the gradient norm before clipping and the learning rate."""
    _, losses = forward_backward(model, batch, groups)
    norm, lr = optimiser_step(list(model.parameters()), opt, sched, step, grad_clip)
    return losses, norm, lr
