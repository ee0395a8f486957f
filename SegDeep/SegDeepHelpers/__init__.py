"""Slicer glue of the SegDeep module: one responsibility per file.

Pure-Python helpers (no Slicer import, usable and tested outside Slicer): ``terminology``,
``geometry``, ``process``, ``catalogue``, ``environment``, ``crf`` (the CRF parameter widgets, reached
through the ``ui`` object only). Slicer glue (imports ``slicer`` lazily):
``segmentation`` (results -> segment nodes, Segment Editor hand-over), ``jobs`` (temp files +
subprocess for one run), ``logic`` (the module logic) and ``panel`` (the module widget behaviour).
"""
