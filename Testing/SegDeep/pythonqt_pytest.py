"""``pythonqt-python Testing/SegDeep/pythonqt_pytest.py ARGS``: pytest inside the PythonQt host,
with its summary flushed before the host exits and pytest's exit status as the host's."""

import sys

import pytest

status = int(pytest.main(sys.argv[1:]))
sys.stdout.flush()
sys.stderr.flush()
sys.exit(status)
