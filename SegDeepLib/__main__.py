"""``python -m SegDeepLib ...`` is the ``segdeep`` command."""

import sys

from SegDeepLib.cli.main import main

sys.exit(main())
