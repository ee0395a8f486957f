"""The metrics package stays usable without torch (numpy and SimpleITK only)."""

from __future__ import annotations

import subprocess
import sys


def test_metrics_and_evaluate_import_without_torch():
    code = (
        "import sys\n"
        "sys.modules['torch'] = None  # any 'import torch' now fails\n"
        "import SegDeepLib.metrics, SegDeepLib.metrics.cases, SegDeepLib.metrics.summary\n"
        "import SegDeepLib.cli.evaluate\n"
        "import numpy as np\n"
        "m = np.zeros((4, 4, 4), bool); m[1:3, 1:3, 1:3] = True\n"
        "print(SegDeepLib.metrics.evaluate_masks(m, m, (1, 1, 1))['dsc'])\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "1.0"
