"""Classifiers: timm ResNets and ViTs by name, deterministic training, safetensors checkpoints.
Question-conditioned VQA models (Relation Network, FiLM) by name, trained on question shards.

Models take float32 N×3×H×W images in [0, 1] and normalise inside (see :class:`Classifier`); question
models also take int64 N×L tokens (see :class:`QuestionModel`).
"""
from .checkpoint import check_compatible, load_checkpoint, read_manifest, save_checkpoint
from .training import TrainConfig, accuracy, augment, fit, predict, random_labels, set_deterministic
from .zoo import MODELS, Classifier, ModelSpecError, as_spec, build_model, preprocess, to_unit
from .question import QUESTION_MODELS, QuestionModel, as_question_spec, build_question_model
from . import film, relation_network  # noqa: F401  (register the question models)
from .vqa_training import Questions, answer_accuracy, below_gates, fit_questions, predict_answers

__all__ = [
    "MODELS", "Classifier", "ModelSpecError", "TrainConfig", "accuracy", "as_spec", "augment", "build_model",
    "check_compatible", "fit", "load_checkpoint", "predict", "preprocess", "random_labels", "read_manifest",
    "save_checkpoint", "set_deterministic", "to_unit",
    "QUESTION_MODELS", "QuestionModel", "Questions", "answer_accuracy", "as_question_spec", "below_gates",
    "build_question_model", "fit_questions", "predict_answers",
]
