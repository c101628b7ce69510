"""Tests of the character-level transformer, :mod:`examples.models.transformer`."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from examples.models import CharTransformer, count_params, create_model, transformer_param_count


def test_full_size_parameter_count_matches_the_formula():
    model = nnx.eval_shape(lambda: create_model("transformer", num_classes=100,
                                                input_shape=(64,), size="full"))
    assert count_params(model) == 117_092 == 129 * 100 + 104_192
    assert count_params(model) == transformer_param_count(100, context=64, d_model=64, depth=2)
    # The formula term by term, from the layer shapes: a second vocabulary and depth.
    model = nnx.eval_shape(lambda: CharTransformer(37, context=5, d_model=8, depth=3,
                                                   num_heads=2, rngs=nnx.Rngs(0)))
    shapes = [x.shape for x in jax.tree.leaves(nnx.state(model, nnx.Param))]
    by_hand = 37 * 8 + 5 * 8 + 3 * (4 * 8 + 4 * (64 + 8) + 8 * 32 + 32 + 32 * 8 + 8) \
        + 2 * 8 + 8 * 37 + 37
    assert sum(int(np.prod(s)) for s in shapes) == by_hand == transformer_param_count(
        37, context=5, d_model=8, depth=3)
    assert (37, 8) in shapes and (5, 8) in shapes and (8, 37) in shapes


def test_shapes_and_causality():
    model = create_model("transformer", num_classes=11, input_shape=(8,), size="tiny", seed=1)
    rng = np.random.default_rng(0)
    tokens = jnp.asarray(rng.integers(0, 11, (3, 8)), jnp.int32)
    logits = model(tokens)
    assert logits.shape == (3, 8, 11) and logits.dtype == jnp.float32
    assert model(tokens[:, :5]).shape == (3, 5, 11)  # shorter sequences are accepted
    # Changing token t changes no logits before t, and does change those at t.
    t = 5
    changed = tokens.at[:, t].set((tokens[:, t] + 1) % 11)
    other = model(changed)
    np.testing.assert_array_equal(np.asarray(other[:, :t]), np.asarray(logits[:, :t]))
    assert not np.allclose(np.asarray(other[:, t]), np.asarray(logits[:, t]))
    # Only nnx.Param state (no dropout, no RNG counters).
    assert count_params(model, nnx.Not(nnx.Param)) == 0


@pytest.mark.parametrize("make,match", [
    (lambda r: CharTransformer(0, rngs=r), "vocab_size"),
    (lambda r: CharTransformer(10, d_model=10, num_heads=4, rngs=r), "num_heads"),
    (lambda r: CharTransformer(10, depth=0, rngs=r), "depth"),
])
def test_constructor_rejects_bad_arguments(make, match):
    with pytest.raises(ValueError, match=match):
        make(nnx.Rngs(0))


def test_rejects_long_sequences_and_bad_input_shape():
    with pytest.raises(ValueError, match="input_shape"):
        create_model("transformer", num_classes=5, input_shape=(8, 8))
    model = nnx.eval_shape(lambda: create_model("transformer", num_classes=5,
                                                input_shape=(4,)))
    with pytest.raises(ValueError, match="T <= 4"):
        nnx.eval_shape(lambda: model(jnp.zeros((2, 5), jnp.int32)))
