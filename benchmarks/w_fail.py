"""W-fail (BENCHMARKS.md): W-tta with failure probability p in {0, 0.5, 0.9}.

python benchmarks/w_fail.py [--dataset mnist|synthetic] [other w_tta.py options]
"""

from __future__ import annotations

import sys

import w_tta

if __name__ == "__main__":
    argv = sys.argv[1:]
    if "--failures" not in argv:
        argv += ["--failures", "0", "0.5", "0.9"]
    if "--name" not in argv:
        dataset = argv[argv.index("--dataset") + 1] if "--dataset" in argv else "mnist"
        quick = "--quick" in argv
        argv += ["--name", "w_fail" if dataset == "mnist" or quick else "w_fail_synthetic"]
    sys.exit(w_tta.main(argv))
