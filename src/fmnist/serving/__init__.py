"""The HTTP prediction service (FastAPI) and its web page."""

from fmnist.serving.app import ServeSettings, create_app
from fmnist.serving.uploads import Limits

__all__ = ["Limits", "ServeSettings", "create_app"]
