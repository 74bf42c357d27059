"""The core: the mathematics of flow maps on torch tensors, with no run directory, command line or trainer.

Paths and models (every model is ``X_{s,t}(x) = x + (t − s) v_θ(x, s, t)``), training times, samplers,
teachers, couplings, networks, metrics and the objectives (pure losses). Everything here takes tensors and
options and returns tensors; files are read only through :mod:`flowmaps.io`.
"""
