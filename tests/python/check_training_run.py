#!/usr/bin/env python3
"""Reads a finished tmca training run with TensorBoard's own reader and checks what `tmca train`
promises to log there.

Usage: check_training_run.py RUN_DIR   (run by tests/cli_train.rs after `tmca train`)

Checks, against the run's own `config.toml` and best checkpoint manifest:
  * one events file under RUN_DIR/tensorboard;
  * train scalars (loss, lr, grad norm, img/s, dice/bce terms, the contrastive total, one loss
    and one temperature per contrastive level), finite, temperatures within [tau_min, tau_max];
  * validation scalars per dataset and protocol (dice/iou, per-image and pixel-pooled) in [0, 1],
    boundary distances (hd95/assd per image) in [0, the image diagonal],
    at the same steps as `val/mean_dice_per_image`; the best of `val/mean_<train.select>`
    (the maximum, the minimum for hd95) is the best checkpoint's `best_val`;
  * validation.jsonl: the same validations (steps, datasets, every metric) as TensorBoard;
  * validation overlays: RGB PNGs at the training image size that are not blank, and as many
    strips of the enhancement maps (one tile per LTE level);
  * the overlays' captions (`val/overlay_reports`): one row per overlay with its dataset and
    report;
  * the resolved config as text, equal to config.toml.
Exits non-zero with a message on the first failure.
"""

import json
import math
import os
import sys
import tomllib

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from check_tensorboard import CheckError, check, decode_png  # noqa: E402


def main(run):
    from tensorboard.backend.event_processing import event_accumulator as ea_mod

    with open(os.path.join(run, "config.toml"), "rb") as f:
        raw_config = f.read()
    cfg = tomllib.loads(raw_config.decode("utf-8"))
    logdir = os.path.join(run, "tensorboard")
    files = [f for f in os.listdir(logdir) if "tfevents" in f]
    check(len(files) == 1, "expected one events file, found %r" % files)

    ea = ea_mod.EventAccumulator(logdir, size_guidance={k: 0 for k in ea_mod.DEFAULT_SIZE_GUIDANCE})
    ea.Reload()
    tags = ea.Tags()
    scalars = set(tags["scalars"])

    def series(tag):
        check(tag in scalars, "scalar %r missing; have %s" % (tag, sorted(scalars)))
        got = ea.Scalars(tag)
        check(got, "scalar %r has no events" % tag)
        for e in got:
            check(math.isfinite(e.value), "%s step %d is %r" % (tag, e.step, e.value))
        return got

    model = cfg["model"]
    train = ["loss", "lr", "grad_norm", "images_per_s", "dice_loss", "bce"]
    levels = model["contrastive_levels"] if model["lambda"] > 0 else []
    if levels:
        train.append("contrastive")
    for tag in train:
        series("train/" + tag)
    for lv in levels:
        series("train/contrastive_level%d" % lv)
        for e in series("train/temperature_level%d" % lv):
            check(model["tau_min"] - 1e-6 <= e.value <= model["tau_max"] + 1e-6,
                  "temperature of level %d is %r, outside [tau_min, tau_max]" % (lv, e.value))

    image_diagonal = math.sqrt(2.0) * cfg["data"]["image_size"]
    mean = series("val/mean_dice_per_image")
    val_steps = [e.step for e in mean]
    datasets = sorted({t.split("/")[1] for t in scalars if t.startswith("val/") and t.count("/") == 2})
    check(datasets, "no per-dataset validation scalars: %s" % sorted(scalars))
    for ds in datasets:
        for metric in ["dice_per_image", "iou_per_image", "dice_pooled", "iou_pooled"]:
            got = series("val/%s/%s" % (ds, metric))
            check([e.step for e in got] == val_steps, "val/%s/%s steps %r != %r"
                  % (ds, metric, [e.step for e in got], val_steps))
            for e in got:
                check(0.0 <= e.value <= 1.0, "val/%s/%s = %r" % (ds, metric, e.value))
        for metric in ["hd95_per_image", "assd_per_image"]:
            got = series("val/%s/%s" % (ds, metric))
            check([e.step for e in got] == val_steps, "val/%s/%s steps" % (ds, metric))
            for e in got:
                check(0.0 <= e.value <= image_diagonal, "val/%s/%s = %r" % (ds, metric, e.value))

    # validation.jsonl holds the same validations as TensorBoard, one line each.
    with open(os.path.join(run, "validation.jsonl")) as f:
        log = [json.loads(line) for line in f]
    check([r["step"] for r in log] == val_steps,
          "validation.jsonl steps %r != TensorBoard's %r" % ([r["step"] for r in log], val_steps))
    for r, e in zip(log, mean):
        check(math.isclose(r["mean_dice_per_image"], e.value, rel_tol=1e-5, abs_tol=1e-6),
              "validation.jsonl step %d: mean Dice %r != %r" % (e.step, r["mean_dice_per_image"], e.value))
        check(sorted(d["dataset"] for d in r["datasets"]) == datasets,
              "validation.jsonl step %d datasets %r" % (e.step, [d["dataset"] for d in r["datasets"]]))
        for d in r["datasets"]:
            check(d["split"] == "val", "validation.jsonl: split %r" % d["split"])
            for metric in ["dice_per_image", "iou_per_image", "dice_pooled", "iou_pooled",
                           "hd95_per_image", "assd_per_image"]:
                tb = [x.value for x in ea.Scalars("val/%s/%s" % (d["dataset"], metric)) if x.step == e.step]
                check(len(tb) == 1 and math.isclose(d[metric], tb[0], rel_tol=1e-5, abs_tol=1e-6),
                      "validation.jsonl step %d %s %s: %r vs TensorBoard %r" % (e.step, d["dataset"], metric, d[metric], tb))

    with open(os.path.join(run, "checkpoints", "best", "manifest.json")) as f:
        manifest = json.load(f)
    best = manifest["best_val"]
    # `best` follows train.select (recorded in the manifest): the best of its mean over datasets.
    select = cfg["train"].get("select", "dice_per_image")
    check(manifest.get("select") == select, "manifest select %r != config %r" % (manifest.get("select"), select))
    chosen = [e.value for e in series("val/mean_" + select)]
    check(len(chosen) == len(mean), "val/mean_%s: %d values, %d validations" % (select, len(chosen), len(mean)))
    top = min(chosen) if select == "hd95" else max(chosen)
    check(math.isclose(top, best, rel_tol=1e-5, abs_tol=1e-6),
          "best val %s in TensorBoard %r != manifest %r" % (select, top, best))

    overlays = sorted(t for t in tags["images"] if t.startswith("val/overlay_"))
    want = min(cfg["train"]["preview_images"], 1)
    check(len(overlays) >= want, "overlay images %r" % tags["images"])
    size = cfg["data"]["image_size"]
    for tag in overlays:
        got = ea.Images(tag)
        check([e.step for e in got] == val_steps, "%s steps %r" % (tag, [e.step for e in got]))
        for img in got:
            w, h, ch, px = decode_png(img.encoded_image_string)
            check((w, h, ch) == (size, size, 3), "%s: %dx%dx%d, expected %dx%dx3" % (tag, w, h, ch, size, size))
            check(len(set(px)) > 8, "%s at step %d is blank" % (tag, img.step))

    # The enhancement maps of the same images, one tile per LTE level side by side.
    lte = model["lte_levels"] if model.get("text_guidance", True) else []
    maps = sorted(t for t in tags["images"] if t.startswith("val/lte_"))
    check(len(maps) == (len(overlays) if lte else 0), "map strips %r for overlays %r" % (maps, overlays))
    for tag in maps:
        got = ea.Images(tag)
        check([e.step for e in got] == val_steps, "%s steps %r" % (tag, [e.step for e in got]))
        for img in got:
            w, h, ch, px = decode_png(img.encoded_image_string)
            check((w, h, ch) == (size * len(lte), size, 3),
                  "%s: %dx%dx%d, expected %dx%dx3" % (tag, w, h, ch, size * len(lte), size))
            check(len(set(px)) > 8, "%s at step %d is blank" % (tag, img.step))

    # The overlays' captions: one row per overlay, naming a dataset validated on and a report.
    check("val/overlay_reports" in tags["tensors"], "overlay captions missing: %r" % tags["tensors"])
    for event in ea.Tensors("val/overlay_reports"):
        rows = event.tensor_proto.string_val[0].decode("utf-8").splitlines()[2:]
        check(len(rows) == len(overlays), "%d caption rows for %d overlays" % (len(rows), len(overlays)))
        for k, row in enumerate(rows):
            cells = [c.strip() for c in row.strip("|").split(" | ")]
            check(cells[0] == str(k) and cells[1] in datasets and cells[3],
                  "caption row %r (datasets %r)" % (row, datasets))
    check("config" in tags["tensors"], "config text missing: %r" % tags["tensors"])
    text = ea.Tensors("config")[0].tensor_proto.string_val[0].decode("utf-8")
    check(text == "```toml\n%s\n```" % raw_config.decode("utf-8"), "config text differs from config.toml")
    check_hparams(ea, tags, cfg, run)
    print("training run OK: %d validations, %d datasets, %d overlays, %d map strips, %d hparams"
          % (len(val_steps), len(datasets), len(overlays), len(maps), len(flatten(cfg)) - 1))


