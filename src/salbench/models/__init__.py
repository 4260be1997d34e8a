"""Classifiers: timm ResNets and ViTs by name, deterministic training, safetensors checkpoints.

Models take float32 N×3×H×W images in [0, 1] and normalise inside (see :class:`Classifier`).
"""
from .checkpoint import check_compatible, load_checkpoint, read_manifest, save_checkpoint
from .training import TrainConfig, accuracy, augment, fit, predict, random_labels, set_deterministic
from .zoo import MODELS, Classifier, ModelSpecError, as_spec, build_model, preprocess, to_unit

__all__ = [
    "MODELS", "Classifier", "ModelSpecError", "TrainConfig", "accuracy", "as_spec", "augment", "build_model",
    "check_compatible", "fit", "load_checkpoint", "predict", "preprocess", "random_labels", "read_manifest",
    "save_checkpoint", "set_deterministic", "to_unit",
]
