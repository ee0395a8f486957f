"""Data files shipped with the library (label tables, model catalogue, default weights)."""
