#!/usr/bin/env python3
"""Checks a `tmca export` folder against `tmca predict` on the same image and report.

Usage: check_export.py EXPORT_DIR IMAGE REPORT TMCA_PREDICT_DIR [TMCA_TTA_DIR]
  (run by tests/cli_export.rs; TMCA_PREDICT_DIR holds `tmca predict --probs` output for IMAGE,
  TMCA_TTA_DIR that of `tmca predict --probs --tta`)

Loads the export with its own `tmca_predict.Predictor` (PyTorch mirror, strict weight loading)
and requires, at the image's size, its probabilities to equal tmca's `<stem>_prob.npy`
(within 1e-4), to round to its `<stem>_prob.png` within one level of 255, and its mask to
equal tmca's `<stem>_mask.png` except where the probability is within 1e-4 of the threshold; then runs the export's command line and requires
its files to hold the same prediction, and its mistakes (a missing or unreadable image, a
folder that is no export) to end in one line with tmca's exit codes. With TMCA_TTA_DIR, the Predictor's flip test-time
augmentation must give tmca's `--tta` probabilities (within 1e-4) too.
"""

import os
import subprocess
import sys
import tempfile

import numpy as np
from PIL import Image


def fail(msg):
    print("FAIL: " + msg, file=sys.stderr)
    sys.exit(1)


def main(export, image, report, tmca_out, tmca_tta=None):
    sys.path.insert(0, export)
    from tmca_predict import Predictor

    stem = os.path.splitext(os.path.basename(image))[0]
    p = Predictor(export)
    prob = p.predict(Image.open(image), report)
    want_prob = np.asarray(Image.open(os.path.join(tmca_out, stem + "_prob.png"))).astype(np.float64)
    want_mask = np.asarray(Image.open(os.path.join(tmca_out, stem + "_mask.png")))
    if prob.shape != want_prob.shape:
        fail("probability map %r, tmca's %r" % (prob.shape, want_prob.shape))
    exact = np.load(os.path.join(tmca_out, stem + "_prob.npy"))
    if exact.shape != prob.shape or exact.dtype != np.float32:
        fail("tmca's _prob.npy is %r %s" % (exact.shape, exact.dtype))
    err = np.abs(exact.astype(np.float64) - prob).max()
    if err > 1e-4:
        fail("probabilities differ from tmca's by up to %g" % err)
    diff = np.abs(np.round(np.clip(prob, 0, 1) * 255) - want_prob)
    if diff.max() > 1:
        fail("probabilities differ from tmca's by up to %d/255" % diff.max())
    ours = prob > p.threshold
    near = np.abs(prob - p.threshold) < 1e-4
    bad = (ours != (want_mask > 127)) & ~near
    if bad.any():
        fail("%d mask pixels differ from tmca's" % bad.sum())
    if prob.max() - prob.min() < 1e-3:
        fail("a (nearly) constant prediction checks nothing: %r .. %r" % (prob.min(), prob.max()))

    with tempfile.TemporaryDirectory() as out:
        cmd = [sys.executable, os.path.join(export, "tmca_predict.py"), export, "--image", image,
               "--report", report, "--output", out]
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0:
            fail("the export's command line failed: %s%s" % (r.stdout, r.stderr))
        cli_prob = np.load(os.path.join(out, stem + "_prob.npy"))
        cli_mask = np.asarray(Image.open(os.path.join(out, stem + "_mask.png")))
        if not np.array_equal(cli_prob, prob.astype(np.float32)):
            fail("the command line's probabilities differ from the Predictor's")
        if not np.array_equal(cli_mask > 127, ours):
            fail("the command line's mask differs from the Predictor's")
        # Mistakes on its command line: one line, tmca's exit codes, no traceback.
        junk = os.path.join(out, "notimage.png")
        with open(junk, "w") as f:
            f.write("not an image")
        script = os.path.join(export, "tmca_predict.py")
        for args, code in [([export, "--image", os.path.join(out, "absent.png")], 4),
                           ([export, "--image", junk], 3),
                           ([out, "--image", image], 2)]:
            r = subprocess.run([sys.executable, script, *args, "--report", "x", "--output", out],
                               capture_output=True, text=True)
            if r.returncode != code or "Traceback" in r.stderr or not r.stderr.startswith("error: "):
                fail("%r: exit %d (want %d): %s" % (args, r.returncode, code, r.stderr))
    if tmca_tta:
        from tmca_predict import swap_left_right

        if swap_left_right("Upper LEFT, left-sided; Right.") != "Upper RIGHT, right-sided; Left.":
            fail("swap_left_right: %r" % swap_left_right("Upper LEFT, left-sided; Right."))
        tta = p.predict(Image.open(image), report, tta=True)
        want = np.load(os.path.join(tmca_tta, stem + "_prob.npy"))
        terr = np.abs(want.astype(np.float64) - tta).max()
        if terr > 1e-4:
            fail("TTA probabilities differ from tmca's by up to %g" % terr)
        if np.abs(tta - prob).max() < 1e-4:
            fail("TTA changed nothing: the check would not see a wrong mirror")
    print("export OK: %dx%d, probabilities %.4f .. %.4f, max |Δ| %.2g, %d foreground pixels%s"
          % (prob.shape[1], prob.shape[0], prob.min(), prob.max(), err, ours.sum(),
             ", TTA max |Δ| %.2g" % terr if tmca_tta else ""))


if __name__ == "__main__":
    main(*sys.argv[1:6])
