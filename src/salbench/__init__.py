"""salbench: a reproducible benchmark that tells whether a saliency map can be trusted."""

__version__ = "0.1.0"
