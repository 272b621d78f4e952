"""Other libraries' feature visualization on the same model, layer and budget (bench-only).

Runs INSIDE ``bench/.venv-compare`` (built by ``bench/compare_env.sh``), never in the
project's venv: xplique and tf-keras-vis must not become dependencies of the service. It does
not import ``featureviz``. ``bench/jobs.py`` starts it as a subprocess in ``--serve`` mode and
drives it over stdin/stdout, one JSON line per request, so that its runs alternate round by
round with featureviz's own variants. By hand::

    bench/.venv-compare/bin/python bench/compare_libs.py --model vgg16.keras --reps 2

Both libraries run under ``TF_USE_LEGACY_KERAS=1`` (tf-keras-vis builds on ``tf.keras`` 2
APIs: ``clone_model`` + ``set_weights``, ``tf.optimizers.RMSprop``). The Keras 3 ``.keras``
file is read with Keras 3 only to take the weights; the same VGG16 conv base is rebuilt in
``tf_keras`` at the job's size (128x128: the conv base takes any size, as featureviz's cut
does) with the model's ``caffe`` preprocessing as its first layer, and the weights copied by
layer name.

- xplique: ``Objective.channel(model, layer, channels)`` + ``optimize(objective,
  nb_steps=50, custom_shape=(128, 128))``, its defaults otherwise (Adam 0.05, FFT, sigmoid to
  [0, 1], standard transformations). Model input: RGB in [0, 1].
- tf-keras-vis: ``ActivationMaximization(model, model_modifier=ExtractIntermediateLayer(
  layer))`` with ``CategoricalScore(channels)`` (on a 4-D output this is channel ``c`` of
  image ``i``, averaged over the image), ``steps=50``, a seed batch drawn as its own default
  draws one (uniform in ``input_range`` = (0, 255)), its defaults otherwise (RMSprop 1.0,
  Jitter 4 + Rotate2D 1, TotalVariation2D 1.0 + Norm 0.3). Model input: RGB in 0-255.

Every run saves its images as RGB float32 in [0, 1], (N, H, W, 3), to ``<out>/<method>.npy``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

import numpy as np  # noqa: E402

CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
VGG_BLOCKS = ((2, 64), (2, 128), (3, 256), (3, 512), (3, 512))
METHODS = ("xplique", "tf-keras-vis")


def conv_weights(path: str) -> dict[str, list[np.ndarray]]:
    """``{layer name: [kernel, bias]}`` of every Conv2D in the Keras 3 ``.keras`` file."""
    import keras  # Keras 3, whatever TF_USE_LEGACY_KERAS says about tf.keras

    model = keras.saving.load_model(path, compile=False)
    out = {}
    for layer in model.layers:
        if type(layer).__name__ == "Conv2D":
            out[layer.name] = [np.asarray(w) for w in layer.get_weights()]
    return out


def tf_keras_vgg16(weights: dict[str, list[np.ndarray]], size: int, scale: float) -> Any:
    """VGG16's conv base in tf_keras at ``size`` px, RGB input times ``scale`` -> caffe."""
    import tensorflow as tf
    import tf_keras

    mean = tf.constant(CAFFE_MEAN_BGR, tf.float32)

    def caffe(x: Any) -> Any:
        return x[..., ::-1] * scale - mean

    inp = tf_keras.Input((size, size, 3), name="rgb")
    x = tf_keras.layers.Lambda(caffe, name="caffe")(inp)
    for block, (n, filters) in enumerate(VGG_BLOCKS, start=1):
        for i in range(1, n + 1):
            x = tf_keras.layers.Conv2D(
                filters, 3, padding="same", activation="relu", name=f"block{block}_conv{i}"
            )(x)
        x = tf_keras.layers.MaxPooling2D(2, 2, name=f"block{block}_pool")(x)
    model = tf_keras.Model(inp, x, name="vgg16")
    for name, values in weights.items():
        model.get_layer(name).set_weights(values)
    return model


