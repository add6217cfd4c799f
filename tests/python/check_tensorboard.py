#!/usr/bin/env python3
"""Independent check of tmca's TensorBoard event writer, using TensorBoard's own readers.

Usage (from the repository root):

    cargo test --release -p tmca-trainer --test tensorboard_python

(which writes the fixture with tmca's EventWriter into a temporary directory and runs this
script on it).

Requires `pip install tensorboard`. Expected values mirror tests/tensorboard_python.rs;
pass --expected FILE.json to check another directory (same structure as EXPECTED below).

Checks, with both `event_accumulator.EventAccumulator` (the classic API) and
`plugin_event_accumulator.EventAccumulator` (what the TensorBoard server uses):
  * exactly one events file, file_version 2;
  * scalars: tags, steps, values;
  * images: width/height fields, PNG signature and IHDR, and every decoded pixel (the PNG
    is decoded here with zlib, so a planar/interleaved mix-up would show);
  * text: `Tensors(tag)[i].tensor_proto.string_val[0]`, DT_STRING, scalar shape, and the
    `text` plugin metadata.
Exits non-zero with a message on the first failure.
"""

import argparse
import json
import math
import os
import struct
import sys
import zlib


def rgb_pattern(y, x, c):
    return (y * 7 + x * 3 + c * 50) % 256


def grey_pattern(y, x):
    return (y * 11 + x * 5) % 256


def pixels(height, width, channels):
    if channels == 1:
        return [grey_pattern(y, x) for y in range(height) for x in range(width)]
    return [rgb_pattern(y, x, c) for y in range(height) for x in range(width) for c in range(3)]


EXPECTED = {
    "scalars": {
        "fixture/loss": [[0, 1.0], [1, 0.5], [2, 0.25]],
        "fixture/dice": [[0, 0.1], [1, 0.2], [2, 0.3]],
    },
    # tag: [step, height, width, channels]; pixels follow the patterns above.
    "images": {
        "fixture/rgb": [2, 48, 80, 3],
        "fixture/grey": [2, 32, 32, 1],
        "fixture/chw_rgb": [2, 20, 36, 3],
    },
    "texts": {
        "fixture/notes": [[1, "# Fixture\n\n**bold** text, ünïcödé ✓"]],
    },
}

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
DT_STRING = 7


class CheckError(Exception):
    pass


def check(cond, msg):
    if not cond:
        raise CheckError(msg)


def decode_png(data):
    """Minimal PNG decoder for 8-bit grey / RGB, non-interlaced. Returns (w, h, ch, pixels)."""
    check(data[:8] == PNG_SIGNATURE, "PNG signature missing: %r" % data[:8])
    pos, idat, ihdr = 8, b"", None
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        ctype = data[pos + 4 : pos + 8]
        body = data[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length : pos + 12 + length])
        check(zlib.crc32(ctype + body) == crc, "PNG chunk %r CRC mismatch" % ctype)
        if ctype == b"IHDR":
            ihdr = struct.unpack(">IIBBBBB", body)
        elif ctype == b"IDAT":
            idat += body
        elif ctype == b"IEND":
            break
        pos += 12 + length
    check(ihdr is not None, "PNG without IHDR")
    width, height, depth, color, _, _, interlace = ihdr
    check(depth == 8 and interlace == 0, "unsupported PNG: depth %d interlace %d" % (depth, interlace))
    channels = {0: 1, 2: 3}.get(color)
    check(channels is not None, "unexpected PNG color type %d" % color)
    raw = zlib.decompress(idat)
    stride = width * channels
    check(len(raw) == height * (stride + 1), "PNG data length %d" % len(raw))
    out, prev = [], [0] * stride
    for y in range(height):
        ftype = raw[y * (stride + 1)]
        line = list(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - channels] if i >= channels else 0
            b = prev[i]
            c = prev[i - channels] if i >= channels else 0
            if ftype == 0:
                pred = 0
            elif ftype == 1:
                pred = a
            elif ftype == 2:
                pred = b
            elif ftype == 3:
                pred = (a + b) // 2
            elif ftype == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                pred = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
            else:
                raise CheckError("bad PNG filter %d" % ftype)
            line[i] = (line[i] + pred) & 0xFF
        out.extend(line)
        prev = line
    return width, height, channels, out


def check_png(tag, png, height, width, channels):
    w, h, ch, px = decode_png(png)
    check((w, h, ch) == (width, height, channels),
          "%s: PNG is %dx%dx%d, expected %dx%dx%d (w x h x c)" % (tag, w, h, ch, width, height, channels))
    expected = pixels(height, width, channels)
    if px != expected:
        bad = next(i for i, (a, b) in enumerate(zip(px, expected)) if a != b)
        raise CheckError("%s: pixel data differs first at byte %d (got %d, expected %d)"
                         % (tag, bad, px[bad], expected[bad]))


