"""Gradient ascent engine on tiny models built here: objectives, params, loop, cache, errors."""

from __future__ import annotations

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")

from featureviz.ascent import (  # noqa: E402
    AscentConfig,
    as_objective,
    batch_of_channels,
    channel,
    clear_cache,
    fft_image,
    layer_objective,
    neuron,
    pixel_image,
    regularizers,
    standard_transforms,
    trace_count,
    transforms,
    visualize,
)
from featureviz.errors import Cancelled, InvalidRequest, LayerNotFound  # noqa: E402


def tiny_model(size: int | None = 16, channels: int = 3, seed: int = 1) -> keras.Model:
    """Two ReLU convs (biases start alive) and a dense head; deterministic weights."""
    keras.utils.set_random_seed(seed)
    alive = keras.initializers.Constant(0.1)
    conv = {"padding": "same", "activation": "relu", "bias_initializer": alive}
    inputs = keras.Input((size, size, channels))
    x = keras.layers.Conv2D(4, 3, name="c1", **conv)(inputs)
    x = keras.layers.Conv2D(6, 3, name="c2", **conv)(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    outputs = keras.layers.Dense(2, name="head")(x)
    return keras.Model(inputs, outputs, name="tiny")


@pytest.fixture(scope="module")
def model() -> keras.Model:
    return tiny_model()


FAST = AscentConfig(steps=6, size=16, learning_rate=0.1)


# --- objectives ----------------------------------------------------------------------------


def acts_for(shape=(2, 4, 4, 3), seed=0) -> dict:
    rng = np.random.default_rng(seed)
    return {"L": tf.constant(rng.normal(size=shape).astype("float32"))}


def test_channel_neuron_layer_values() -> None:
    acts = acts_for()
    a = acts["L"].numpy()
    np.testing.assert_allclose(channel("L", 1)(acts), a[..., 1].mean(axis=(1, 2)), atol=1e-6)
    np.testing.assert_allclose(neuron("L", 2)(acts), a[:, 2, 2, 2], atol=1e-6)
    np.testing.assert_allclose(layer_objective("L")(acts), (a**2).mean(axis=(1, 2, 3)), atol=1e-6)


def test_objectives_compose_without_touching_operands() -> None:
    acts = acts_for()
    a, b = channel("L", 0), neuron("L", 1)
    va, vb = a(acts).numpy(), b(acts).numpy()
    combo = a + 3 * b
    np.testing.assert_allclose(combo(acts), va + 3 * vb, atol=1e-5)
    np.testing.assert_allclose((-a)(acts), -va, atol=1e-6)
    np.testing.assert_allclose((a - b)(acts), va - vb, atol=1e-5)
    np.testing.assert_allclose((2 * (a + b))(acts), 2 * (va + vb), atol=1e-5)
    # operands unchanged, weights apply to their own term only
    np.testing.assert_allclose(a(acts), va)
    np.testing.assert_allclose(b(acts), vb)
    assert combo.name == "channel(L, 0) + 3 * neuron(L, 1)"
    assert (-a).name == "-channel(L, 0)"
    assert a.name == "channel(L, 0)"
    assert sum([a, b]).name == "channel(L, 0) + neuron(L, 1)"
    assert combo.layers == ("L",)


def test_as_objective_parses_the_api_forms() -> None:
    acts = acts_for(seed=3)
    assert as_objective("L:2").name == "channel(L, 2)"
    assert as_objective("neuron:L:1").name == "neuron(L, 1)"
    assert as_objective("channel:L:1").name == "channel(L, 1)"
    assert as_objective("layer:L").name == "layer_objective(L)"
    np.testing.assert_allclose(as_objective("L:2")(acts), channel("L", 2)(acts))
    assert as_objective("vgg16/block3_conv1:12").layers == ("vgg16/block3_conv1",)
    obj = channel("L", 0)
    assert as_objective(obj) is obj
    for bad in ("L", "L:x", "L:-1", "neuron:L", ""):
        with pytest.raises(ValueError):
            as_objective(bad)


def test_batch_of_channels_gives_each_image_its_channel() -> None:
    acts = acts_for(shape=(3, 5, 5, 4))
    a = acts["L"].numpy()
    got = batch_of_channels("L", [2, 0, 3])(acts).numpy()
    np.testing.assert_allclose(got, [a[i, ..., c].mean() for i, c in enumerate([2, 0, 3])], 1e-5)
    got = batch_of_channels("L", [1, 1, 0], kind="neuron")(acts).numpy()
    np.testing.assert_allclose(got, [a[i, 2, 2, c] for i, c in enumerate([1, 1, 0])], 1e-6)


# --- params, transforms, regularizers ------------------------------------------------------


@pytest.mark.parametrize("make", [pixel_image, fft_image])
def test_params_draw_valid_images_and_reset_by_seed(make) -> None:
    param = make(2, 12, seed=4)
    variables, draw = param
    first = draw().numpy()
    assert first.shape == (2, 12, 12, 3)
    assert 0.0 <= first.min() and first.max() <= 1.0
    variables[0].assign_add(tf.ones_like(variables[0]))
    param.reset(4)
    np.testing.assert_array_equal(draw().numpy(), first)
    assert make(1, 8, channels=1).images().shape == (1, 8, 8, 1)


def test_standard_transforms_are_seeded_and_scale_with_size() -> None:
    images = tf.random.uniform((2, 64, 64, 3), seed=1)
    t = standard_transforms(64)
    seed = tf.constant([7, 1], tf.int64)
    np.testing.assert_array_equal(t(images, seed).numpy(), t(images, seed).numpy())
    other = [t(images, tf.constant([7, s], tf.int64)).numpy() for s in range(2, 6)]
    assert any(o.shape != other[0].shape or not np.array_equal(o, other[0]) for o in other)
    rotated = transforms.random_rotate([90])(images, seed).numpy()
    np.testing.assert_allclose(rotated[0, 10, 20], images.numpy()[0, 20, 53], atol=1e-5)
    assert transforms.factory(("pad:2", "jitter:2"), 64)(images, seed).shape == (2, 66, 66, 3)
    with pytest.raises(ValueError):
        transforms.factory(("warp:3",), 64)


def test_regularizers_are_per_image() -> None:
    flat = tf.fill((1, 8, 8, 3), 0.5)
    noisy = tf.constant(np.random.default_rng(0).uniform(size=(1, 8, 8, 3)), tf.float32)
    images = tf.concat([flat, noisy], 0)
    for reg in (regularizers.l2(1.0), regularizers.total_variation(1.0), regularizers.blur(1.0)):
        penalty = reg(images).numpy()
        assert penalty.shape == (2,)
        assert penalty[0] == pytest.approx(0.0, abs=1e-7) and penalty[1] > 0
    assert regularizers.factory({"l2": 0.0, "tv": 0.0}) is None
    with pytest.raises(ValueError):
        regularizers.factory({"sharpness": 1.0})


# --- the loop ------------------------------------------------------------------------------


@pytest.mark.parametrize("parameterization", ["fft", "pixel"])
@pytest.mark.parametrize("kind", ["channel", "neuron"])
def test_a_few_steps_raise_the_objective(model, parameterization, kind) -> None:
    # lucid's assert_gradient_ascent: the target goes up from the first step to the last
    config = AscentConfig(steps=12, size=16, learning_rate=0.1, parameterization=parameterization)
    result = visualize(model, "c2", [0, 3, 5], config, objective_kind=kind)
    assert result.history.shape == (12, 3)
    first, last = result.history[0], result.history[-1]
    assert (last > first).all()
    assert (result.objective_values > first).all()  # measured after the last update
    assert result.objective_values.shape == (3,)
    assert result.images.shape == (3, 16, 16, 3) and result.images.dtype == np.float32
    assert 0.0 <= result.images.min() and result.images.max() <= 1.0
    assert result.channels == [0, 3, 5] and result.layer == "c2"


def test_same_seed_same_images_other_seed_other_images(model) -> None:
    one = visualize(model, "c1", [0, 1], AscentConfig(steps=4, size=16, seed=3))
    two = visualize(model, "c1", [0, 1], AscentConfig(steps=4, size=16, seed=3))
    three = visualize(model, "c1", [0, 1], AscentConfig(steps=4, size=16, seed=4))
    np.testing.assert_array_equal(one.images, two.images)
    np.testing.assert_array_equal(one.history, two.history)
    assert not np.array_equal(one.images, three.images)


def test_snapshots_at_multiples_and_the_last(model) -> None:
    result = visualize(model, "c1", [1], AscentConfig(steps=7, size=16, snapshot_every=3))
    assert result.snapshot_steps == [3, 6, 7]
    assert result.snapshots.shape == (3, 1, 16, 16, 3)
    np.testing.assert_array_equal(result.snapshots[-1], result.images)
    only_last = visualize(model, "c1", [1], AscentConfig(steps=5, size=16))
    assert only_last.snapshot_steps == [5] and only_last.snapshots.shape[0] == 1


def test_progress_reports_and_cancels(model) -> None:
    seen: list[tuple[int, tuple[int, ...]]] = []

    def progress(step: int, acts: np.ndarray) -> bool:
        seen.append((step, acts.shape))
        return step >= 4

    with pytest.raises(Cancelled):
        visualize(
            model,
            "c1",
            [0, 2],
            AscentConfig(steps=20, size=16),
            progress=progress,
            progress_every=2,
        )
    assert seen == [(2, (2,)), (4, (2,))]


def test_second_job_does_not_trace_again(model) -> None:
    clear_cache()
    visualize(model, "c2", [0, 1, 2, 3], FAST)
    traced = trace_count()
    other = AscentConfig(steps=3, size=16, learning_rate=0.3, seed=9)  # same graph
    result = visualize(model, "c2", [5, 4, 3, 2], other)
    assert trace_count() == traced
    assert result.channels == [5, 4, 3, 2]
    visualize(model, "c2", [0, 1, 2], FAST)  # another batch size: a new step
    assert trace_count() == traced + 1


def test_grayscale_and_fixed_size_models() -> None:
    grey = tiny_model(size=None, channels=1)
    result = visualize(grey, "c1", [0, 1], AscentConfig(steps=3, size=20))
    assert result.images.shape == (2, 20, 20, 3)
    np.testing.assert_array_equal(result.images[..., 0], result.images[..., 2])
    fixed = tiny_model(size=16)
    result = visualize(fixed, "c2", [0], AscentConfig(steps=3, size=24))
    assert result.images.shape == (1, 24, 24, 3)


def test_regularizers_and_grad_options_run(model) -> None:
    config = AscentConfig(
        steps=4,
        size=16,
        regularizers={"l2": 1.0, "tv": 1.0, "blur": 1.0},
        clip_grad=1.0,
        normalize_grad=True,
        optimizer="sgd",
        transforms=("jitter:2",),
    )
    result = visualize(model, "c1", [0], config)
    assert np.isfinite(result.history).all()


def test_errors(model) -> None:
    with pytest.raises(LayerNotFound):
        visualize(model, "nope", [0], FAST)
    with pytest.raises(InvalidRequest):
        visualize(model, "c1", [4], FAST)  # c1 has 4 channels
    with pytest.raises(InvalidRequest):
        visualize(model, "c1", [-1], FAST)
    with pytest.raises(InvalidRequest):
        visualize(model, "c1", [], FAST)
    with pytest.raises(InvalidRequest):
        visualize(model, "head", [0], FAST)  # 2-D output, no channel axis
    with pytest.raises(ValueError):
        visualize(model, "c1", [0], FAST, preprocess="yuv")
    for bad in (
        {"steps": 0},
        {"learning_rate": 0.0},
        {"size": 4},
        {"parameterization": "dct"},
        {"optimizer": "rmsprop"},
        {"transforms": "some"},
        {"regularizers": {"l3": 1.0}},
        {"regularizers": {"l2": -1.0}},
        {"clip_grad": 0.0},
        {"snapshot_every": -1},
    ):
        with pytest.raises(ValueError):
            AscentConfig(**bad)


def test_config_is_frozen() -> None:
    config = AscentConfig(regularizers={"l2": 0.5})
    with pytest.raises(AttributeError):
        config.steps = 3  # type: ignore[misc]
    with pytest.raises(TypeError):
        config.regularizers["l2"] = 1.0  # type: ignore[index]
    assert hash(config) == hash(AscentConfig(regularizers={"l2": 0.5}))


def test_nested_paths_relu_layers_and_linear_convs() -> None:
    keras.utils.set_random_seed(2)
    inner = keras.Sequential(
        [
            keras.Input((16, 16, 3)),
            keras.layers.Conv2D(4, 3, padding="same", name="lin"),
            keras.layers.ReLU(name="act"),
        ],
        name="inner",
    )
    outer = keras.Sequential(
        [keras.Input((16, 16, 3)), inner, keras.layers.GlobalAveragePooling2D()], name="outer"
    )
    config = AscentConfig(steps=8, size=16, learning_rate=0.1, transforms="none")
    for path in ("inner/lin", "inner/act"):
        result = visualize(outer, path, [0, 1, 2, 3], config)
        assert result.layer == path
        assert (result.history[-1] > result.history[0]).sum() >= 3
    with pytest.raises(LayerNotFound):
        visualize(outer, "inner/nope", [0], config)


def test_config_from_job_params_ignores_other_keys():
    from featureviz.ascent import AscentConfig

    params = {
        "layer": "conv2",
        "channels": [0, 1],
        "steps": 7,
        "transforms": ["jitter:2"],
        "regularizers": {"tv": 0.5},
        "optimizer": "sgd",
        "layer_path": "conv2",
    }
    config = AscentConfig.from_params(params)
    assert (config.steps, config.transforms, config.optimizer) == (7, ("jitter:2",), "sgd")
    assert dict(config.regularizers) == {"tv": 0.5}
    assert config.learning_rate == AscentConfig().learning_rate
