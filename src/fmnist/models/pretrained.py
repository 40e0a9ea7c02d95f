"""Start a model from existing weights: an ImageNet weight set (``--pretrained``) or one of
our own runs (``--init``).

Weight files are read as data only: safetensors, or a PyTorch state dict through
``torch.load(weights_only=True)``, which refuses pickled code. Tensors whose name and
shape match the model are copied; the rest (typically a classifier head of another size)
keep their fresh initialisation, and the returned ``WeightTransfer`` says which.
"""

from __future__ import annotations

import logging
import os
import pickle
import urllib.error
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from fmnist.errors import ConfigError, RunError

log = logging.getLogger(__name__)

# Named weight sets: torchvision's ImageNet-1k releases, fetched through torch.hub into
# $TORCH_HOME/hub/checkpoints (default ~/.cache/torch/hub/checkpoints).
NAMED_WEIGHTS = {
    ("resnet18", "imagenet"): "https://download.pytorch.org/models/resnet18-f37072fd.pth",
    ("mobilenet_v2", "imagenet"): "https://download.pytorch.org/models/mobilenet_v2-b0353104.pth",
}
WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin")


@dataclass
class WeightTransfer:
    """What was copied into the model and what kept its fresh initialisation."""

    source: str
    loaded: list[str] = field(default_factory=list)
    reinitialised: list[str] = field(default_factory=list)  # in the model, absent or of another shape in the source
    unused: list[str] = field(default_factory=list)  # in the source, not in the model

    def summary(self) -> str:
        text = f"{self.source}: loaded {len(self.loaded)} tensors"
        if self.reinitialised:
            text += f"; freshly initialised: {', '.join(self.reinitialised)}"
        return text


def looks_like_file(source: str) -> bool:
    """True when --pretrained names a file (a path or a weights suffix), not a named set."""
    return Path(source).suffix.lower() in WEIGHT_SUFFIXES or os.sep in source or Path(source).expanduser().exists()


