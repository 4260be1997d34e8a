"""One module per method; importing this package registers them all in ``METHODS``."""
from . import (  # noqa: F401
    controls, gradcam, gradcam_pp, gradient, guided, integrated_gradients, lrp, noise, normgrad, random_map,
)
