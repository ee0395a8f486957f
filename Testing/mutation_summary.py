"""Survival rate per core module of the last ``make mutation`` run (reads mutmut's mutants/*.meta).

    python Testing/mutation_summary.py [mutants]

Killed: a selected test failed on the mutant. Timeout: the tests ran past mutmut's CPU-time limit
(mutmut counts that as caught; here it is kept apart and out of the rate, since a starved or
extension-building run times out too). Survived: every test that covers the mutated function passed. Mutants of lines no selected test covers are not generated
(``mutate_only_covered_lines``); "not run" counts mutants of the scoped files outside the
functions ``make mutation`` selects.
"""

from __future__ import annotations

import fnmatch
import json
import sys
from pathlib import Path

# module label -> mutant-name patterns (the functions the mutation check covers)
SCOPE = {
    "metrics (overlap, surface)": ["SegDeepLib.metrics.overlap.*", "SegDeepLib.metrics.surface.*"],
    "losses (overlap, base)": ["SegDeepLib.losses.overlap.*", "SegDeepLib.losses.base.*"],
    "io/layout": ["SegDeepLib.io.layout.*"],
    "inference/sliding_window": ["SegDeepLib.inference.sliding_window.*"],
    "CRF mean field": [
        "SegDeepLib.crf.crfrnn.xǁCRFRNNǁ_mean_field__mutmut_*",
        "SegDeepLib.crf.crfrnn.x__mean_field_inplace__mutmut_*",
        "SegDeepLib.crf.crfrnn.x__leading_probabilities*",
        "SegDeepLib.crf.crfrnn.x__add_coupled__mutmut_*",
    ],
    "training/checkpoint": ["SegDeepLib.training.checkpoint.*"],
}
KILLED = {1, 3}
TIMEOUT = {36, 24, -24, 152, 255}


def _results(mutants: Path) -> dict[str, int | None]:
    out: dict[str, int | None] = {}
    for meta in mutants.rglob("*.py.meta"):
        out.update(json.loads(meta.read_text())["exit_code_by_key"])
    return out


def main(argv: list[str]) -> int:
    results = _results(Path(argv[0] if argv else "mutants"))
    print(f"{'module':28s} {'mutants':>8s} {'killed':>7s} {'survived':>9s} {'timeout':>8s} "
          f"{'not run':>8s} {'survival':>9s}")
    for label, patterns in SCOPE.items():
        codes = [c for k, c in results.items() if any(fnmatch.fnmatchcase(k, p) for p in patterns)]
        killed = sum(c in KILLED for c in codes)
        survived = sum(c == 0 for c in codes)
        timeout = sum(c in TIMEOUT for c in codes)
        run = killed + survived
        rate = f"{100.0 * survived / run:.1f} %" if run else "-"
        print(f"{label:28s} {len(codes):8d} {killed:7d} {survived:9d} {timeout:8d} "
              f"{len(codes) - run - timeout:8d} {rate:>9s}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