def read_state_dict(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Tensors of a safetensors file or a PyTorch state dict (.pth/.pt/.bin), never unpickling code."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise ConfigError(f"{path}: no such weights file", "check the path")
    suffix = path.suffix.lower()
    if suffix not in WEIGHT_SUFFIXES:
        raise ConfigError(f"{path}: unknown weights format {suffix!r}", f"use one of {', '.join(WEIGHT_SUFFIXES)}")
    try:
        if suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            # weights_only=True: the unpickler accepts tensors and plain containers only and
            # refuses anything that would import or call code.
            state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        # torch names the class or function it refused to import ("Unsupported global");
        # anything else is a garbled file.
        if "unsupported global" not in str(error).lower():
            raise ConfigError(f"{path}: cannot read weights (not a PyTorch file)", "pass a safetensors file or a state dict saved with torch.save") from None
        raise ConfigError(
            f"{path}: refused: it holds pickled objects other than tensors (code is never unpickled)",
            "save the weights with torch.save(model.state_dict()) or as .safetensors",
        ) from None
    except Exception as error:  # noqa: BLE001 - any other reader failure means an unreadable file
        first = (str(error).splitlines() or [type(error).__name__])[0]
        raise ConfigError(f"{path}: cannot read weights ({first[:200]})", "pass a safetensors file or a state dict saved with torch.save") from None
    # Training checkpoints often nest the weights: {"state_dict": {...}} or {"model": {...}}.
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ConfigError(f"{path}: not a state dict of tensors", "save the weights with torch.save(model.state_dict())")
    # Weights saved from a DataParallel/DDP model carry a "module." prefix.
    return {key.removeprefix("module."): value for key, value in state.items()}


def fetch_named_weights(model_name: str, name: str) -> dict[str, torch.Tensor]:
    """A named weight set through torch.hub (from its cache when present, else downloaded)."""
    url = NAMED_WEIGHTS.get((model_name, name))
    if url is None:
        known = ", ".join(sorted(n for m, n in NAMED_WEIGHTS if m == model_name)) or "none"
        raise ConfigError(
            f"pretrained {name!r}: not a weights file, nor a named weight set for {model_name} (named sets: {known})",
            "pass a .safetensors/.pth file or a named set",
        )
    hub_dir = Path(torch.hub.get_dir()) / "checkpoints"
    try:
        return torch.hub.load_state_dict_from_url(url, map_location="cpu", progress=False, weights_only=True)
    except (urllib.error.URLError, OSError, TimeoutError) as error:
        reason = getattr(error, "reason", error)
        raise ConfigError(
            f"cannot download the {name} weights for {model_name} from {url} ({reason}); offline?",
            f"put the file at {hub_dir / url.rsplit('/', 1)[-1]}, or set pretrained to a local "
            ".safetensors/.pth file",
        ) from None


def load_pretrained(model: nn.Module, model_name: str, source: str) -> WeightTransfer:
    """Copy an ImageNet state dict (a file, or a named set such as 'imagenet') into the
    backbone of an ImageNetClassifier; its 1000-class head is left out."""
    prefix = getattr(model, "pretrained_prefix", None)
    if prefix is None:
        raise ConfigError(
            f"pretrained needs an ImageNet backbone; {model_name} has none",
            "use model resnet18 or mobilenet_v2 (or init_run, to start from one of your runs)",
        )
    state = read_state_dict(source) if looks_like_file(source) else fetch_named_weights(model_name, source)
    head = f"{model.head_name}."
    backbone_state = {prefix + key: value for key, value in state.items() if not key.startswith(head)}
    check_backbone_fits(model, backbone_state, source, model_name)
    transfer = copy_matching(model, backbone_state, source)
    transfer.reinitialised = [key for key in transfer.reinitialised if key.startswith(prefix)]  # the new head
    return transfer


def check_backbone_fits(model: nn.Module, state: dict[str, torch.Tensor], source: str, model_name: str) -> None:
    """Refuse ImageNet weights that do not cover the whole backbone with the right shapes:
    a partly loaded backbone would train silently from a broken start."""
    prefix, head = model.pretrained_prefix, f"{model.pretrained_prefix}{model.head_name}."
    expected = {
        key: value.shape
        for key, value in model.state_dict().items()
        if key.startswith(prefix) and not key.startswith(head) and not key.endswith("num_batches_tracked")
    }
    missing = [key.removeprefix(prefix) for key in expected if key not in state]
    wrong = [
        f"{key.removeprefix(prefix)} {tuple(state[key].shape)} instead of {tuple(shape)}"
        for key, shape in expected.items()
        if key in state and state[key].shape != shape
    ]
    if wrong or missing:
        problem = f"wrong shapes ({'; '.join(wrong[:3])})" if wrong else f"missing {len(missing)} tensors ({', '.join(missing[:3])})"
        raise ConfigError(
            f"{source}: not torchvision-style {model_name} weights: {problem}",
            f"pass the {model_name} state dict (torchvision or timm names)",
        )


def load_run_weights(model: nn.Module, run: str | os.PathLike[str]) -> WeightTransfer:
    """Copy the weights of one of our runs (a run folder or model file) whose names and
    shapes match; a head of another size (e.g. 10 -> 4 classes) is freshly initialised."""
    from fmnist.models.saved import resolve_model_path
    from fmnist.tensorfile import load_tensor_file, non_finite_tensors

    try:
        path = resolve_model_path(run)
    except RunError as error:
        raise RunError(f"init_run: {error.problem}", error.fix) from None
    tensors, _ = load_tensor_file(path)
    damaged = non_finite_tensors(tensors)
    if damaged:  # copied in, they would make the first training step NaN
        raise RunError(f"init_run {path}: weights {', '.join(damaged[:3])} hold NaN or infinite values", "start from another run")
    transfer = copy_matching(model, tensors, str(path))
    if not transfer.loaded:
        raise RunError(f"init_run {run}: none of its weights fit this model", "start from a run of the same model family")
    return transfer


@torch.no_grad()
def copy_matching(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> WeightTransfer:
    """Copy each tensor of ``state`` whose name and shape match ``model``'s state dict."""
    transfer = WeightTransfer(source=source)
    own = model.state_dict()
    for key, target in own.items():
        value = state.get(key)
        if value is not None and value.shape == target.shape:
            target.copy_(value.to(target.dtype))
            transfer.loaded.append(key)
        elif not key.endswith("num_batches_tracked"):
            transfer.reinitialised.append(key)
    transfer.unused = sorted(set(state) - set(own))
    return transfer
