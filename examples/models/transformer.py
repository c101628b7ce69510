"""A character-level decoder-only transformer language model, Flax NNX.

:class:`CharTransformer` is the small GPT-style model of the ``char_lm`` workload
(:mod:`benchmarks.workloads`): a token embedding plus a learned position
embedding, ``depth`` pre-LayerNorm blocks with *causal* multi-head self-attention
(``x + MHA(LN(x))``, then ``x + MLP(LN(x))`` with a GELU MLP of ``mlp_ratio``
times the width; the blocks are :class:`examples.models.vit.EncoderBlock` given a
causal mask), a final LayerNorm and a dense head to the vocabulary. No dropout,
no weight tying, and the attention keeps no random state: the model's state is
``nnx.Param`` only.

Parameters, for vocabulary ``V``, width ``d``, context ``T`` and ``L`` blocks::

    V*d (embedding) + T*d (positions)
    + L * (12 d^2 + 13 d)   # 2 LayerNorms 4d, attention 4(d^2 + d), MLP 8 d^2 + 5d
    + 2d (final LayerNorm) + d*V + V (head)

The ``'full'`` zoo size (``d = 64``, 4 heads, ``L = 2``, ``T = 64``) has
``129 V + 104,192``: 117,092 at ``V = 100``.

References:
  A. Vaswani et al. Attention Is All You Need. NeurIPS 2017.
  https://arxiv.org/abs/1706.03762

  A. Radford et al. Language Models are Unsupervised Multitask Learners
  (GPT-2). 2019.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from examples.models._common import check_positive_int
from examples.models.vit import _LN_EPSILON, EncoderBlock

__all__ = ["CharTransformer", "transformer_param_count"]


def transformer_param_count(vocab_size: int, *, context: int, d_model: int, depth: int,
                            mlp_ratio: int = 4) -> int:
    """Number of parameters of a :class:`CharTransformer` (the module docstring's formula).

    Examples:
      >>> transformer_param_count(100, context=64, d_model=64, depth=2)
      117092
    """
    d, m = d_model, mlp_ratio * d_model
    block = 4 * d + 4 * (d * d + d) + (d * m + m) + (m * d + d)
    return vocab_size * d + context * d + depth * block + 2 * d + d * vocab_size + vocab_size


class CharTransformer(nnx.Module):
    """Decoder-only transformer: int tokens ``(N, T)`` -> next-token logits ``(N, T, V)``.

    Position ``t``'s logits depend on tokens ``0..t`` only (causal attention).

    Attributes:
      embed: token embedding ``(V, d_model)``.
      pos_embed: learned position embedding ``(context, d_model)``.
      blocks: the pre-LayerNorm blocks (causal self-attention, GELU MLP).
      norm: final LayerNorm.
      head: dense layer to the vocabulary.

    Examples:
      >>> from flax import nnx
      >>> import jax.numpy as jnp
      >>> model = CharTransformer(10, context=8, d_model=16, depth=1, num_heads=2,
      ...                         rngs=nnx.Rngs(0))
      >>> model(jnp.zeros((3, 8), jnp.int32)).shape
      (3, 8, 10)
    """

    def __init__(
        self,
        vocab_size: int,
        *,
        context: int = 64,
        d_model: int = 64,
        depth: int = 2,
        num_heads: int = 4,
        mlp_ratio: int = 4,
        rngs: nnx.Rngs,
    ):
        """Builds the network.

        Args:
          vocab_size: number of tokens (the logits' last axis).
          context: the longest sequence (size of the position embedding).
          d_model: token width.
          depth: number of blocks.
          num_heads: attention heads; must divide ``d_model``.
          mlp_ratio: the MLP's hidden width in multiples of ``d_model``.
          rngs: random streams for initialisation.

        Raises:
          ValueError: if a size is not a positive int or ``num_heads`` does not
            divide ``d_model``.
        """
        for name, value in (("vocab_size", vocab_size), ("context", context),
                            ("d_model", d_model), ("depth", depth),
                            ("num_heads", num_heads), ("mlp_ratio", mlp_ratio)):
            check_positive_int(value, name)
        if d_model % num_heads:
            raise ValueError(
                f"`num_heads` ({num_heads}) must divide `d_model` ({d_model})."
            )
        self.context = context
        self.embed = nnx.Embed(vocab_size, d_model, rngs=rngs)
        init = nnx.initializers.normal(stddev=0.02)
        self.pos_embed = nnx.Param(init(rngs.params(), (context, d_model), jnp.float32))
        self.blocks = nnx.List(
            [EncoderBlock(d_model, num_heads, mlp_ratio * d_model, rngs=rngs)
             for _ in range(depth)]
        )
        self.norm = nnx.LayerNorm(d_model, epsilon=_LN_EPSILON, rngs=rngs)
        self.head = nnx.Linear(d_model, vocab_size, rngs=rngs)

    def __call__(self, tokens: jax.Array) -> jax.Array:
        """Next-token logits ``(N, T, V)`` of int tokens ``(N, T)``, ``T <= context``."""
        if tokens.ndim != 2 or tokens.shape[1] > self.context:
            raise ValueError(
                f"expected tokens of shape (N, T) with T <= {self.context}, got "
                f"{tokens.shape}."
            )
        x = self.embed(tokens) + self.pos_embed[: tokens.shape[1]]
        mask = nnx.make_causal_mask(tokens)
        for block in self.blocks:
            x = block(x, mask)
        return self.head(self.norm(x))
