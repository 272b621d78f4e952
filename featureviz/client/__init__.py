"""A synchronous Python client for the featureviz v1 HTTP API.

``Client(base_url, api_key).submit(model, layer, channels) -> Job``; three lines for a pipeline::

    c = Client("http://127.0.0.1:8000")
    m = c.upload_model("model.keras")
    png = c.submit(m, "block3_conv1", "0-39").wait().result_png()

Every error the service answers (RFC 9457 problem+json) is raised as one exception type,
``FeatureVizHTTPError``; a job that ends ``failed`` or ``cancelled`` while waited on raises its
subclass ``JobFailed``. Connect errors and 502/503/504 are retried with exponential backoff,
honouring ``Retry-After``. Only httpx, numpy and Pillow are needed; Keras is imported only to
upload an in-memory ``keras.Model``.
"""

from __future__ import annotations

from featureviz.client.api import DEFAULT_URL, Client
from featureviz.client.errors import FeatureVizHTTPError, JobFailed
from featureviz.client.job import Job
from featureviz.client.parts import ImageLike, ModelRef

__all__ = [
    "DEFAULT_URL",
    "Client",
    "FeatureVizHTTPError",
    "ImageLike",
    "Job",
    "JobFailed",
    "ModelRef",
]
