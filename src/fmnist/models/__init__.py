"""Models: a registry of architectures built by name, and self-describing model files."""

# Importing the families registers them.
from fmnist.models import fast_cnn, imagenet, resnet, seed_cnn  # noqa: F401
from fmnist.models.registry import (
    count_flops,
    count_parameters,
    create_model,
    get_spec,
    list_models,
    model_defaults,
    register_model,
)
from fmnist.models.saved import (
    LoadedModel,
    ModelCard,
    load_model,
    resolve_model_path,
    save_model,
)
from fmnist.run import MODEL_FILE

__all__ = [
    "MODEL_FILE",
    "LoadedModel",
    "ModelCard",
    "count_flops",
    "count_parameters",
    "create_model",
    "get_spec",
    "list_models",
    "load_model",
    "model_defaults",
    "register_model",
    "resolve_model_path",
    "save_model",
]