def check_classic(logdir, exp):
    from tensorboard.backend.event_processing import event_accumulator as ea_mod

    ea = ea_mod.EventAccumulator(logdir, size_guidance={k: 0 for k in ea_mod.DEFAULT_SIZE_GUIDANCE})
    ea.Reload()
    check(ea.file_version == 2.0, "file_version %r" % ea.file_version)
    tags = ea.Tags()

    check(sorted(tags["scalars"]) == sorted(exp["scalars"]), "scalar tags %r" % tags["scalars"])
    for tag, want in exp["scalars"].items():
        got = ea.Scalars(tag)
        check([e.step for e in got] == [s for s, _ in want], "%s steps %r" % (tag, [e.step for e in got]))
        for e, (_, v) in zip(got, want):
            check(math.isclose(e.value, v, rel_tol=1e-6, abs_tol=1e-7), "%s step %d: %r != %r" % (tag, e.step, e.value, v))
            check(e.wall_time > 1.5e9, "%s wall_time %r" % (tag, e.wall_time))

    check(sorted(tags["images"]) == sorted(exp["images"]), "image tags %r" % tags["images"])
    for tag, (step, height, width, channels) in exp["images"].items():
        got = ea.Images(tag)
        check(len(got) == 1, "%s: %d images" % (tag, len(got)))
        img = got[0]
        check(img.step == step, "%s step %d" % (tag, img.step))
        check((img.width, img.height) == (width, height),
              "%s: width x height %dx%d, expected %dx%d" % (tag, img.width, img.height, width, height))
        check(img.encoded_image_string.startswith(PNG_SIGNATURE), "%s: not a PNG" % tag)
        check_png(tag, img.encoded_image_string, height, width, channels)

    check(sorted(tags["tensors"]) == sorted(exp["texts"]), "tensor tags %r" % tags["tensors"])
    for tag, want in exp["texts"].items():
        got = ea.Tensors(tag)
        check([e.step for e in got] == [s for s, _ in want], "%s steps" % tag)
        for e, (_, text) in zip(got, want):
            tp = e.tensor_proto
            check(tp.dtype == DT_STRING, "%s dtype %d" % (tag, tp.dtype))
            check(len(tp.tensor_shape.dim) == 0, "%s: not a scalar tensor" % tag)
            check(tp.string_val[0].decode("utf-8") == text, "%s: text %r" % (tag, tp.string_val[0]))
        check(ea.SummaryMetadata(tag).plugin_data.plugin_name == "text", "%s: plugin name" % tag)
    check(list(ea.PluginTagToContent("text")) == list(exp["texts"]), "text plugin tags")


def check_plugin(logdir, exp):
    """What TensorBoard's server sees (legacy summaries migrated by data_compat)."""
    from tensorboard.backend.event_processing import plugin_event_accumulator as pea
    from tensorboard.util import tensor_util

    ea = pea.EventAccumulator(logdir, size_guidance={k: 0 for k in pea.DEFAULT_SIZE_GUIDANCE})
    ea.Reload()
    for plugin, tags in (("scalars", exp["scalars"]), ("images", exp["images"]), ("text", exp["texts"])):
        content = ea.PluginTagToContent(plugin)
        check(sorted(content) == sorted(tags), "plugin %s tags %r" % (plugin, sorted(content)))
    for tag, want in exp["scalars"].items():
        got = [(e.step, float(tensor_util.make_ndarray(e.tensor_proto))) for e in ea.Tensors(tag)]
        check(len(got) == len(want), "%s: %d scalar tensors" % (tag, len(got)))
        for (s, v), (ws, wv) in zip(got, want):
            check(s == ws and math.isclose(v, wv, rel_tol=1e-6, abs_tol=1e-7), "%s: %r" % (tag, got))
    for tag, (step, height, width, channels) in exp["images"].items():
        (e,) = ea.Tensors(tag)
        w_str, h_str, png = e.tensor_proto.string_val[:3]
        check((int(w_str), int(h_str)) == (width, height), "%s: image plugin sees %sx%s" % (tag, w_str, h_str))
        check_png(tag, png, height, width, channels)
    for tag, want in exp["texts"].items():
        got = [(e.step, e.tensor_proto.string_val[0].decode("utf-8")) for e in ea.Tensors(tag)]
        check(got == [tuple(x) for x in want], "%s: %r" % (tag, got))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("logdir")
    ap.add_argument("--expected", help="JSON file with expected values (default: the ones of tests/tensorboard_python.rs)")
    args = ap.parse_args()
    exp = EXPECTED
    if args.expected:
        with open(args.expected, encoding="utf-8") as f:
            exp = json.load(f)
    try:
        files = [f for f in os.listdir(args.logdir) if "tfevents" in f]
        check(len(files) == 1, "expected one events file in %s, found %r" % (args.logdir, files))
        check(files[0].startswith("events.out.tfevents."), "file name %r" % files[0])
        check_classic(args.logdir, exp)
        check_plugin(args.logdir, exp)
    except CheckError as e:
        print("FAIL: %s" % e, file=sys.stderr)
        return 1
    n = len(exp["scalars"]) + len(exp["images"]) + len(exp["texts"])
    print("OK: %s (%d tags) read back by TensorBoard's EventAccumulator" % (files[0], n))
    return 0


if __name__ == "__main__":
    sys.exit(main())
