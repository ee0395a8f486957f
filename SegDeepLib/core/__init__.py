"""The torch-free core: what both the library and the Slicer module read, without torch or Slicer.

Importing ``SegDeepLib.core`` (or any module in it) imports neither ``torch`` nor ``slicer``; the Slicer
module (``SegDeep/SegDeepHelpers``) uses it directly, so the model catalogue, the model cards and the
CRF parameter table are read by one piece of code. ``Testing/SegDeep/test_core_torch_free.py`` checks
it with torch made unimportable.

- :mod:`SegDeepLib.core.model_card`: a model folder's ``model.json`` (read and minimally validated).
- :mod:`SegDeepLib.core.catalogue`: shipped catalogue + the user's models folder.
- :mod:`SegDeepLib.core.labels`: label tables (names, colours, SNOMED-CT terminology).
"""
