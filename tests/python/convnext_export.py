"""Writes one random ConvNeXt (Hugging Face transformers' ConvNextModel) in the layouts
pretrained ConvNeXts are published in, with its stage outputs on a fixed input, for
tests/convnext_pretrained.rs. The key names of timm, torchvision and the original code are
written out here independently of tmca's table.

usage: python3 convnext_export.py OUT_DIR
OUT_DIR/hf/{config.json,model.safetensors}   transformers' save_pretrained
OUT_DIR/hf_bin/pytorch_model.bin              the same state dict, PyTorch pickle
OUT_DIR/timm.safetensors                      timm convnext_* names, f16
OUT_DIR/torchvision.pth                       torchvision convnext_* names (layer_scale (C,1,1))
OUT_DIR/original.pth                          {"model": facebookresearch/ConvNeXt names}
OUT_DIR/io.safetensors                        x (2,3,64,96), f1..f4 its stage outputs,
                                              gray (2,1,64,96), g1..g4 (gray replicated ×3)
"""

import os
import sys

import torch
from safetensors.torch import save_file
from transformers import ConvNextConfig, ConvNextModel

DIMS = [8, 16, 24, 32]
DEPTHS = [1, 2, 1, 1]


def hf_to(layout, key):
    """Maps a ConvNextModel key to `layout`'s name for the same tensor (None: no counterpart)."""
    p = key.split(".")
    if p[0] == "layernorm":
        return {"timm": "head.norm.", "torchvision": "classifier.0.", "original": "norm."}[layout] + p[1]
    if p[0] == "embeddings":
        i = {"patch_embeddings": 0, "layernorm": 1}[p[1]]
        return {"timm": f"stem.{i}", "torchvision": f"features.0.{i}", "original": f"downsample_layers.0.{i}"}[layout] + "." + p[2]
    s = int(p[2])
    if p[3] == "downsampling_layer":
        i, leaf = p[4], p[5]
        return {"timm": f"stages.{s}.downsample.{i}", "torchvision": f"features.{2 * s}.{i}", "original": f"downsample_layers.{s}.{i}"}[layout] + "." + leaf
    j, layer = int(p[4]), p[5]
    leaf = "." + p[6] if len(p) > 6 else ""
    names = {
        "timm": {"dwconv": "conv_dw", "layernorm": "norm", "pwconv1": "mlp.fc1", "pwconv2": "mlp.fc2", "layer_scale_parameter": "gamma"},
        "torchvision": {"dwconv": "block.0", "layernorm": "block.2", "pwconv1": "block.3", "pwconv2": "block.5", "layer_scale_parameter": "layer_scale"},
        "original": {"dwconv": "dwconv", "layernorm": "norm", "pwconv1": "pwconv1", "pwconv2": "pwconv2", "layer_scale_parameter": "gamma"},
    }[layout][layer]
    block = {"timm": f"stages.{s}.blocks.{j}", "torchvision": f"features.{2 * s + 1}.{j}", "original": f"stages.{s}.{j}"}[layout]
    return f"{block}.{names}{leaf}"


def main(out):
    torch.manual_seed(0)
    cfg = ConvNextConfig(num_channels=3, hidden_sizes=DIMS, depths=DEPTHS, layer_scale_init_value=0.5, hidden_act="gelu")
    model = ConvNextModel(cfg).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "layernorm" in name or "layer_scale" in name:
                p.copy_(1.0 + 0.3 * torch.randn_like(p))
            else:
                p.copy_(0.3 * torch.randn_like(p))
    sd = {k: v.contiguous() for k, v in model.state_dict().items()}
    model.save_pretrained(os.path.join(out, "hf"), safe_serialization=True)
    os.makedirs(os.path.join(out, "hf_bin"), exist_ok=True)
    torch.save(sd, os.path.join(out, "hf_bin", "pytorch_model.bin"))

    timm = {hf_to("timm", k): v.half() for k, v in sd.items()}
    timm["head.fc.weight"] = torch.zeros(10, DIMS[-1])
    save_file(timm, os.path.join(out, "timm.safetensors"))
    tv = {hf_to("torchvision", k): (v.reshape(-1, 1, 1) if "layer_scale" in k else v) for k, v in sd.items()}
    tv["classifier.2.weight"] = torch.zeros(10, DIMS[-1])
    torch.save(tv, os.path.join(out, "torchvision.pth"))
    orig = {hf_to("original", k): v for k, v in sd.items()}
    orig["head.weight"] = torch.zeros(10, DIMS[-1])
    torch.save({"model": orig, "epoch": 300}, os.path.join(out, "original.pth"))

    x = torch.randn(2, 3, 64, 96)
    gray = torch.randn(2, 1, 64, 96)
    io = {"x": x, "gray": gray}
    with torch.no_grad():
        for name, inp in [("f", x), ("g", gray.repeat(1, 3, 1, 1))]:
            hs = model(pixel_values=inp, output_hidden_states=True).hidden_states
            assert len(hs) == 5, len(hs)
            for i in range(4):
                io[f"{name}{i + 1}"] = hs[i + 1].contiguous()
    save_file(io, os.path.join(out, "io.safetensors"))


if __name__ == "__main__":
    main(sys.argv[1])
