"""DEPICT: concept permutation importance through counterfactual generators (renderer, diffusion).

``salbench.concepts.diffusion`` (diffusers, transformers) is imported only when the diffusion generator is built.
"""
from .annotations import (CAPTION_CONTEXTS, captions, concept_matrix, context_phrases, object_concepts, phrase,
                          task_from_manifest, vocabulary)
from .classifier import train_concept_classifier
from .depict import (GeneratorEvaluation, Importance, Plan, evaluate_generator, ranking, report, saliency_scores,
                     true_importance)
from .edit import EditError, set_concept
from .generators import GENERATORS, Generator, GeneratorContext, RendererGenerator, build_generator, image_seed
from .images import logits, resize
from .metrics import auroc, concept_mass, permutation_importance, rule_scores, spearman, task_metric
from .permute import ConceptParamsError, concept_indices, draw_permutations, n_orderings, permute_column

__all__ = [
    "CAPTION_CONTEXTS", "GENERATORS", "ConceptParamsError", "EditError", "Generator", "GeneratorContext",
    "GeneratorEvaluation", "Importance", "Plan", "RendererGenerator", "auroc", "build_generator", "captions",
    "concept_indices", "concept_mass", "concept_matrix", "context_phrases", "draw_permutations", "evaluate_generator",
    "image_seed", "logits", "n_orderings", "object_concepts", "permutation_importance", "permute_column", "phrase",
    "ranking", "report", "resize", "rule_scores", "saliency_scores", "set_concept", "spearman", "task_from_manifest",
    "task_metric", "train_concept_classifier", "true_importance", "vocabulary",
]
