"""The ``segdeep`` command line. One module per sub-command, each with ``add_parser`` and ``run``."""
