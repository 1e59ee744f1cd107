"""What flows through scenemind: domain models, the graph state, run settings, errors.

This package imports nothing else of the project.
"""

from state.context import Context
from state.errors import (
    EmbedderMismatch,
    EmptyInput,
    InputTooLarge,
    ModelNotFound,
    SceneFileError,
    SceneMindError,
    StoreUnavailable,
)
from state.models import Component, Coupling, Crystal, Evidence, Formula, Parse, Probe, Recalled, Scene, Vector
from state.thinking import ThinkingState

__all__ = [
    "Component",
    "Context",
    "Coupling",
    "Crystal",
    "EmbedderMismatch",
    "EmptyInput",
    "Evidence",
    "Formula",
    "InputTooLarge",
    "ModelNotFound",
    "Parse",
    "Probe",
    "Recalled",
    "Scene",
    "SceneFileError",
    "SceneMindError",
    "StoreUnavailable",
    "ThinkingState",
    "Vector",
]
