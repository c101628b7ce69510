"""Vision Transformer (ViT), Flax NNX.

Standard layout: non-overlapping ``patch_size x patch_size`` patches embedded by a
strided convolution, a learned class token prepended, a learned position
embedding added, ``depth`` pre-LayerNorm transformer blocks
(``x + MHA(LN(x))``, then ``x + MLP(LN(x))`` with a GELU MLP), a final LayerNorm
and a dense head on the class token. ViT-B/16 (``hidden_size=768, depth=12,
num_heads=12, mlp_dim=3072``) at 224x224 and 1000 classes has **86,567,656**
parameters:

* patch embedding ``16*16*3*768 + 768 = 590,592``;
* class token 768 and position embedding ``197*768 = 151,296``;
* per block ``2*1,536`` (LayerNorms) ``+ 4*(768*768 + 768)`` (attention)
  ``+ 768*3072 + 3072 + 3072*768 + 768`` (MLP) ``= 7,087,872``, times 12;
* final LayerNorm 1,536 and head ``768*1000 + 1000 = 769,000``.

No dropout is used and the attention keeps no random state, so the model's state
consists of ``nnx.Param`` only.

References:
  A. Dosovitskiy et al. An Image is Worth 16x16 Words: Transformers for Image
  Recognition at Scale. ICLR 2021. https://arxiv.org/abs/2010.11929
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from examples.models._common import check_positive_int, image_hw

__all__ = ["EncoderBlock", "ViT"]

_LN_EPSILON = 1e-6


class EncoderBlock(nnx.Module):
    """Pre-LayerNorm transformer encoder block."""

    def __init__(
        self, hidden_size: int, num_heads: int, mlp_dim: int, *, rngs: nnx.Rngs
    ):
        """Builds the block.

        Args:
          hidden_size: Token width.
          num_heads: Attention heads (must divide ``hidden_size``).
          mlp_dim: Hidden width of the MLP.
          rngs: Random number streams used for initialisation.
        """
        self.norm1 = nnx.LayerNorm(hidden_size, epsilon=_LN_EPSILON, rngs=rngs)
        self.attention = nnx.MultiHeadAttention(
            num_heads=num_heads,
            in_features=hidden_size,
            decode=False,
            deterministic=True,
            keep_rngs=False,
            rngs=rngs,
        )
        self.norm2 = nnx.LayerNorm(hidden_size, epsilon=_LN_EPSILON, rngs=rngs)
        self.mlp_in = nnx.Linear(hidden_size, mlp_dim, rngs=rngs)
        self.mlp_out = nnx.Linear(mlp_dim, hidden_size, rngs=rngs)

    def __call__(self, x: jax.Array, mask: jax.Array | None = None) -> jax.Array:
        """Applies the block to tokens ``x`` of shape ``(N, T, hidden_size)``.

        ``mask``: an attention mask broadcastable to ``(N, heads, T, T)``
        (``True`` = attend), e.g. ``nnx.make_causal_mask`` for a decoder.
        """
        x = x + self.attention(self.norm1(x), mask=mask)
        y = self.mlp_out(jax.nn.gelu(self.mlp_in(self.norm2(x))))
        return x + y


class ViT(nnx.Module):
    """Vision Transformer classifier, NHWC inputs.

    Attributes:
      patch_embed: Strided convolution embedding the patches.
      cls_token: Learned class token, shape ``(1, 1, hidden_size)``.
      pos_embed: Learned position embedding, shape ``(1, 1 + P, hidden_size)``.
      blocks: The transformer blocks.
      norm: Final LayerNorm.
      head: Dense classifier on the class token.
    """

    def __init__(
        self,
        num_classes: int,
        *,
        image_size: int | tuple[int, int] = 224,
        patch_size: int = 16,
        hidden_size: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        mlp_dim: int = 3072,
        in_channels: int = 3,
        rngs: nnx.Rngs,
    ):
        """Builds the network (defaults: ViT-B/16 at 224x224).

        Args:
          num_classes: Number of output logits.
          image_size: Input height and width (``int`` for square images); each
            must be divisible by ``patch_size``.
          patch_size: Side of the square patches.
          hidden_size: Token width.
          depth: Number of transformer blocks.
          num_heads: Attention heads; must divide ``hidden_size``.
          mlp_dim: Hidden width of the block MLPs.
          in_channels: Channels of the input images.
          rngs: Random number streams used for initialisation.

        Raises:
          ValueError: If a size is not a positive int, ``patch_size`` does not
            divide the image size, or ``num_heads`` does not divide
            ``hidden_size``.
        """
        check_positive_int(num_classes, "num_classes")
        height, width = image_hw(image_size, "image_size")
        for name, value in (
            ("patch_size", patch_size),
            ("hidden_size", hidden_size),
            ("depth", depth),
            ("num_heads", num_heads),
            ("mlp_dim", mlp_dim),
            ("in_channels", in_channels),
        ):
            check_positive_int(value, name)
        if height % patch_size or width % patch_size:
            raise ValueError(
                f"`patch_size` ({patch_size}) must divide the image size "
                f"{(height, width)}."
            )
        if hidden_size % num_heads:
            raise ValueError(
                f"`num_heads` ({num_heads}) must divide `hidden_size` "
                f"({hidden_size})."
            )
        self.image_size = (height, width)
        num_patches = (height // patch_size) * (width // patch_size)
        self.patch_embed = nnx.Conv(
            in_channels,
            hidden_size,
            (patch_size, patch_size),
            strides=(patch_size, patch_size),
            padding="VALID",
            rngs=rngs,
        )
        self.cls_token = nnx.Param(jnp.zeros((1, 1, hidden_size), jnp.float32))
        init = nnx.initializers.normal(stddev=0.02)
        self.pos_embed = nnx.Param(
            init(rngs.params(), (1, num_patches + 1, hidden_size), jnp.float32)
        )
        self.blocks = nnx.List(
            [
                EncoderBlock(hidden_size, num_heads, mlp_dim, rngs=rngs)
                for _ in range(depth)
            ]
        )
        self.norm = nnx.LayerNorm(hidden_size, epsilon=_LN_EPSILON, rngs=rngs)
        self.head = nnx.Linear(hidden_size, num_classes, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        """Applies the network to NHWC images ``x``; returns logits."""
        if x.shape[1:3] != self.image_size:
            raise ValueError(
                f"expected images of size {self.image_size}, got {x.shape[1:3]}."
            )
        x = self.patch_embed(x)
        n, h, w, c = x.shape
        x = jnp.reshape(x, (n, h * w, c))
        cls = jnp.broadcast_to(self.cls_token[...], (n, 1, c)).astype(x.dtype)
        x = jnp.concatenate([cls, x], axis=1) + self.pos_embed[...]
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x)[:, 0])
