"""Flax NNX model zoo for the koopax examples.

All models are ``nnx.Module`` s built from an ``nnx.Rngs``; images are NHWC and 1D
signals ``(N, L)`` or ``(N, L, C)``. :func:`create_model` builds any of them by
name in a ``'tiny'`` configuration (a training step on CPU in well under a second
at batch 8, for tests and smoke runs) or the ``'full'`` configuration used in the
papers.

:class:`ConvVAE` is the one generative model: it reconstructs its input (no
``num_classes``) and is trained on :func:`examples.models.vae.negative_elbo`
(the harness's ``'vae'`` task kind, :func:`examples.train.model_task`).

:class:`CharTransformer` is the one language model: int tokens ``(N, T)`` to
next-token logits ``(N, T, V)`` (the harness's ``'language_model'`` task kind).

BatchNorm models (:class:`FCN`, :class:`ResNet`) keep running statistics in
``nnx.BatchStat`` variables, which a Koopman parameter jump does not move; call
:func:`refresh_batch_stats` after an accepted jump (see
:mod:`examples.models.batchnorm`).

Example::

  model = create_model("resnet50", num_classes=10, input_shape=(32, 32, 3))
  logits = model(jnp.zeros((8, 32, 32, 3)))
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import jax
from flax import nnx

from examples.models._common import check_positive_int, check_positive_int_sequence
from examples.models.alexnet import AlexNet, adaptive_avg_pool
from examples.models.batchnorm import refresh_batch_stats
from examples.models.fcn import FCN
from examples.models.mlp import CNN1D, MLP
from examples.models.resnet import (
    BasicBlock,
    BottleneckBlock,
    ResNet,
    ResNet18,
    ResNet50,
)
from examples.models.transformer import CharTransformer, transformer_param_count
from examples.models.vae import ConvVAE
from examples.models.vit import EncoderBlock, ViT

__all__ = [
    "MODEL_NAMES",
    "SIZES",
    "VAE_MODELS",
    "AlexNet",
    "BasicBlock",
    "BottleneckBlock",
    "CNN1D",
    "CharTransformer",
    "ConvVAE",
    "EncoderBlock",
    "FCN",
    "IMAGE_MODELS",
    "MLP",
    "ResNet",
    "ResNet18",
    "ResNet50",
    "ViT",
    "adaptive_avg_pool",
    "count_params",
    "create_model",
    "refresh_batch_stats",
    "transformer_param_count",
]

#: Names accepted by :func:`create_model`.
MODEL_NAMES = (
    "mlp", "cnn1d", "fcn", "alexnet", "resnet50", "vit", "conv_vae", "transformer",
)
#: The names whose inputs are NHWC images (``input_shape`` ``(H, W, C)``).
IMAGE_MODELS = ("fcn", "alexnet", "resnet50", "vit", "conv_vae")
#: The generative names: they take no ``num_classes`` and train on the negative ELBO.
VAE_MODELS = ("conv_vae",)
#: Sizes accepted by :func:`create_model`.
SIZES = ("tiny", "full")


def count_params(model: nnx.Module, variable_type: Any = nnx.Param) -> int:
    """Number of scalars in the ``variable_type`` variables of ``model``.

    Works on abstract models too (``nnx.eval_shape(lambda: Model(...))``).

    Args:
      model: The model.
      variable_type: An ``nnx`` filter, ``nnx.Param`` by default.

    Returns:
      The total number of elements.
    """
    state = nnx.state(model, variable_type)
    return int(sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(state)))


def _image_shape(name: str, input_shape: tuple[int, ...]) -> tuple[int, int, int]:
    if len(input_shape) != 3:
        raise ValueError(
            f"`input_shape` for {name!r} must be (height, width, channels), got "
            f"{input_shape!r}."
        )
    return input_shape


def _vit_patch(size: str, height: int, width: int) -> int:
    if size == "full":
        patch = 16 if min(height, width) >= 128 else 4
        if height % patch or width % patch:
            raise ValueError(
                f"`input_shape` {(height, width)} is not divisible by the ViT "
                f"patch size {patch}; pass patch_size=... explicitly."
            )
        return patch
    for patch in (16, 8, 4, 2):
        if not height % patch and not width % patch:
            if min(height, width) // patch >= 4:
                return patch
    return 1


def create_model(
    name: str,
    *,
    num_classes: int | None = None,
    input_shape: Sequence[int],
    size: str = "tiny",
    seed: int = 0,
    **overrides: Any,
) -> nnx.Module:
    """Builds a zoo model by name.

    Configurations (``input_shape`` excludes the batch axis):

    ========  =====================================  ===============================
    name      ``size='tiny'``                        ``size='full'``
    ========  =====================================  ===============================
    mlp       hidden ``(16,)``                       hidden ``(256,)``
    cnn1d     channels ``(8, 8)``                    channels ``(32, 32)``
    fcn       widths ``(4, 8, 8, 16, 16)``           widths ``(64, 128, 256, 512,
                                                     512)``
    alexnet   ``width_mult=1/16``                    ``width_mult=1``
    resnet50  bottleneck, stages ``(1, 1, 1, 1)``,   ResNet-50 (stages ``(3, 4, 6,
              width 8                                3)``, width 64)
    vit       hidden 32, depth 2, 2 heads, MLP 64,   ViT-B (768, 12, 12, 3072),
              patch: largest of 16/8/4/2/1 dividing  patch 16 for images of at
              the image with at least 4 patches      least 128 px, else 4
              per side
    conv_vae  channels ``(4, 8)``, latent 4          channels ``(16, 32)``, latent 16
    ========  =====================================  ===============================

    ``transformer``: ``d_model`` 16, 1 block, 2 heads (``'tiny'``); ``d_model`` 64,
    2 blocks, 4 heads (``'full'``: 117,092 parameters at context 64 and 100
    tokens); MLP 4x, context ``input_shape[0]``.

    The MLP flattens its input (``in_features = prod(input_shape)``); ``mlp`` is
    the only name that also serves regression (``num_classes`` is then the number
    of outputs, e.g. 1). For images whose sides are both at most 64 pixels,
    ``alexnet`` uses the ``'cifar'`` layout and ``resnet50`` the CIFAR stem
    (``small_inputs=True``); larger images get the ``'torchvision'`` AlexNet
    (57,044,810 parameters at 10 classes, the PDT setting with CIFAR-10 upsampled
    to 128x128) and the ImageNet stem. ``conv_vae`` (:class:`ConvVAE`, 34,689
    parameters on 8x8x1 digits) reconstructs its input and takes no ``num_classes``.
    ``transformer`` (:class:`CharTransformer`) takes ``input_shape=(context,)`` and
    the vocabulary size as ``num_classes``.

    Args:
      name: One of :data:`MODEL_NAMES`.
      num_classes: Number of outputs (logits, or regression targets for ``mlp``);
        required by every model but ``conv_vae``, which rejects it.
      input_shape: Shape of one example: ``(features...)`` for ``mlp``,
        ``(L,)`` or ``(L, C)`` for ``cnn1d``, ``(H, W, C)`` for the image models,
        ``(context,)`` for ``transformer``.
      size: ``'tiny'`` or ``'full'``.
      seed: Seed of the ``nnx.Rngs`` used for initialisation.
      **overrides: Extra keyword arguments for the model constructor; they take
        precedence over the configuration above (e.g. ``layout='torchvision'``
        for ``alexnet`` or ``patch_size=8`` for ``vit``).

    Returns:
      The initialised model (BatchNorm models in training mode).

    Raises:
      ValueError: For an unknown ``name`` or ``size``, a missing or non-positive
        ``num_classes`` (one given to ``conv_vae``), a malformed ``input_shape``
        or a non-int ``seed``.
    """
    if name not in MODEL_NAMES:
        raise ValueError(f"`name` must be one of {MODEL_NAMES}, got {name!r}.")
    if size not in SIZES:
        raise ValueError(f"`size` must be one of {SIZES}, got {size!r}.")
    if name in VAE_MODELS:
        if num_classes is not None:
            raise ValueError(
                f"`num_classes` does not apply to {name!r} (it reconstructs its input), "
                f"got {num_classes!r}."
            )
    elif num_classes is None:
        raise ValueError(f"`num_classes` is required for {name!r}.")
    else:
        check_positive_int(num_classes, "num_classes")
    shape = check_positive_int_sequence(input_shape, "input_shape")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"`seed` must be an int, got {seed!r}.")
    tiny = size == "tiny"
    rngs = nnx.Rngs(seed)

    if name == "mlp":
        kwargs = {"activation": "relu"}
        kwargs.update(overrides)
        hidden = kwargs.pop("hidden_sizes", (16,) if tiny else (256,))
        return MLP(math.prod(shape), hidden, num_classes, rngs=rngs, **kwargs)

    if name == "cnn1d":
        if len(shape) not in (1, 2):
            raise ValueError(
                f"`input_shape` for 'cnn1d' must be (L,) or (L, C), got {shape!r}."
            )
        kwargs = {
            "channels": (8, 8) if tiny else (32, 32),
            "in_channels": shape[1] if len(shape) == 2 else 1,
        }
        kwargs.update(overrides)
        return CNN1D(shape[0], num_classes, rngs=rngs, **kwargs)

    if name == "transformer":
        if len(shape) != 1:
            raise ValueError(
                f"`input_shape` for 'transformer' must be (context,), got {shape!r}."
            )
        kwargs = {"context": shape[0]}
        kwargs.update(
            {"d_model": 16, "depth": 1, "num_heads": 2} if tiny
            else {"d_model": 64, "depth": 2, "num_heads": 4}
        )
        kwargs.update(overrides)
        return CharTransformer(num_classes, rngs=rngs, **kwargs)

    height, width, channels = _image_shape(name, shape)
    if name == "conv_vae":
        kwargs = {
            "channels": (4, 8) if tiny else (16, 32),
            "latent_dim": 4 if tiny else 16,
            "image_size": (height, width),
            "in_channels": channels,
        }
        kwargs.update(overrides)
        return ConvVAE(rngs=rngs, **kwargs)

    if name == "fcn":
        kwargs = {
            "widths": (4, 8, 8, 16, 16) if tiny else (64, 128, 256, 512, 512),
            "in_channels": channels,
        }
        kwargs.update(overrides)
        return FCN(num_classes, rngs=rngs, **kwargs)

    if name == "alexnet":
        kwargs = {
            "width_mult": 1.0 / 16 if tiny else 1.0,
            "image_size": (height, width),
            "in_channels": channels,
            "layout": "cifar" if max(height, width) <= 64 else "torchvision",
        }
        kwargs.update(overrides)
        return AlexNet(num_classes, rngs=rngs, **kwargs)

    if name == "resnet50":
        kwargs = {
            "stage_sizes": (1, 1, 1, 1) if tiny else (3, 4, 6, 3),
            "width": 8 if tiny else 64,
            "bottleneck": True,
            "small_inputs": max(height, width) <= 64,
            "in_channels": channels,
        }
        kwargs.update(overrides)
        return ResNet(num_classes=num_classes, rngs=rngs, **kwargs)

    # name == "vit"
    if tiny:
        kwargs = {"hidden_size": 32, "depth": 2, "num_heads": 2, "mlp_dim": 64}
    else:
        kwargs = {"hidden_size": 768, "depth": 12, "num_heads": 12, "mlp_dim": 3072}
    kwargs["image_size"] = (height, width)
    kwargs["in_channels"] = channels
    if "patch_size" not in overrides:
        kwargs["patch_size"] = _vit_patch(size, height, width)
    kwargs.update(overrides)
    return ViT(num_classes, rngs=rngs, **kwargs)