def flatten(cfg, prefix=""):
    """Dotted field names of a parsed config, arrays kept whole."""
    out = {}
    for k, v in cfg.items():
        key = prefix + k
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def check_hparams(ea, tags, cfg, run):
    """The HParams dashboard's session: every config field but run.dir, typed as TensorBoard's
    own hparams_pb writes them (numbers, booleans, text; arrays as text), and
    train.global_batch."""
    from tensorboard.plugins.hparams import metadata

    tag = metadata.SESSION_START_INFO_TAG
    check(tag in tags["tensors"], "no %s among %r" % (tag, tags["tensors"]))
    meta = ea.SummaryMetadata(tag)
    check(meta.plugin_data.plugin_name == metadata.PLUGIN_NAME, "plugin %r" % meta.plugin_data.plugin_name)
    data = metadata.parse_session_start_info_plugin_data(meta.plugin_data.content)
    want = {k: v for k, v in flatten(cfg).items() if k != "run.dir"}
    # Samples per optimiser step over all ranks (one process here).
    want["train.global_batch"] = cfg["data"]["batch_size"] * cfg["optim"]["accumulate"]
    got = dict(data.hparams)
    check(sorted(got) == sorted(want), "hparams %r != config fields %r" % (sorted(got), sorted(want)))
    for k, v in want.items():
        value = got[k]
        kind = value.WhichOneof("kind")
        if isinstance(v, bool):
            check(kind == "bool_value" and value.bool_value == v, "%s: %r vs %r" % (k, value, v))
        elif isinstance(v, (int, float)):
            check(kind == "number_value" and math.isclose(value.number_value, v), "%s: %r vs %r" % (k, value, v))
        elif isinstance(v, str):
            check(kind == "string_value" and value.string_value == v, "%s: %r vs %r" % (k, value, v))
        else:
            check(kind == "string_value" and value.string_value.startswith("["), "%s: %r vs %r" % (k, value, v))
    check(data.group_name, "no session group name")


if __name__ == "__main__":
    try:
        main(sys.argv[1])
    except CheckError as e:
        print("FAIL: %s" % e, file=sys.stderr)
        sys.exit(1)
