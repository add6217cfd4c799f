#!/usr/bin/env python3
"""Checks tmca's per-image boundary distances against MONAI.

Usage: check_surface.py CASES.json   (run by tests/surface_monai.rs)

Each case holds an h x w prediction and mask (as '0'/'1' strings) and tmca's HD95 and ASSD.
Where both masks have foreground, they must equal MONAI's compute_hausdorff_distance(
percentile=95) and compute_average_surface_distance(symmetric=True) to 1e-5 (relative, MONAI
returns float32). Where a mask is empty (MONAI: NaN), tmca's convention: both empty 0, one empty
the image diagonal.
"""

import json
import math
import sys
import warnings

import numpy as np
import torch
from monai.metrics import compute_average_surface_distance, compute_hausdorff_distance


def fail(msg):
    print("FAIL: " + msg, file=sys.stderr)
    sys.exit(1)


def main(path):
    cases = json.load(open(path))
    compared = 0
    for i, c in enumerate(cases):
        h, w = c["h"], c["w"]
        pred = np.array([ch == "1" for ch in c["pred"]]).reshape(h, w)
        mask = np.array([ch == "1" for ch in c["mask"]]).reshape(h, w)
        if not pred.any() or not mask.any():
            want = 0.0 if pred.any() == mask.any() else math.hypot(h, w)
            if c["hd95"] != want or c["assd"] != want:
                fail("case %d (%dx%d, an empty mask): tmca %r/%r, expected %r" % (i, h, w, c["hd95"], c["assd"], want))
            continue
        p = torch.from_numpy(pred[None, None].astype(np.float64))
        m = torch.from_numpy(mask[None, None].astype(np.float64))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            hd = float(compute_hausdorff_distance(p, m, percentile=95)[0, 0])
            asd = float(compute_average_surface_distance(p, m, symmetric=True)[0, 0])
        for name, got, ref in [("hd95", c["hd95"], hd), ("assd", c["assd"], asd)]:
            if not math.isclose(got, ref, rel_tol=1e-5, abs_tol=1e-5):
                fail("case %d (%dx%d): %s tmca %r, MONAI %r" % (i, h, w, name, got, ref))
        compared += 1
    if compared < len(cases) // 2:
        fail("only %d of %d cases had two non-empty masks" % (compared, len(cases)))
    print("surface distances OK: %d cases against MONAI, %d with an empty mask" % (compared, len(cases) - compared))


if __name__ == "__main__":
    main(sys.argv[1])
