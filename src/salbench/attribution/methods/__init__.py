"""One module per method; importing this package registers them all in ``METHODS``."""
from . import gradcam, gradcam_pp, gradient, guided, integrated_gradients, lrp, noise, normgrad, random_map  # noqa: F401
