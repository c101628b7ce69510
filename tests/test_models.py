"""Tests of the Flax NNX model zoo in :mod:`examples.models`.

Tiny configurations are checked end to end (output shape, one SGD step through
``nnx.Optimizer``); full configurations only abstractly (``nnx.eval_shape``), with
parameter counts derived here from the layer shapes.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from examples.models import (
    FCN,
    MLP,
    AlexNet,
    CNN1D,
    ResNet,
    ResNet18,
    ResNet50,
    ViT,
    adaptive_avg_pool,
    count_params,
    create_model,
    refresh_batch_stats,
)

BATCH = 8


def _num_scalars(tree) -> int:
    return sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(tree))


def _values(model, variable_type=nnx.Param):
    """numpy copies of the leaves (``nnx.state`` returns live variables)."""
    return [np.array(leaf) for leaf in jax.tree.leaves(nnx.state(model, variable_type))]


def _inputs(shape, seed=0):
    rng = np.random.default_rng(seed)
    return jnp.asarray(rng.uniform(0.0, 1.0, (BATCH, *shape)), jnp.float32)


# ------------------------------------------------------------------ tiny models

TINY_CASES = [
    # name, num_classes, input_shape
    ("mlp", 1, (2,)),
    ("mlp", 10, (8, 8, 1)),
    ("cnn1d", 10, (40,)),
    ("cnn1d", 10, (40, 1)),
    ("fcn", 10, (32, 32, 3)),
    ("alexnet", 10, (32, 32, 3)),
    ("resnet50", 10, (32, 32, 3)),
    ("vit", 10, (32, 32, 3)),
]


@pytest.mark.parametrize(
    "name,num_classes,input_shape",
    TINY_CASES,
    ids=[f"{c[0]}-{'x'.join(map(str, c[2]))}" for c in TINY_CASES],
)
def test_tiny_model_shape_and_sgd_step(name, num_classes, input_shape):
    # Initialising under jit compiles one program instead of one per shape.
    model = nnx.jit(
        lambda: create_model(
            name, num_classes=num_classes, input_shape=input_shape, size="tiny"
        )
    )()
    optimizer = nnx.Optimizer(model, optax.sgd(0.01), wrt=nnx.Param)
    x = _inputs(input_shape)
    regression = num_classes == 1
    y = (
        jnp.sum(x.reshape(BATCH, -1) ** 2, axis=1, keepdims=True)
        if regression
        else jnp.arange(BATCH) % num_classes
    )

    def loss_fn(m):
        out = m(x)
        if regression:
            loss = jnp.mean((out - y) ** 2)
        else:
            loss = optax.softmax_cross_entropy_with_integer_labels(out, y).mean()
        return loss, out

    @nnx.jit
    def step(m, opt):
        (loss, out), grads = nnx.value_and_grad(loss_fn, has_aux=True)(m)
        opt.update(m, grads)
        return loss, out

    params_before = _values(model)
    loss0, out = step(model, optimizer)
    loss1, _ = step(model, optimizer)  # Loss after the first step, same batch.
    assert out.shape == (BATCH, num_classes)
    assert np.isfinite(float(loss0)) and np.isfinite(float(loss1))
    assert float(loss1) < float(loss0)
    params_after = _values(model)
    assert all(np.all(np.isfinite(p)) for p in params_after)
    assert any(
        not np.array_equal(a, b) for a, b in zip(params_before, params_after)
    )


def test_tiny_resnet_and_vit_configurations():
    def abstract(name, shape, size="tiny"):
        return nnx.eval_shape(
            lambda: create_model(name, num_classes=10, input_shape=shape, size=size)
        )

    resnet = abstract("resnet50", (32, 32, 3))
    assert len(resnet.blocks) == 4
    assert resnet.small_inputs
    assert resnet.stem_conv.kernel.shape == (3, 3, 3, 8)
    assert resnet.head.kernel.shape == (8 * 8 * 4, 10)
    assert not abstract("resnet50", (224, 224, 3)).small_inputs
    vit = abstract("vit", (32, 32, 3))
    assert vit.patch_embed.kernel.shape == (8, 8, 3, 32)
    assert len(vit.blocks) == 2
    assert abstract("vit", (8, 8, 1)).patch_embed.kernel.shape == (2, 2, 1, 32)
    full_vit = abstract("vit", (32, 32, 3), size="full")
    assert full_vit.patch_embed.kernel.shape == (4, 4, 3, 768)


# --------------------------------------------------------- full parameter counts


def _conv(k, c_in, c_out, bias=True):
    return k * k * c_in * c_out + (c_out if bias else 0)


def _dense(n_in, n_out):
    return n_in * n_out + n_out


def _abstract(make):
    return nnx.eval_shape(make)


def test_resnet50_full_parameter_count():
    model = _abstract(lambda: ResNet50(num_classes=1000, rngs=nnx.Rngs(0)))
    assert count_params(model) == 25_557_032
    assert _num_scalars(nnx.state(model, nnx.Param)) == 25_557_032


def test_resnet50_parameter_count_by_hand():
    # Torchvision layout: stem, bottlenecks (1x1, 3x3, 1x1 + BN), projections.
    def bn(c):
        return 2 * c

    total = _conv(7, 3, 64, bias=False) + bn(64)
    c_in = 64
    for stage, blocks in enumerate((3, 4, 6, 3)):
        width = 64 * 2**stage
        for index in range(blocks):
            total += _conv(1, c_in, width, False) + bn(width)
            total += _conv(3, width, width, False) + bn(width)
            total += _conv(1, width, 4 * width, False) + bn(4 * width)
            if index == 0:
                total += _conv(1, c_in, 4 * width, False) + bn(4 * width)
            c_in = 4 * width
    total += _dense(2048, 1000)
    assert total == 25_557_032
    small = _abstract(
        lambda: ResNet50(num_classes=10, small_inputs=True, rngs=nnx.Rngs(0))
    )
    expected_small = (
        total - _conv(7, 3, 64, False) + _conv(3, 3, 64, False)
        - _dense(2048, 1000) + _dense(2048, 10)
    )
    assert count_params(small) == expected_small


def test_resnet18_full_parameter_count():
    model = _abstract(lambda: ResNet18(num_classes=1000, rngs=nnx.Rngs(0)))
    assert count_params(model) == 11_689_512


def test_vit_b16_full_parameter_count():
    model = _abstract(lambda: ViT(1000, rngs=nnx.Rngs(0)))
    assert count_params(model) == 86_567_656
    assert model.patch_embed.kernel.shape == (16, 16, 3, 768)
    assert model.pos_embed.shape == (1, 197, 768)
    hidden, mlp, tokens = 768, 3072, (224 // 16) ** 2 + 1
    block = 2 * (2 * hidden) + 4 * _dense(hidden, hidden)
    block += _dense(hidden, mlp) + _dense(mlp, hidden)
    expected = _conv(16, 3, hidden) + hidden + tokens * hidden
    expected += 12 * block + 2 * hidden + _dense(hidden, 1000)
    assert expected == 86_567_656
    # The model holds parameters only (no dropout RNG, no batch statistics).
    assert _num_scalars(nnx.state(model)) == 86_567_656


def test_fcn_full_parameter_count():
    widths = (64, 128, 256, 512, 512)
    expected, c_in = 0, 3
    for c in widths:
        expected += _conv(3, c_in, c) + 2 * c  # Conv with bias + BN scale/bias.
        c_in = c
    expected += _conv(1, 512, 10)
    assert expected == 3_918_858
    model = _abstract(lambda: FCN(10, rngs=nnx.Rngs(0)))
    assert count_params(model) == expected
    assert count_params(model, nnx.BatchStat) == 2 * sum(widths)
    no_bn = _abstract(lambda: FCN(10, batch_norm=False, rngs=nnx.Rngs(0)))
    assert count_params(no_bn) == expected - 2 * sum(widths)
    assert count_params(no_bn, nnx.BatchStat) == 0
    via_factory = _abstract(
        lambda: create_model(
            "fcn", num_classes=10, input_shape=(32, 32, 3), size="full"
        )
    )
    assert count_params(via_factory) == expected


def test_alexnet_full_parameter_counts():
    chans = (3, 64, 192, 384, 256, 256)
    convs = sum(_conv(3, a, b) for a, b in zip(chans[:-1], chans[1:]))
    cifar = convs + _dense(4 * 4 * 256, 4096) + _dense(4096, 4096)
    cifar += _dense(4096, 10)
    assert cifar == 35_855_178
    model = _abstract(lambda: AlexNet(10, rngs=nnx.Rngs(0)))
    assert count_params(model) == cifar

    kernels = (11, 5, 3, 3, 3)
    tv_convs = sum(
        _conv(k, a, b) for k, a, b in zip(kernels, chans[:-1], chans[1:])
    )
    for classes, known in ((10, 57_044_810), (1000, 61_100_840)):
        expected = tv_convs + _dense(6 * 6 * 256, 4096) + _dense(4096, 4096)
        expected += _dense(4096, classes)
        assert expected == known
        tv = _abstract(
            lambda c=classes: AlexNet(
                c, layout="torchvision", image_size=128, rngs=nnx.Rngs(0)
            )
        )
        assert count_params(tv) == expected
    # create_model picks the layout from the image size (PDT: CIFAR-10 at 128 px).
    pdt = _abstract(
        lambda: create_model(
            "alexnet", num_classes=10, input_shape=(128, 128, 3), size="full"
        )
    )
    assert pdt.layout == "torchvision" and count_params(pdt) == 57_044_810
    tiny = _abstract(
        lambda: create_model("alexnet", num_classes=10, input_shape=(32, 32, 3))
    )
    assert tiny.layout == "cifar"


@pytest.mark.parametrize("size", [63, 128, 224])
def test_torchvision_alexnet_forward_shape(size):
    def forward():
        model = AlexNet(
            3, layout="torchvision", image_size=size, width_mult=1 / 16,
            rngs=nnx.Rngs(0),
        )
        return model(jnp.ones((2, size, size, 3)))

    out = nnx.eval_shape(forward)  # Abstract: shapes only, nothing compiled.
    assert out.shape == (2, 3)


def test_adaptive_avg_pool_matches_pytorch_rule():
    x = jnp.arange(2 * 5 * 3 * 1, dtype=jnp.float32).reshape(2, 5, 3, 1)
    out = np.asarray(adaptive_avg_pool(x, (2, 6)))
    xn = np.asarray(x)
    # Rows: 5 -> 2 takes rows [0, 3) and [2, 5); columns: 3 -> 6 repeats.
    for i, (r0, r1) in enumerate(((0, 3), (2, 5))):
        for j in range(6):
            c0, c1 = (j * 3) // 6, -((-(j + 1) * 3) // 6)
            np.testing.assert_allclose(
                out[:, i, j, 0], xn[:, r0:r1, c0:c1, 0].mean(axis=(1, 2)), rtol=1e-6
            )


# --------------------------------------------------------------- BatchNorm state


@pytest.mark.parametrize("name", ["fcn", "resnet50"])
def test_batch_stats_are_not_params(name):
    model = nnx.eval_shape(
        lambda: create_model(name, num_classes=10, input_shape=(16, 16, 3))
    )
    params = nnx.state(model, nnx.Param)
    stats = nnx.state(model, nnx.BatchStat)
    norms = [m for _, m in nnx.iter_modules(model) if isinstance(m, nnx.BatchNorm)]
    assert norms
    channels = sum(m.num_features for m in norms)
    assert _num_scalars(stats) == 2 * channels  # mean and var of each BatchNorm.
    stat_names = {str(path[-1]) for path, _ in nnx.to_flat_state(stats)}
    assert stat_names == {"mean", "var"}
    param_names = {str(path[-1]) for path, _ in nnx.to_flat_state(params)}
    assert {"scale", "bias", "kernel"} <= param_names
    assert not {"mean", "var"} & param_names
    # Everything in the model is either a parameter or a batch statistic.
    assert _num_scalars(nnx.state(model)) == (
        _num_scalars(params) + _num_scalars(stats)
    )


def test_optimizer_does_not_touch_batch_stats():
    model = nnx.jit(lambda: FCN(10, widths=(4, 8), rngs=nnx.Rngs(0)))()
    optimizer = nnx.Optimizer(model, optax.sgd(0.1), wrt=nnx.Param)
    stats, params = _values(model, nnx.BatchStat), _values(model)

    @nnx.jit
    def update(m, opt):
        opt.update(m, jax.tree.map(jnp.ones_like, nnx.state(m, nnx.Param)))

    update(model, optimizer)
    for a, b in zip(stats, _values(model, nnx.BatchStat)):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(params, _values(model)):
        np.testing.assert_allclose(a - b, 0.1 * np.ones_like(a), rtol=1e-5)


class _OnlyBatchNorm(nnx.Module):
    def __init__(self, rngs):
        self.norm = nnx.BatchNorm(3, momentum=0.9, rngs=rngs)

    def __call__(self, x):
        return self.norm(x)


def test_refresh_batch_stats_is_cumulative_average():
    model = _OnlyBatchNorm(nnx.Rngs(0))
    model.eval()
    rng = np.random.default_rng(0)
    data = [
        rng.normal(loc, scale, (16, 3)).astype(np.float32)
        for loc, scale in ((1.0, 2.0), (-3.0, 0.5), (5.0, 1.0))
    ]
    consumed = []

    def stream():
        for xb in data:
            consumed.append(1)
            yield xb, np.zeros(len(xb), np.int32)

    result = refresh_batch_stats(model, stream(), num_batches=2)
    assert result is None
    assert len(consumed) == 2
    expected_mean = np.mean([xb.mean(axis=0) for xb in data[:2]], axis=0)
    expected_var = np.mean([xb.var(axis=0) for xb in data[:2]], axis=0)
    np.testing.assert_allclose(np.asarray(model.norm.mean[...]), expected_mean, 1e-5)
    np.testing.assert_allclose(np.asarray(model.norm.var[...]), expected_var, 1e-4)
    assert model.norm.use_running_average is True
    assert model.norm.momentum == 0.9


def test_refresh_batch_stats_after_a_parameter_jump():
    model = nnx.jit(lambda: FCN(10, widths=(4, 8), rngs=nnx.Rngs(0)))()
    x = _inputs((8, 8, 3), seed=1)
    # A stand-in for an accepted Koopman jump: move the parameters only.
    jumped = jax.tree.map(lambda p: 1.5 * p + 0.1, nnx.state(model, nnx.Param))
    nnx.update(model, jumped)
    params, stats = _values(model), _values(model, nnx.BatchStat)
    model.eval()

    refresh_batch_stats(model, [x], num_batches=4)

    new_stats = _values(model, nnx.BatchStat)
    assert all(not np.allclose(a, b) for a, b in zip(stats, new_stats))
    for a, b in zip(params, _values(model)):
        np.testing.assert_array_equal(a, b)
    norms = [m for _, m in nnx.iter_modules(model) if isinstance(m, nnx.BatchNorm)]
    assert all(m.use_running_average for m in norms)
    # Refreshed on this single batch, inference mode reproduces training mode.
    eval_out = nnx.jit(lambda m, xb: m(xb))(model, x)
    model.train()
    train_out = nnx.jit(lambda m, xb: m(xb))(model, x)
    np.testing.assert_allclose(
        np.asarray(eval_out), np.asarray(train_out), rtol=1e-3, atol=1e-4
    )


def test_refresh_batch_stats_edge_cases():
    model = nnx.jit(lambda: FCN(4, widths=(4, 8), rngs=nnx.Rngs(0)))()
    stats = _values(model, nnx.BatchStat)
    with pytest.raises(ValueError, match="num_batches"):
        refresh_batch_stats(model, [np.zeros((2, 4, 4, 3))], num_batches=0)
    with pytest.raises(ValueError, match="batches"):
        refresh_batch_stats(model, [], num_batches=3)
    for a, b in zip(stats, _values(model, nnx.BatchStat)):
        np.testing.assert_array_equal(a, b)
    # A failure part-way (wrong channel count in the second batch) restores them.
    good = np.ones((2, 4, 4, 3), np.float32)
    with pytest.raises(Exception):
        refresh_batch_stats(model, [good, np.ones((2, 4, 4, 5), np.float32)])
    for a, b in zip(stats, _values(model, nnx.BatchStat)):
        np.testing.assert_array_equal(a, b)
    norms = [m for _, m in nnx.iter_modules(model) if isinstance(m, nnx.BatchNorm)]
    assert all(not m.use_running_average and m.momentum == 0.9 for m in norms)
    # No BatchNorm: a no-op that does not consume the iterator.
    mlp = MLP(4, (3,), 2, rngs=nnx.Rngs(0))
    stream = iter([np.zeros((2, 4))])
    assert refresh_batch_stats(mlp, stream) is None
    assert next(stream).shape == (2, 4)


# -------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"name": "lenet"}, "name"),
        ({"size": "huge"}, "size"),
        ({"num_classes": 0}, "num_classes"),
        ({"input_shape": (32, 0, 3)}, "input_shape"),
        ({"input_shape": (32, 32)}, "input_shape"),
        ({"seed": 1.5}, "seed"),
        ({"name": "cnn1d", "input_shape": (4, 4, 4)}, "input_shape"),
    ],
)
def test_create_model_rejects_bad_arguments(kwargs, match):
    arguments = {"name": "fcn", "num_classes": 10, "input_shape": (32, 32, 3)}
    arguments.update(kwargs)
    name = arguments.pop("name")
    with pytest.raises(ValueError, match=match):
        create_model(name, **arguments)


@pytest.mark.parametrize(
    "make,match",
    [
        (lambda r: MLP(0, (4,), 1, rngs=r), "in_features"),
        (lambda r: MLP(2, (4, -1), 1, rngs=r), "hidden_sizes"),
        (lambda r: MLP(2, (4,), 1, activation="swish", rngs=r), "activation"),
        (lambda r: CNN1D(40, 10, channels=(), rngs=r), "channels"),
        (lambda r: CNN1D(40, 10, kernel_size=0, rngs=r), "kernel_size"),
        (lambda r: FCN(10, widths=(8, 0), rngs=r), "widths"),
        (lambda r: FCN(10, batch_norm=1, rngs=r), "batch_norm"),
        (lambda r: AlexNet(10, width_mult=0.0, rngs=r), "width_mult"),
        (lambda r: AlexNet(10, layout="vgg", rngs=r), "layout"),
        (lambda r: AlexNet(10, dropout_rate=1.0, rngs=r), "dropout_rate"),
        (
            lambda r: AlexNet(10, layout="torchvision", image_size=32, rngs=r),
            "image_size",
        ),
        (lambda r: ResNet((), 10, rngs=r), "stage_sizes"),
        (lambda r: ResNet((1, 1), 10, width=0, rngs=r), "width"),
        (lambda r: ResNet((1, 1), 10, small_inputs="yes", rngs=r), "small_inputs"),
        (lambda r: ViT(10, image_size=30, patch_size=16, rngs=r), "patch_size"),
        (lambda r: ViT(10, hidden_size=10, num_heads=3, rngs=r), "num_heads"),
        (lambda r: ViT(10, depth=0, rngs=r), "depth"),
    ],
)
def test_constructors_reject_bad_arguments(make, match):
    with pytest.raises(ValueError, match=match):
        make(nnx.Rngs(0))


@pytest.mark.parametrize(
    "name,input_shape,bad_input,match",
    [
        ("cnn1d", (40,), (2, 41), "expected inputs"),
        ("cnn1d", (40, 2), (2, 40, 1), "expected inputs"),
        ("vit", (16, 16, 3), (2, 32, 32, 3), "expected images"),
        ("alexnet", (16, 16, 3), (2, 32, 32, 3), "expected images"),
    ],
)
def test_models_reject_wrong_input_shapes(name, input_shape, bad_input, match):
    def forward():
        model = create_model(name, num_classes=3, input_shape=input_shape)
        return model(jnp.zeros(bad_input))

    with pytest.raises(ValueError, match=match):
        nnx.eval_shape(forward)  # Abstract: the check runs while tracing.
