"""CLEVR-XAI visual question answering: programs over scene records, question families, ground truths."""
from .generate import QuestionGenerator, QuestionSet, answers, reject
from .program import (GT_KINDS, NODE_KINDS, RELATIONS, IllPosed, Node, ProgramError, SceneFacts, execute,
                      ground_directions, ground_truths)
from .templates import FAMILIES, tokenize

__all__ = [
    "FAMILIES", "GT_KINDS", "NODE_KINDS", "RELATIONS", "IllPosed", "Node", "ProgramError", "QuestionGenerator",
    "QuestionSet", "SceneFacts", "answers", "execute", "ground_directions", "ground_truths", "reject", "tokenize",
]
