"""Inference: photos -> 28x28 dataset-style images, and predictors (PyTorch, ONNX Runtime).

The API that `fmnist predict`, `fmnist serve` and the web page build on (stable)::

    from fmnist.inference import load_predictor, prepare_photo

    predictor = load_predictor("runs/fast", backend="torch")  # or "onnxruntime" (model.onnx / .onnx file)
    prepared = prepare_photo(path_or_bytes)                    # raises DataError for non-images
    prepared.image       # uint8 (28, 28): exactly what the model sees (light garment on black)
    prepared.warnings    # list[str]: inputs unlike the data (low contrast, nothing to trim, ...)
    prepared.passthrough # True when the input already was a dataset-style 28x28 (or raw=True)
    predictions = predictor.predict(np.stack([prepared.image]), k=5, min_confidence=0.0)
    predictions[0].to_dict()  # {"label", "class_id", "probability", "top_k": [{"label", "probability"}]}

- ``load_predictor(path, *, backend="torch", threads=None) -> Predictor``: a run folder,
  model.safetensors or an exported .pt (torch), an .onnx file or a run folder holding
  model.onnx (onnxruntime). A specialist run gives its combination with its base run.
  Raises RunError/ConfigError (FmnistError) with a one-line message.
- ``Predictor``: ``backend``, ``name`` (run folder name), ``source`` (file), ``class_names``,
  ``temperature``, ``tta_flip``; ``probabilities(images) -> float32 (N, C)``,
  ``logits(images)`` (before the temperature), ``outputs(images) -> (logits, probabilities)``
  (each with optional ``tta_flip=`` and ``temperature=`` for one call) and
  ``predict(images, *, k=5, min_confidence=0.0) -> list[Prediction]`` for uint8 (N, 28, 28)
  (a single (28, 28) image is a batch of one; (N, 1, 28, 28) is accepted). The one route
  from images to probabilities: every backend (a model file, a TorchScript ``.pt`` or ONNX
  export) supplies logits, and the shared base applies the contract's scaling, the model
  card's test-time flip and calibration temperature, and the softmax. Thread-safe.
- ``Prediction``: ``label`` (class name, or "uncertain" when the best probability is below
  ``min_confidence``), ``class_id`` (None when uncertain), ``probability``, ``top_k``.
- ``prepare_photo(source, *, raw=False, max_pixels=40_000_000) -> PreparedImage`` for a path
  or bytes; ``open_image`` + ``prepare_image(pil_image, *, raw=False)`` for the two halves.
  ``max_pixels`` is checked from the header before decoding (decompression-bomb guard).
  ``raw=True`` takes the input as a dataset-style 28x28 as is (DataError for other sizes).
"""

from fmnist.inference.photo import (
    DEFAULT_MAX_PIXELS,
    PreparedImage,
    open_image,
    prepare_image,
    prepare_photo,
)
from fmnist.inference.predictor import (
    BACKENDS,
    UNCERTAIN,
    Prediction,
    Predictor,
    load_predictor,
    top_k,
)

__all__ = [
    "BACKENDS",
    "DEFAULT_MAX_PIXELS",
    "UNCERTAIN",
    "Prediction",
    "Predictor",
    "PreparedImage",
    "load_predictor",
    "open_image",
    "prepare_image",
    "prepare_photo",
    "top_k",
]
