"""LightningModules: image classification, and the recipe machinery every task shares."""

from .base import TaskModule
from .classification import ImageClassifier

__all__ = ["ImageClassifier", "TaskModule"]
