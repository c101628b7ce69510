"""A small convolutional variational autoencoder (VAE), Flax NNX.

The unsupervised model of the KGA paper's Fig. 11, at the size of scikit-learn's
8x8 digits (:func:`examples.datasets.load_digits` with ``as_images=True``).
With ``channels=(c_1, ..., c_k)``:

* **encoder** ``Conv3x3(c_1) -> ReLU``, then ``Conv3x3/2(c_i) -> ReLU`` for
  ``i = 2..k`` (each halves the image), flatten, and one dense layer to
  ``2 * latent_dim`` outputs: the mean and the log-variance of the diagonal
  Gaussian ``q(z | x)``;
* **reparameterisation** ``z = mean + exp(log_var / 2) * eps``, ``eps ~ N(0, I)``
  drawn from an explicit PRNG key (the model keeps no random state);
* **decoder** the mirror image: a dense layer and a ReLU to the encoder's last
  feature map, ``ConvTranspose3x3/2(c_{i-1}) -> ReLU`` for ``i = k..2`` (each
  doubles it), and ``Conv3x3(in_channels)``: one logit per pixel (the
  Bernoulli likelihood of :func:`negative_elbo`).

With the defaults (``channels=(16, 32)``, ``latent_dim=16``) and 8x8x1 images
the model has **34,689** parameters: ``(9*1*16 + 16) + (9*16*32 + 32) +
(512*32 + 32)`` in the encoder and ``(16*512 + 512) + (9*32*16 + 16) +
(9*16*1 + 1)`` in the decoder. All padding is ``'SAME'``; the image sides must be
divisible by ``2**(k - 1)`` so that the decoder comes back to the input size.

References:
  D. P. Kingma and M. Welling. Auto-Encoding Variational Bayes. ICLR 2014.
  https://arxiv.org/abs/1312.6114
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from examples.models._common import check_positive_int, check_positive_int_sequence, image_hw

__all__ = ["ConvVAE", "ELBO", "kl_to_standard_normal", "negative_elbo", "reparameterize"]


def _check_key(key) -> None:
    if key is None or not hasattr(key, "dtype"):
        raise TypeError(
            f"`key` must be a JAX PRNG key (jax.random.key or jax.random.PRNGKey), "
            f"got {key!r}."
        )


def reparameterize(mean: jax.Array, log_var: jax.Array, key: jax.Array) -> jax.Array:
    """A sample ``mean + exp(log_var / 2) * eps`` of ``N(mean, diag(exp(log_var)))``.

    Args:
      mean: Means, any shape.
      log_var: Log-variances, the shape of ``mean``.
      key: PRNG key of the standard normal noise ``eps``.

    Returns:
      The sample, differentiable in ``mean`` and ``log_var``.

    Raises:
      TypeError: If ``key`` is not a PRNG key.
      ValueError: If the shapes differ.
    """
    _check_key(key)
    if jnp.shape(mean) != jnp.shape(log_var):
        raise ValueError(
            f"`log_var` must have the shape of `mean` {jnp.shape(mean)}, got "
            f"{jnp.shape(log_var)}."
        )
    eps = jax.random.normal(key, jnp.shape(mean), jnp.result_type(mean))
    return mean + jnp.exp(0.5 * log_var) * eps


def kl_to_standard_normal(mean: jax.Array, log_var: jax.Array) -> jax.Array:
    """``KL(N(mean, diag(exp(log_var))) || N(0, I))`` per example (summed over the
    last axis): ``0.5 * sum(exp(log_var) + mean**2 - 1 - log_var)``."""
    return 0.5 * jnp.sum(jnp.exp(log_var) + jnp.square(mean) - 1.0 - log_var, axis=-1)


class ELBO(NamedTuple):
    """The terms of :func:`negative_elbo`, each averaged over the batch.

    Attributes:
      loss: The negative ELBO, ``reconstruction + kl``.
      reconstruction: ``-log p(x | z)`` (nats per example).
      kl: ``KL(q(z | x) || N(0, I))`` (nats per example).
    """

    loss: jax.Array
    reconstruction: jax.Array
    kl: jax.Array


def negative_elbo(
    logits: jax.Array, x: jax.Array, mean: jax.Array, log_var: jax.Array
) -> ELBO:
    """The negative evidence lower bound of a VAE, averaged per example.

    ``-ELBO(x) = -log p(x | z) + KL(q(z | x) || N(0, I))`` with one sample ``z`` and a
    Bernoulli likelihood per pixel: ``-log p(x | z) = sum over pixels of
    softplus(l) - x * l`` for pixel logits ``l`` and pixel values ``x`` in
    ``[0, 1]`` (grey levels are the Bernoulli means, as is usual for digits).

    Args:
      logits: Decoder logits, shape ``(N, ...)``.
      x: Targets in ``[0, 1]``, the shape of ``logits``.
      mean: Means of ``q(z | x)``, shape ``(N, latent)``.
      log_var: Log-variances of ``q(z | x)``, the shape of ``mean``.

    Returns:
      :class:`ELBO` of batch means.

    Raises:
      ValueError: If the shapes do not match.

    Examples:
      >>> import jax.numpy as jnp
      >>> from examples.models.vae import negative_elbo
      >>> terms = negative_elbo(jnp.zeros((2, 4)), jnp.ones((2, 4)), jnp.zeros((2, 3)),
      ...                       jnp.zeros((2, 3)))
      >>> round(float(terms.reconstruction), 4), float(terms.kl)  # 4 * log 2, 0
      (2.7726, 0.0)
    """
    if jnp.shape(logits) != jnp.shape(x):
        raise ValueError(
            f"`x` must have the shape of `logits` {jnp.shape(logits)}, got {jnp.shape(x)}."
        )
    if jnp.shape(mean) != jnp.shape(log_var) or jnp.ndim(mean) != 2:
        raise ValueError(
            "`mean` and `log_var` must both be (N, latent); got "
            f"{jnp.shape(mean)} and {jnp.shape(log_var)}."
        )
    if jnp.shape(mean)[0] != jnp.shape(x)[0]:
        raise ValueError(
            f"`mean` has {jnp.shape(mean)[0]} examples and `x` {jnp.shape(x)[0]}."
        )
    n = jnp.shape(x)[0]
    per_pixel = jax.nn.softplus(logits) - x * logits
    reconstruction = jnp.sum(jnp.reshape(per_pixel, (n, -1)), axis=1)
    kl = kl_to_standard_normal(mean, log_var)
    return ELBO(jnp.mean(reconstruction + kl), jnp.mean(reconstruction), jnp.mean(kl))


class ConvVAE(nnx.Module):
    """Convolutional VAE for small NHWC images (the module docstring has the layout).

    ``vae(x, key)`` returns ``(logits, mean, log_var)``; :func:`negative_elbo` of
    ``(logits, x, mean, log_var)`` is its training loss.

    Attributes:
      encoder_convs: The encoder's convolutions (the first at stride 1).
      encoder_head: Dense layer to ``(mean, log_var)``.
      decoder_head: Dense layer from the latent to the last feature map.
      decoder_convs: The decoder's stride-2 transposed convolutions.
      decoder_out: The ``3x3`` convolution to the pixel logits.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> from flax import nnx
      >>> from examples.models import ConvVAE, count_params
      >>> vae = ConvVAE(image_size=8, rngs=nnx.Rngs(0))
      >>> count_params(vae)
      34689
      >>> logits, mean, log_var = vae(jnp.zeros((2, 8, 8, 1)), jax.random.key(0))
      >>> logits.shape, mean.shape, log_var.shape
      ((2, 8, 8, 1), (2, 16), (2, 16))
    """

    def __init__(
        self,
        *,
        image_size: int | Sequence[int] = 8,
        in_channels: int = 1,
        channels: Sequence[int] = (16, 32),
        latent_dim: int = 16,
        rngs: nnx.Rngs,
    ):
        """Builds the network.

        Args:
          image_size: ``(height, width)`` of the images, or one int for squares.
          in_channels: Channels of the images (and of the reconstruction).
          channels: Encoder widths; every entry after the first halves the image.
          latent_dim: Dimension of the latent ``z``.
          rngs: Random number streams used for initialisation.

        Raises:
          ValueError: If a size is not a positive int, ``channels`` is empty, or
            the image sides are not divisible by ``2**(len(channels) - 1)``.
        """
        height, width = image_hw(image_size, "image_size")
        check_positive_int(in_channels, "in_channels")
        chans = check_positive_int_sequence(channels, "channels")
        check_positive_int(latent_dim, "latent_dim")
        factor = 2 ** (len(chans) - 1)
        if height % factor or width % factor:
            raise ValueError(
                f"`image_size` {(height, width)} must be divisible by {factor} "
                f"(2**(len(channels) - 1) for channels={chans})."
            )
        self.image_size = (height, width)
        self.in_channels = in_channels
        self.latent_dim = latent_dim
        self.feature_shape = (height // factor, width // factor, chans[-1])
        features = math.prod(self.feature_shape)
        widths = (in_channels, *chans)
        self.encoder_convs = nnx.List(
            [
                nnx.Conv(c_in, c_out, (3, 3), strides=(1, 1) if i == 0 else (2, 2),
                         rngs=rngs)
                for i, (c_in, c_out) in enumerate(zip(widths[:-1], widths[1:]))
            ]
        )
        self.encoder_head = nnx.Linear(features, 2 * latent_dim, rngs=rngs)
        self.decoder_head = nnx.Linear(latent_dim, features, rngs=rngs)
        back = chans[::-1]
        self.decoder_convs = nnx.List(
            [
                nnx.ConvTranspose(c_in, c_out, (3, 3), strides=(2, 2), rngs=rngs)
                for c_in, c_out in zip(back[:-1], back[1:])
            ]
        )
        self.decoder_out = nnx.Conv(chans[0], in_channels, (3, 3), rngs=rngs)

    def _check_images(self, x: jax.Array) -> None:
        expected = (*self.image_size, self.in_channels)
        if jnp.ndim(x) != 4 or tuple(jnp.shape(x)[1:]) != expected:
            raise ValueError(
                f"expected images of shape (N, {expected[0]}, {expected[1]}, "
                f"{expected[2]}), got {jnp.shape(x)}."
            )

    def encode(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        """``(mean, log_var)`` of ``q(z | x)`` for NHWC images ``x``, each ``(N, latent)``."""
        self._check_images(x)
        for conv in self.encoder_convs:
            x = jax.nn.relu(conv(x))
        stats = self.encoder_head(jnp.reshape(x, (x.shape[0], -1)))
        return stats[:, : self.latent_dim], stats[:, self.latent_dim :]

    def decode(self, z: jax.Array) -> jax.Array:
        """Pixel logits ``(N, H, W, in_channels)`` of latents ``z`` ``(N, latent)``."""
        if jnp.ndim(z) != 2 or jnp.shape(z)[1] != self.latent_dim:
            raise ValueError(
                f"expected latents of shape (N, {self.latent_dim}), got {jnp.shape(z)}."
            )
        h = jax.nn.relu(self.decoder_head(z))
        h = jnp.reshape(h, (z.shape[0], *self.feature_shape))
        for conv in self.decoder_convs:
            h = jax.nn.relu(conv(h))
        return self.decoder_out(h)

    def __call__(self, x: jax.Array, key: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        """``(logits, mean, log_var)``: encode ``x``, sample ``z`` with ``key``, decode.

        Raises:
          TypeError: If ``key`` is not a PRNG key.
          ValueError: If ``x`` is not ``(N, H, W, in_channels)`` of the model's size.
        """
        _check_key(key)
        mean, log_var = self.encode(x)
        return self.decode(reparameterize(mean, log_var, key)), mean, log_var
