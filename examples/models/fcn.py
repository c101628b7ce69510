"""Fully convolutional network (FCN) with batch normalisation, Flax NNX.

The layout follows the FCN used for CIFAR-10 in the PDT experiments: five blocks
``Conv3x3(stride 1) -> BatchNorm -> ReLU -> MaxPool2x2``, with widths
``64, 128, 256, 512, 512``, then a ``1x1`` convolution to ``num_classes`` channels
and global average pooling. At 10 classes and RGB inputs the network has
3,918,858 trainable parameters (convolutions keep their bias, as in the reference
layout, even though a bias before BatchNorm is redundant). The parameter count
does not depend on the image size. Pooling uses ``'SAME'`` padding, so any image
size works (a ``1x1`` map stays ``1x1``).

BatchNorm statistics are ``nnx.BatchStat``, not parameters: a Koopman parameter
jump leaves them describing the pre-jump network; see
:mod:`examples.models.batchnorm` and call
:func:`examples.models.refresh_batch_stats` after an accepted jump.

Modes: the model is built in training mode (batch statistics are used and the
running averages are updated on every call). Use ``model.eval()`` /
``model.train()`` to switch.

References:
  Predictive Differential Training Guided by Training Dynamics (PDT). ICLR 2025
  submission; code: https://github.com/aicip/PDT

  S. Ioffe and C. Szegedy. Batch Normalization: Accelerating Deep Network
  Training by Reducing Internal Covariate Shift. ICML 2015.
  https://arxiv.org/abs/1502.03167
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from examples.models._common import check_positive_int, check_positive_int_sequence

__all__ = ["BN_EPSILON", "BN_MOMENTUM", "FCN"]

#: Running-average momentum of every BatchNorm in the zoo (PyTorch's 0.1 update).
BN_MOMENTUM = 0.9
#: BatchNorm epsilon (PyTorch's default).
BN_EPSILON = 1e-5


class FCN(nnx.Module):
    """Five-block fully convolutional classifier with global average pooling.

    Input: ``(N, H, W, in_channels)``; output: logits ``(N, num_classes)``.

    Attributes:
      convs: The ``3x3`` convolutions.
      norms: The BatchNorm layers (``None`` entries when ``batch_norm=False``).
      head: The ``1x1`` convolution producing the class maps.
    """

    def __init__(
        self,
        num_classes: int,
        *,
        widths: Sequence[int] = (64, 128, 256, 512, 512),
        batch_norm: bool = True,
        in_channels: int = 3,
        rngs: nnx.Rngs,
    ):
        """Builds the network.

        Args:
          num_classes: Number of output logits.
          widths: Output channels of the ``3x3`` convolution blocks.
          batch_norm: Whether each convolution is followed by ``nnx.BatchNorm``.
          in_channels: Channels of the input images.
          rngs: Random number streams used for initialisation.

        Raises:
          ValueError: If a size is not a positive int, ``widths`` is empty or
            ``batch_norm`` is not a bool.
        """
        check_positive_int(num_classes, "num_classes")
        chans = check_positive_int_sequence(widths, "widths")
        check_positive_int(in_channels, "in_channels")
        if not isinstance(batch_norm, bool):
            raise ValueError(f"`batch_norm` must be a bool, got {batch_norm!r}.")
        self.batch_norm = batch_norm
        sizes = (in_channels, *chans)
        self.convs = nnx.List(
            [
                nnx.Conv(c_in, c_out, (3, 3), rngs=rngs)
                for c_in, c_out in zip(sizes[:-1], sizes[1:])
            ]
        )
        if batch_norm:
            self.norms = nnx.List(
                [
                    nnx.BatchNorm(
                        c, momentum=BN_MOMENTUM, epsilon=BN_EPSILON, rngs=rngs
                    )
                    for c in chans
                ]
            )
        else:
            self.norms = nnx.List([])
        self.head = nnx.Conv(chans[-1], num_classes, (1, 1), rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        """Applies the network to NHWC images ``x``."""
        for i, conv in enumerate(self.convs):
            x = conv(x)
            if self.batch_norm:
                x = self.norms[i](x)
            x = jax.nn.relu(x)
            x = nnx.max_pool(x, (2, 2), strides=(2, 2), padding="SAME")
        x = self.head(x)
        return jnp.mean(x, axis=(1, 2))
