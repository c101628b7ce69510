"""Residual networks (ResNet v1.5) with batch normalisation, Flax NNX.

The layout matches torchvision's ResNets: an ImageNet stem ``Conv7x7/2 (no bias)
-> BatchNorm -> ReLU -> MaxPool3x3/2``, four stages of residual blocks whose
widths are ``width * (1, 2, 4, 8)``, the stride-2 downsampling placed on the 3x3
convolution of the first block of stages 2-4 (the "v1.5" variant), projection
shortcuts ``Conv1x1 + BatchNorm`` wherever the shape changes, global average
pooling and a dense classifier. Bottleneck blocks (``1x1 -> 3x3 -> 1x1``,
expansion 4) give ResNet-50 (``stage_sizes=(3, 4, 6, 3)``) with **25,557,032**
parameters at 1000 classes; basic blocks (``3x3 -> 3x3``) with
``stage_sizes=(2, 2, 2, 2)`` give ResNet-18 with 11,689,512 parameters. The count
does not depend on the image size. ``small_inputs=True`` swaps the stem for a
``Conv3x3/1`` without max-pooling, the usual choice for 32x32 CIFAR images
(ResNet-50 then has 23,520,842 parameters at 10 classes).

BatchNorm statistics are ``nnx.BatchStat``, not parameters: a Koopman parameter
jump leaves them describing the pre-jump network; see
:mod:`examples.models.batchnorm` and call
:func:`examples.models.refresh_batch_stats` after an accepted jump.

Modes: the model is built in training mode (batch statistics are used and the
running averages are updated on every call). Use ``model.eval()`` /
``model.train()`` to switch.

References:
  K. He, X. Zhang, S. Ren and J. Sun. Deep Residual Learning for Image
  Recognition. CVPR 2016. https://arxiv.org/abs/1512.03385

  P. Goyal et al. Accurate, Large Minibatch SGD: Training ImageNet in 1 Hour.
  2017 (zero-initialised last BatchNorm scale). https://arxiv.org/abs/1706.02677
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from examples.models._common import check_positive_int, check_positive_int_sequence
from examples.models.fcn import BN_EPSILON, BN_MOMENTUM

__all__ = [
    "BasicBlock",
    "BottleneckBlock",
    "ResNet",
    "ResNet18",
    "ResNet50",
]


def _conv(
    c_in: int, c_out: int, kernel: int, stride: int, *, rngs: nnx.Rngs
) -> nnx.Conv:
    """Bias-free convolution with PyTorch-style symmetric padding."""
    pad = (kernel - 1) // 2
    return nnx.Conv(
        c_in,
        c_out,
        (kernel, kernel),
        strides=(stride, stride),
        padding=((pad, pad), (pad, pad)),
        use_bias=False,
        rngs=rngs,
    )


def _norm(channels: int, *, zero_scale: bool = False, rngs: nnx.Rngs):
    kwargs = {"scale_init": nnx.initializers.zeros} if zero_scale else {}
    return nnx.BatchNorm(
        channels, momentum=BN_MOMENTUM, epsilon=BN_EPSILON, rngs=rngs, **kwargs
    )


class _Shortcut(nnx.Module):
    """Projection shortcut ``Conv1x1/stride -> BatchNorm``."""

    def __init__(self, c_in: int, c_out: int, stride: int, *, rngs: nnx.Rngs):
        self.conv = _conv(c_in, c_out, 1, stride, rngs=rngs)
        self.norm = _norm(c_out, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.norm(self.conv(x))


def _shortcut(c_in: int, c_out: int, stride: int, *, rngs: nnx.Rngs):
    """A projection shortcut where the shape changes, else None (identity)."""
    if stride != 1 or c_in != c_out:
        return _Shortcut(c_in, c_out, stride, rngs=rngs)
    return None


class BasicBlock(nnx.Module):
    """Residual block ``3x3 -> BN -> ReLU -> 3x3 -> BN`` plus shortcut (expansion 1).

    Attributes:
      expansion: Output channels divided by ``width`` (1).
    """

    expansion = 1

    def __init__(
        self,
        in_channels: int,
        width: int,
        stride: int = 1,
        *,
        zero_init_residual: bool = False,
        rngs: nnx.Rngs,
    ):
        """Builds the block.

        Args:
          in_channels: Input channels.
          width: Channels of both convolutions (and of the output).
          stride: Stride of the first convolution and of the shortcut.
          zero_init_residual: Initialise the last BatchNorm scale to zero.
          rngs: Random number streams used for initialisation.
        """
        out = width * self.expansion
        self.conv1 = _conv(in_channels, width, 3, stride, rngs=rngs)
        self.norm1 = _norm(width, rngs=rngs)
        self.conv2 = _conv(width, out, 3, 1, rngs=rngs)
        self.norm2 = _norm(out, zero_scale=zero_init_residual, rngs=rngs)
        self.shortcut = _shortcut(in_channels, out, stride, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        residual = x if self.shortcut is None else self.shortcut(x)
        y = jax.nn.relu(self.norm1(self.conv1(x)))
        y = self.norm2(self.conv2(y))
        return jax.nn.relu(y + residual)


class BottleneckBlock(nnx.Module):
    """Bottleneck block ``1x1 -> 3x3/stride -> 1x1`` plus shortcut (expansion 4).

    Attributes:
      expansion: Output channels divided by ``width`` (4).
    """

    expansion = 4

    def __init__(
        self,
        in_channels: int,
        width: int,
        stride: int = 1,
        *,
        zero_init_residual: bool = False,
        rngs: nnx.Rngs,
    ):
        """Builds the block.

        Args:
          in_channels: Input channels.
          width: Channels of the inner ``1x1`` and ``3x3`` convolutions.
          stride: Stride of the ``3x3`` convolution and of the shortcut.
          zero_init_residual: Initialise the last BatchNorm scale to zero.
          rngs: Random number streams used for initialisation.
        """
        out = width * self.expansion
        self.conv1 = _conv(in_channels, width, 1, 1, rngs=rngs)
        self.norm1 = _norm(width, rngs=rngs)
        self.conv2 = _conv(width, width, 3, stride, rngs=rngs)
        self.norm2 = _norm(width, rngs=rngs)
        self.conv3 = _conv(width, out, 1, 1, rngs=rngs)
        self.norm3 = _norm(out, zero_scale=zero_init_residual, rngs=rngs)
        self.shortcut = _shortcut(in_channels, out, stride, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        residual = x if self.shortcut is None else self.shortcut(x)
        y = jax.nn.relu(self.norm1(self.conv1(x)))
        y = jax.nn.relu(self.norm2(self.conv2(y)))
        y = self.norm3(self.conv3(y))
        return jax.nn.relu(y + residual)


class ResNet(nnx.Module):
    """ResNet classifier (v1.5, torchvision layout), NHWC inputs.

    Attributes:
      stem_conv: First convolution (7x7/2, or 3x3/1 with ``small_inputs``).
      stem_norm: BatchNorm after the stem convolution.
      blocks: All residual blocks, stage by stage.
      head: Dense classifier on the globally pooled features.
      small_inputs: Whether the CIFAR stem (no max-pool) is used.
    """

    def __init__(
        self,
        stage_sizes: Sequence[int],
        num_classes: int,
        *,
        width: int = 64,
        bottleneck: bool = True,
        small_inputs: bool = False,
        in_channels: int = 3,
        zero_init_residual: bool = False,
        rngs: nnx.Rngs,
    ):
        """Builds the network.

        Args:
          stage_sizes: Number of residual blocks in each stage (usually 4 stages).
          num_classes: Number of output logits.
          width: Channels of the stem and of the first stage; stage ``i`` uses
            ``width * 2**i`` (times the block expansion at its output).
          bottleneck: Bottleneck blocks (ResNet-50/101/152) if true, basic blocks
            (ResNet-18/34) otherwise.
          small_inputs: Use a ``3x3/1`` stem without max-pooling (CIFAR).
          in_channels: Channels of the input images.
          zero_init_residual: Initialise the last BatchNorm scale of every block
            to zero, so that each block starts as the identity.
          rngs: Random number streams used for initialisation.

        Raises:
          ValueError: If a size is not a positive int or a flag is not a bool.
        """
        stages = check_positive_int_sequence(stage_sizes, "stage_sizes")
        check_positive_int(num_classes, "num_classes")
        check_positive_int(width, "width")
        check_positive_int(in_channels, "in_channels")
        for name, flag in (
            ("bottleneck", bottleneck),
            ("small_inputs", small_inputs),
            ("zero_init_residual", zero_init_residual),
        ):
            if not isinstance(flag, bool):
                raise ValueError(f"`{name}` must be a bool, got {flag!r}.")
        self.small_inputs = small_inputs
        if small_inputs:
            self.stem_conv = _conv(in_channels, width, 3, 1, rngs=rngs)
        else:
            self.stem_conv = _conv(in_channels, width, 7, 2, rngs=rngs)
        self.stem_norm = _norm(width, rngs=rngs)

        block_cls = BottleneckBlock if bottleneck else BasicBlock
        blocks = []
        channels = width
        for stage, num_blocks in enumerate(stages):
            stage_width = width * 2**stage
            for index in range(num_blocks):
                stride = 2 if stage > 0 and index == 0 else 1
                blocks.append(
                    block_cls(
                        channels,
                        stage_width,
                        stride,
                        zero_init_residual=zero_init_residual,
                        rngs=rngs,
                    )
                )
                channels = stage_width * block_cls.expansion
        self.blocks = nnx.List(blocks)
        self.head = nnx.Linear(channels, num_classes, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        """Applies the network to NHWC images ``x``; returns logits."""
        x = jax.nn.relu(self.stem_norm(self.stem_conv(x)))
        if not self.small_inputs:
            x = nnx.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
        for block in self.blocks:
            x = block(x)
        return self.head(jnp.mean(x, axis=(1, 2)))


#: ResNet-50: bottleneck blocks, stages (3, 4, 6, 3); 25,557,032 parameters at
#: 1000 classes.
ResNet50 = functools.partial(ResNet, stage_sizes=(3, 4, 6, 3), bottleneck=True)

#: ResNet-18: basic blocks, stages (2, 2, 2, 2); 11,689,512 parameters at 1000
#: classes.
ResNet18 = functools.partial(ResNet, stage_sizes=(2, 2, 2, 2), bottleneck=False)
