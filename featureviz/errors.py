"""The engine's exceptions: one root, a few kinds the service maps to problem+json.

Every subclass passes all of its constructor arguments to ``super().__init__`` so that it
survives pickling (Celery sends exceptions between processes).

    FeatureVizError
     ├── ModelRejected      the file is not a model we will load (format, safety, limits)
     ├── ImageRejected      the bytes are not an image we will decode (format, size, bomb)
     ├── LayerNotFound      no layer by that name, path or index
     ├── InvalidRequest     arguments that do not fit the model (channel range, shapes ...)
     ├── TooLarge           an input or an answer over a configured limit
     └── Cancelled          a long computation stopped because it was asked to
"""

from __future__ import annotations


class FeatureVizError(Exception):
    """Root of every error the engine raises on purpose."""

    title = "Feature visualization error"

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail

    def __str__(self) -> str:
        return self.detail


class ModelRejected(FeatureVizError):
    title = "Model rejected"


class ImageRejected(FeatureVizError):
    title = "Image rejected"


class LayerNotFound(FeatureVizError):
    title = "Layer not found"


class InvalidRequest(FeatureVizError):
    title = "Invalid request"


class TooLarge(FeatureVizError):
    title = "Too large"


class Cancelled(FeatureVizError):
    title = "Cancelled"
