"""Shared mechanisms: module discovery, checked weight loading, inference (tiling, self-ensemble),
MATLAB-compatible LR generation and FLOP counting."""
