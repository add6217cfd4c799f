#!/usr/bin/env python3
"""TensorBoard's reader over the event files of a run resumed after step 5 (written by
tests/tensorboard_python.rs): the first file holds `loss` = step for steps 1..10, the second
a SessionLog START at step 6 and `loss` = 100 + step for steps 6..12. TensorBoard must show
every step once, the redone steps from the second file.

Usage: check_resume_purge.py LOGDIR
"""

import sys

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator


def main(logdir):
    ea = EventAccumulator(logdir)
    ea.Reload()
    got = [(e.step, e.value) for e in ea.Scalars("loss")]
    want = [(s, float(s)) for s in range(1, 6)] + [(s, 100.0 + s) for s in range(6, 13)]
    if got != want:
        print("FAIL: loss after the resume: %r, want %r" % (got, want), file=sys.stderr)
        sys.exit(1)
    print("resume purge OK: %d steps, each once" % len(got))


if __name__ == "__main__":
    main(sys.argv[1])