class Runner:
    def __init__(
        self, model_path: str, layer: str, channels: list[int], steps: int, size: int, out: Path
    ) -> None:
        import tensorflow as tf

        self.layer, self.channels, self.steps, self.size, self.out = (
            layer,
            channels,
            steps,
            size,
            out,
        )
        out.mkdir(parents=True, exist_ok=True)
        weights = conv_weights(model_path)
        self.unit_model = tf_keras_vgg16(weights, size, 255.0)  # xplique: [0, 1] in
        self.byte_model = tf_keras_vgg16(weights, size, 1.0)  # tf-keras-vis: 0-255 in
        self.errors: dict[str, str] = {}
        self.am = None
        try:
            from tf_keras_vis.activation_maximization import ActivationMaximization
            from tf_keras_vis.utils.model_modifiers import ExtractIntermediateLayer

            self.am = ActivationMaximization(
                self.byte_model, model_modifier=ExtractIntermediateLayer(layer), clone=True
            )
        except Exception as exc:  # noqa: BLE001 - reported, not faked
            self.errors["tf-keras-vis"] = f"{type(exc).__name__}: {exc}"
        self.tf = tf
        self.versions = versions()

    def xplique(self, seed: int, steps: int) -> np.ndarray:
        from xplique.features_visualizations import Objective, optimize

        self.tf.random.set_seed(seed)
        objective = Objective.channel(self.unit_model, self.layer, self.channels)
        images, _names = optimize(objective, nb_steps=steps, custom_shape=(self.size, self.size))
        return np.asarray(images[-1], dtype="float32")  # sigmoid output, [0, 1], RGB

    def tf_keras_vis(self, seed: int, steps: int) -> np.ndarray:
        from tf_keras_vis.utils.scores import CategoricalScore

        if self.am is None:
            raise RuntimeError(self.errors["tf-keras-vis"])
        self.tf.random.set_seed(seed)
        seed_input = self.tf.random.uniform((len(self.channels), self.size, self.size, 3), 0, 255)
        images = self.am(CategoricalScore(self.channels), seed_input=seed_input, steps=steps)
        return (np.asarray(images, dtype="float32") / 255.0).clip(0, 1)  # clipped to 0-255, RGB

    def run(
        self, method: str, seed: int, save: bool = True, steps: int | None = None
    ) -> dict[str, Any]:
        fn = {"xplique": self.xplique, "tf-keras-vis": self.tf_keras_vis}[method]
        try:
            start = time.perf_counter()
            images = fn(seed, steps or self.steps)
            seconds = time.perf_counter() - start
        except Exception as exc:  # noqa: BLE001 - the exact error goes into the table
            traceback.print_exc(file=sys.stderr)
            return {"method": method, "error": f"{type(exc).__name__}: {exc}"[:800]}
        path = self.out / f"{method}.npy"
        if save:
            np.save(path, images)
        return {
            "method": method,
            "seconds": seconds,
            "npy": str(path),
            "shape": list(images.shape),
            "range": [float(images.min()), float(images.max())],
        }


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("tensorflow", "tf-keras", "keras", "xplique", "tf-keras-vis"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "missing"
    return out


def emit(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True, help="the .keras file (featureviz demo VGG16)")
    ap.add_argument("--layer", default="block3_conv1")
    ap.add_argument("--channels", default="0-7", help="first-last")
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--out", default="/tmp/fvbench")
    ap.add_argument("--reps", type=int, default=2, help="timed runs per method (not --serve)")
    ap.add_argument(
        "--serve",
        action="store_true",
        help='answer JSON lines {"method": ..., "seed": ...} from stdin',
    )
    args = ap.parse_args()
    first, _, last = args.channels.partition("-")
    channels = list(range(int(first), int(last or first) + 1))
    runner = Runner(args.model, args.layer, channels, args.steps, args.size, Path(args.out))
    ready = {"ready": True, "versions": runner.versions, "errors": runner.errors}
    if args.serve:
        emit(ready)
        for line in sys.stdin:
            if not line.strip():
                continue
            req = json.loads(line)
            if req.get("quit"):
                break
            emit(
                runner.run(
                    req["method"], int(req.get("seed", 0)), req.get("save", True), req.get("steps")
                )
            )
        return
    report: dict[str, Any] = {**ready, "results": {}}
    for method in METHODS:
        warm = runner.run(method, 0, save=False)
        runs = (
            [warm] if "error" in warm else [runner.run(method, s) for s in range(1, args.reps + 1)]
        )
        report["results"][method] = runs
    emit(report)


if __name__ == "__main__":
    main()
