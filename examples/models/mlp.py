"""Fully connected and small 1D-convolutional Flax NNX models.

:class:`MLP` is a plain multilayer perceptron. With ``in_features=2``,
``hidden_sizes=(h,)`` and ``out_features=1`` it is the 3-layer regression network
(input, one hidden layer, output) that the seed paper trains on the surface
``z = x**2 + y**2`` (see :func:`examples.datasets.load_quadratic_surface`); with more
outputs it is a classifier returning logits.

:class:`CNN1D` is a small 1D convolutional classifier for MNIST-1D
(:func:`examples.datasets.load_mnist1d`), in the spirit of the convolutional
baseline of the MNIST-1D paper.

References:
  A. S. Dogra and W. T. Redman. Optimizing Neural Networks via Koopman Operator
  Theory. NeurIPS 2020. https://arxiv.org/abs/2006.02361

  S. Greydanus and D. Kobak. Scaling Down Deep Learning with MNIST-1D. ICML 2024.
  https://arxiv.org/abs/2011.14439
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from examples.models._common import check_positive_int, check_positive_int_sequence

__all__ = ["ACTIVATIONS", "CNN1D", "MLP"]

#: Activation functions accepted by :class:`MLP`, by name.
ACTIVATIONS = {
    "relu": jax.nn.relu,
    "tanh": jnp.tanh,
    "gelu": jax.nn.gelu,
    "sigmoid": jax.nn.sigmoid,
}


class MLP(nnx.Module):
    """Multilayer perceptron ``in -> hidden_sizes... -> out``.

    Inputs of any rank are flattened after the batch axis, so images can be fed
    directly as long as their per-example size equals ``in_features``. The last
    layer has no activation (logits or regression outputs).

    Attributes:
      layers: The dense layers, hidden layers first.
      activation: Name of the hidden activation.
    """

    def __init__(
        self,
        in_features: int,
        hidden_sizes: Sequence[int],
        out_features: int,
        *,
        activation: str = "relu",
        rngs: nnx.Rngs,
    ):
        """Builds the network.

        Args:
          in_features: Number of input features per example.
          hidden_sizes: Widths of the hidden layers; may be empty (linear model).
          out_features: Number of outputs (classes, or regression targets).
          activation: Hidden activation, one of ``'relu'``, ``'tanh'``, ``'gelu'``,
            ``'sigmoid'``.
          rngs: Random number streams used for initialisation.

        Raises:
          ValueError: If a size is not a positive int or ``activation`` is unknown.
        """
        check_positive_int(in_features, "in_features")
        hidden = check_positive_int_sequence(
            hidden_sizes, "hidden_sizes", allow_empty=True
        )
        check_positive_int(out_features, "out_features")
        if activation not in ACTIVATIONS:
            raise ValueError(
                f"`activation` must be one of {sorted(ACTIVATIONS)}, "
                f"got {activation!r}."
            )
        sizes = (in_features, *hidden, out_features)
        self.activation = activation
        self.layers = nnx.List(
            [
                nnx.Linear(d_in, d_out, rngs=rngs)
                for d_in, d_out in zip(sizes[:-1], sizes[1:])
            ]
        )

    def __call__(self, x: jax.Array) -> jax.Array:
        """Applies the network to a batch ``x`` of shape ``(N, ...)``."""
        act = ACTIVATIONS[self.activation]
        x = jnp.reshape(x, (x.shape[0], -1))
        for layer in self.layers[:-1]:
            x = act(layer(x))
        return self.layers[-1](x)


class CNN1D(nnx.Module):
    """Small 1D convolutional classifier for sequences such as MNIST-1D.

    Each entry of ``channels`` adds a ``Conv1D(kernel_size, stride=2, 'SAME')`` and
    a ReLU, halving the length (rounded up); the flattened features then go
    through one dense layer to the logits. With the defaults and ``in_length=40``
    the network has ``(5*1*32 + 32) + (5*32*32 + 32) + (10*32*10 + 10) = 8,554``
    parameters for 10 classes.

    Attributes:
      convs: The convolution layers.
      head: The dense output layer.
    """

    def __init__(
        self,
        in_length: int,
        num_classes: int,
        channels: Sequence[int] = (32, 32),
        kernel_size: int = 5,
        *,
        in_channels: int = 1,
        rngs: nnx.Rngs,
    ):
        """Builds the network.

        Args:
          in_length: Sequence length ``L`` of the inputs (40 for MNIST-1D).
          num_classes: Number of output logits.
          channels: Output channels of the successive stride-2 convolutions.
          kernel_size: Convolution kernel width.
          in_channels: Input channels ``C``; inputs may be ``(N, L)`` when it is 1.
          rngs: Random number streams used for initialisation.

        Raises:
          ValueError: If a size is not a positive int or ``channels`` is empty.
        """
        check_positive_int(in_length, "in_length")
        check_positive_int(num_classes, "num_classes")
        chans = check_positive_int_sequence(channels, "channels")
        check_positive_int(kernel_size, "kernel_size")
        check_positive_int(in_channels, "in_channels")
        self.in_length = in_length
        self.in_channels = in_channels
        widths = (in_channels, *chans)
        self.convs = nnx.List(
            [
                nnx.Conv(c_in, c_out, (kernel_size,), strides=(2,), rngs=rngs)
                for c_in, c_out in zip(widths[:-1], widths[1:])
            ]
        )
        length = in_length
        for _ in chans:
            length = math.ceil(length / 2)
        self.head = nnx.Linear(length * chans[-1], num_classes, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        """Applies the network to ``x`` of shape ``(N, L)`` or ``(N, L, C)``."""
        if x.ndim == 2:
            x = x[..., None]
        if x.shape[1:] != (self.in_length, self.in_channels):
            raise ValueError(
                f"expected inputs of shape (N, {self.in_length}, {self.in_channels})"
                f" or (N, {self.in_length}), got {x.shape}."
            )
        for conv in self.convs:
            x = jax.nn.relu(conv(x))
        return self.head(jnp.reshape(x, (x.shape[0], -1)))
