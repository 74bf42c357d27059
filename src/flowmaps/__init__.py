"""flowmaps: few-step generative models (flow map matching, lines matching models) on PyTorch.

Convention everywhere: t = 0 is noise, t = 1 is data, and every model is a flow map
``X_{s,t}(x) = x + (t - s) v(x, s, t)``.
"""

__version__ = "0.2.0"
