"""AlexNet for CIFAR-size and larger images, Flax NNX.

Two layouts are provided, both with five convolutions (channels
``64, 192, 384, 256, 256``) and three dense layers (``4096, 4096, num_classes``)
at ``width_mult=1``:

``layout='cifar'`` (default, for 32x32 inputs)
  ``Conv3x3(64) -> ReLU -> MaxPool2 -> Conv3x3(192) -> ReLU -> MaxPool2 ->
  Conv3x3(384) -> ReLU -> Conv3x3(256) -> ReLU -> Conv3x3(256) -> ReLU ->
  MaxPool2 -> Flatten -> Dense(4096) -> ReLU -> Dense(4096) -> ReLU ->
  Dense(num_classes)``, all convolutions stride 1 with ``'SAME'`` padding. A
  32x32 image is reduced to 4x4x256 = 4096 features. At 32x32x3 inputs and 10
  classes the network has **35,855,178** parameters (2,251,584 in the
  convolutions, 33,603,594 in the dense layers).

``layout='torchvision'``
  The ImageNet AlexNet as laid out in torchvision and used (with CIFAR-10
  upsampled to 128x128) by the PDT experiments: ``Conv11x11/4(64, pad 2) ->
  MaxPool3/2 -> Conv5x5(192, pad 2) -> MaxPool3/2 -> Conv3x3(384) -> Conv3x3(256)
  -> Conv3x3(256) -> MaxPool3/2 -> AdaptiveAvgPool(6x6) -> Dense(4096) ->
  Dense(4096) -> Dense(num_classes)``. It needs images of at least 63x63 and has
  **57,044,810** parameters at 10 classes (61,100,840 at 1000 classes),
  independent of the image size.

Dropout before the first two dense layers is optional (``dropout_rate``, default
0, i.e. no dropout and no random state in the model). When enabled, it is active
in training mode and disabled by ``model.eval()``.

References:
  A. Krizhevsky, I. Sutskever and G. E. Hinton. ImageNet Classification with Deep
  Convolutional Neural Networks. NeurIPS 2012.

  Predictive Differential Training Guided by Training Dynamics (PDT). ICLR 2025
  submission; code: https://github.com/aicip/PDT
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from examples.models._common import check_positive_int, image_hw

__all__ = ["AlexNet", "LAYOUTS", "adaptive_avg_pool"]

#: Supported AlexNet layouts.
LAYOUTS = ("cifar", "torchvision")

_CONV_CHANNELS = (64, 192, 384, 256, 256)
_DENSE_WIDTH = 4096
_ADAPTIVE_SIZE = 6


def _scaled(channels: int, width_mult: float) -> int:
    return max(1, int(round(channels * width_mult)))


def _pool_matrix(in_size: int, out_size: int) -> np.ndarray:
    """Averaging matrix of PyTorch-style adaptive average pooling along one axis."""
    matrix = np.zeros((out_size, in_size), np.float32)
    for i in range(out_size):
        start = (i * in_size) // out_size
        end = -((-(i + 1) * in_size) // out_size)  # ceil((i + 1) * in / out)
        matrix[i, start:end] = 1.0 / (end - start)
    return matrix


def adaptive_avg_pool(x: jax.Array, output_size: tuple[int, int]) -> jax.Array:
    """Adaptive average pooling of NHWC ``x`` to ``output_size`` (PyTorch rule).

    Output cell ``i`` averages input rows ``floor(i*H/h) .. ceil((i+1)*H/h) - 1``
    (and likewise for columns), so inputs smaller than the output are upsampled by
    repetition.

    Args:
      x: Array of shape ``(N, H, W, C)``.
      output_size: ``(h, w)``.

    Returns:
      Array of shape ``(N, h, w, C)``.

    Raises:
      ValueError: If ``output_size`` is not a pair of positive ints.
    """
    out_h, out_w = image_hw(output_size, "output_size")
    rows = jnp.asarray(_pool_matrix(x.shape[1], out_h), x.dtype)
    cols = jnp.asarray(_pool_matrix(x.shape[2], out_w), x.dtype)
    return jnp.einsum("ih,nhwc,jw->nijc", rows, x, cols)


def _conv_out(size: int, kernel: int, stride: int, pad: int) -> int:
    return (size + 2 * pad - kernel) // stride + 1


class AlexNet(nnx.Module):
    """AlexNet classifier (5 convolutions + 3 dense layers), NHWC inputs.

    See the module docstring for the two layouts and their parameter counts.

    Attributes:
      convs: The five convolutions.
      dense: The three dense layers.
      layout: ``'cifar'`` or ``'torchvision'``.
    """

    def __init__(
        self,
        num_classes: int,
        *,
        width_mult: float = 1.0,
        image_size: int | tuple[int, int] = 32,
        in_channels: int = 3,
        layout: str = "cifar",
        dropout_rate: float = 0.0,
        rngs: nnx.Rngs,
    ):
        """Builds the network.

        Args:
          num_classes: Number of output logits.
          width_mult: Multiplier of every convolution and dense width (rounded,
            at least 1); 1.0 gives the standard sizes.
          image_size: Input height and width (``int`` for square images). Fixes
            the flattened feature size of the ``'cifar'`` layout and is checked
            against the minimum size of the ``'torchvision'`` layout.
          in_channels: Channels of the input images.
          layout: ``'cifar'`` or ``'torchvision'`` (see the module docstring).
          dropout_rate: Dropout probability before the first two dense layers.
          rngs: Random number streams used for initialisation (and dropout).

        Raises:
          ValueError: For a non-positive size or multiplier, an unknown layout, a
            dropout rate outside ``[0, 1)``, or an image too small for the layout.
        """
        check_positive_int(num_classes, "num_classes")
        if isinstance(width_mult, bool) or not isinstance(width_mult, (int, float)):
            raise ValueError(f"`width_mult` must be a number, got {width_mult!r}.")
        if not width_mult > 0:
            raise ValueError(f"`width_mult` must be positive, got {width_mult!r}.")
        height, width = image_hw(image_size, "image_size")
        check_positive_int(in_channels, "in_channels")
        if layout not in LAYOUTS:
            raise ValueError(f"`layout` must be one of {LAYOUTS}, got {layout!r}.")
        if isinstance(dropout_rate, bool) or not isinstance(
            dropout_rate, (int, float)
        ):
            raise ValueError(
                f"`dropout_rate` must be a number, got {dropout_rate!r}."
            )
        if not 0.0 <= dropout_rate < 1.0:
            raise ValueError(
                f"`dropout_rate` must be in [0, 1), got {dropout_rate!r}."
            )
        self.layout = layout
        self.image_size = (height, width)
        chans = tuple(_scaled(c, width_mult) for c in _CONV_CHANNELS)
        dense = _scaled(_DENSE_WIDTH, width_mult)

        if layout == "cifar":
            kernels = (3, 3, 3, 3, 3)
            strides = (1, 1, 1, 1, 1)
            paddings = ("SAME",) * 5
            # Three 2x2 'SAME' max-pools: ceil(size / 8).
            feat_hw = (-(-height // 8), -(-width // 8))
        else:
            kernels = (11, 5, 3, 3, 3)
            strides = (4, 1, 1, 1, 1)
            paddings = (2, 2, 1, 1, 1)
            sizes = []
            for size in (height, width):
                size = _conv_out(size, 11, 4, 2)
                # conv2..conv5 keep the size; three 3x3/2 'VALID' max-pools.
                for _ in range(3):
                    size = _conv_out(size, 3, 2, 0)
                sizes.append(size)
            if min(sizes) < 1:
                raise ValueError(
                    "`image_size` must be at least 63x63 for the 'torchvision' "
                    f"AlexNet layout, got {(height, width)}."
                )
            feat_hw = (_ADAPTIVE_SIZE, _ADAPTIVE_SIZE)

        in_sizes = (in_channels, *chans[:-1])
        self.convs = nnx.List(
            [
                nnx.Conv(
                    c_in,
                    c_out,
                    (k, k),
                    strides=(s, s),
                    padding=p if isinstance(p, str) else ((p, p), (p, p)),
                    rngs=rngs,
                )
                for c_in, c_out, k, s, p in zip(
                    in_sizes, chans, kernels, strides, paddings
                )
            ]
        )
        flat = feat_hw[0] * feat_hw[1] * chans[-1]
        self.dense = nnx.List(
            [
                nnx.Linear(flat, dense, rngs=rngs),
                nnx.Linear(dense, dense, rngs=rngs),
                nnx.Linear(dense, num_classes, rngs=rngs),
            ]
        )
        self.dropout = (
            nnx.Dropout(dropout_rate, rngs=rngs) if dropout_rate > 0 else None
        )

    def _pool(self, x: jax.Array) -> jax.Array:
        if self.layout == "cifar":
            return nnx.max_pool(x, (2, 2), strides=(2, 2), padding="SAME")
        return nnx.max_pool(x, (3, 3), strides=(2, 2), padding="VALID")

    def __call__(self, x: jax.Array) -> jax.Array:
        """Applies the network to NHWC images ``x``; returns logits."""
        if x.shape[1:3] != self.image_size:
            raise ValueError(
                f"expected images of size {self.image_size}, got {x.shape[1:3]}."
            )
        for i, conv in enumerate(self.convs):
            x = jax.nn.relu(conv(x))
            if i in (0, 1, 4):
                x = self._pool(x)
        if self.layout == "torchvision":
            x = adaptive_avg_pool(x, (_ADAPTIVE_SIZE, _ADAPTIVE_SIZE))
        x = jnp.reshape(x, (x.shape[0], -1))
        for layer in self.dense[:-1]:
            if self.dropout is not None:
                x = self.dropout(x)
            x = jax.nn.relu(layer(x))
        return self.dense[-1](x)
