#!/usr/bin/env python3
"""Reads a tmca run's TensorBoard folder with TensorBoard's own reader after `tmca eval` and
checks that each recorded test evaluation of its best checkpoint is there, in the run's
`eval` sub-run, and that the training curves are untouched.

Usage: check_test_scalars.py RUN_DIR   (run by tests/cli_train.rs after its evaluations)

For every RUN_DIR/eval/best-test[<variant>].json: the scalars `test<variant>/...` of
RUN_DIR/tensorboard/eval at the record's step hold its mean per-image Dice and each dataset's
metrics (float32 of the record's values); the training folder holds no test scalars and as
many `val/mean_dice_per_image` points as validation.jsonl has lines.
Exits non-zero with a message on the first failure.
"""

import glob
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from check_tensorboard import CheckError, check  # noqa: E402


def close(a, b):
    return abs(a - b) <= 1e-6 * max(1.0, abs(b))


def main(run):
    from tensorboard.backend.event_processing import event_accumulator as ea_mod

    acc = ea_mod.EventAccumulator(os.path.join(run, "tensorboard", "eval"), size_guidance={ea_mod.SCALARS: 0})
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    records = sorted(glob.glob(os.path.join(run, "eval", "best-test*.json")))
    check(records, "no test evaluation recorded in %s/eval" % run)
    for path in records:
        rec = json.load(open(path))
        name = os.path.basename(path)[: -len(".json")]
        prefix = "test" + name.split("-test", 1)[1]
        tag = prefix + "/mean_dice_per_image"
        check(tag in tags, "%s: no %s among %r" % (name, tag, sorted(t for t in tags if t.startswith("test"))))
        points = {e.step: e.value for e in acc.Scalars(tag)}
        check(rec["step"] in points, "%s: no %s at step %d: %r" % (name, tag, rec["step"], points))
        check(close(points[rec["step"]], rec["mean_dice_per_image"]),
              "%s: %s %r, record %r" % (name, tag, points[rec["step"]], rec["mean_dice_per_image"]))
        for d in rec["datasets"]:
            for metric in ("dice_per_image", "iou_pooled", "hd95_per_image"):
                t = "%s/%s/%s" % (prefix, d["dataset"], metric)
                got = {e.step: e.value for e in acc.Scalars(t)}.get(rec["step"])
                check(got is not None and close(got, d[metric]), "%s: %s %r, record %r" % (name, t, got, d[metric]))
    train_dir = os.path.join(run, "tensorboard")
    train = ea_mod.EventAccumulator(train_dir, size_guidance={ea_mod.SCALARS: 0})
    train.Reload()
    check(not any(t.startswith("test") for t in train.Tags()["scalars"]), "test scalars among the training curves")
    with open(os.path.join(run, "validation.jsonl")) as f:
        validations = sum(1 for line in f if line.strip())
    val = train.Scalars("val/mean_dice_per_image")
    check(len(val) == validations, "val/mean_dice_per_image has %d points, validation.jsonl %d" % (len(val), validations))
    print("test scalars of %d evaluations in TensorBoard" % len(records))


if __name__ == "__main__":
    try:
        main(sys.argv[1])
    except CheckError as e:
        print("check failed: %s" % e, file=sys.stderr)
        sys.exit(1)
