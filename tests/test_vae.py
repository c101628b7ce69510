"""The convolutional VAE (:mod:`examples.models.vae`) and the harness's ``'vae'`` task.

The negative ELBO is checked against a NumPy transcription of its definition
(Bernoulli log-likelihood, Gaussian KL written from the two densities' variances),
the model's shapes and parameter count against the layer shapes, and the harness
(``examples.train``) by a 3-epoch run whose loss must go down, with the
reparameterisation noise derived from the seed alone.
"""

from __future__ import annotations

import doctest
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from examples import compare, report, train
from examples.models import ConvVAE, count_params, create_model
from examples.models import vae as vae_module
from examples.models.vae import kl_to_standard_normal, negative_elbo, reparameterize


# ------------------------------------------------------------------------- the loss
def _numpy_negative_elbo(logits, x, mean, log_var):
    """-ELBO per example, averaged: -sum log Bernoulli(x | sigmoid(l)) + KL(q || N(0, I))."""
    logits, x, mean, log_var = (np.asarray(a, np.float64) for a in (logits, x, mean, log_var))
    p = 1.0 / (1.0 + np.exp(-logits))
    log_lik = x * np.log(p) + (1.0 - x) * np.log1p(-p)
    reconstruction = -log_lik.reshape(len(x), -1).sum(axis=1)
    sigma = np.exp(0.5 * log_var)
    # KL(N(m, s^2) || N(0, 1)) = log(1 / s) + (s^2 + m^2) / 2 - 1 / 2, per latent.
    kl = (np.log(1.0 / sigma) + (sigma ** 2 + mean ** 2) / 2.0 - 0.5).sum(axis=1)
    return (reconstruction + kl).mean(), reconstruction.mean(), kl.mean()


def test_negative_elbo_matches_numpy():
    rng = np.random.default_rng(0)
    logits = rng.normal(0.0, 2.0, (3, 4, 4, 1)).astype(np.float32)
    x = rng.uniform(0.0, 1.0, (3, 4, 4, 1)).astype(np.float32)
    mean = rng.normal(0.0, 1.0, (3, 5)).astype(np.float32)
    log_var = rng.normal(0.0, 0.5, (3, 5)).astype(np.float32)
    terms = negative_elbo(jnp.asarray(logits), jnp.asarray(x), jnp.asarray(mean),
                          jnp.asarray(log_var))
    want = _numpy_negative_elbo(logits, x, mean, log_var)
    np.testing.assert_allclose([float(terms.loss), float(terms.reconstruction),
                                float(terms.kl)], want, rtol=1e-5)
    assert float(terms.kl) > 0.0
    # q = N(0, I) has no KL; its reconstruction of all-zero logits is log 2 per pixel.
    zero = negative_elbo(jnp.zeros((2, 3)), jnp.asarray(x[:2, 0, :3, 0]), jnp.zeros((2, 4)),
                         jnp.zeros((2, 4)))
    assert float(zero.kl) == 0.0
    np.testing.assert_allclose(float(zero.reconstruction), 3 * math.log(2.0), rtol=1e-6)
    np.testing.assert_allclose(kl_to_standard_normal(jnp.asarray(mean), jnp.asarray(log_var)),
                               _numpy_kl_per_example(mean, log_var), rtol=1e-5)


def _numpy_kl_per_example(mean, log_var):
    var = np.exp(np.asarray(log_var, np.float64))
    return 0.5 * (var + np.asarray(mean, np.float64) ** 2 - 1.0 - np.log(var)).sum(axis=1)


def test_negative_elbo_rejects_mismatched_shapes():
    z = jnp.zeros((2, 3))
    with pytest.raises(ValueError, match="`x`"):
        negative_elbo(jnp.zeros((2, 4)), jnp.zeros((2, 5)), z, z)
    with pytest.raises(ValueError, match="`mean` and `log_var`"):
        negative_elbo(jnp.zeros((2, 4)), jnp.zeros((2, 4)), z, jnp.zeros((2, 2)))
    with pytest.raises(ValueError, match="examples"):
        negative_elbo(jnp.zeros((2, 4)), jnp.zeros((2, 4)), jnp.zeros((3, 3)),
                      jnp.zeros((3, 3)))


def test_reparameterize_is_the_keyed_gaussian_sample():
    key = jax.random.PRNGKey(3)
    mean, log_var = jnp.array([[1.0, -2.0, 0.5]]), jnp.array([[0.0, 2.0, -1.0]])
    z = reparameterize(mean, log_var, key)
    eps = jax.random.normal(key, mean.shape)
    np.testing.assert_allclose(z, mean + jnp.exp(0.5 * log_var) * eps, rtol=1e-6)
    np.testing.assert_array_equal(z, reparameterize(mean, log_var, key))  # deterministic
    assert not np.array_equal(z, reparameterize(mean, log_var, jax.random.PRNGKey(4)))
    # Differentiable in the distribution's parameters: dz/dmean = 1.
    grad = jax.grad(lambda m: jnp.sum(reparameterize(m, log_var, key)))(mean)
    np.testing.assert_allclose(grad, 1.0)
    # Typed keys work too, and the moments are right.
    many = reparameterize(jnp.full((20000, 1), 2.0), jnp.full((20000, 1), math.log(9.0)),
                          jax.random.key(0))
    assert abs(float(many.mean()) - 2.0) < 0.1 and abs(float(many.std()) - 3.0) < 0.1
    with pytest.raises(TypeError, match="key"):
        reparameterize(mean, log_var, None)
    with pytest.raises(ValueError, match="log_var"):
        reparameterize(mean, log_var[:, :2], key)


# ------------------------------------------------------------------------ the model
def test_conv_vae_shapes_and_parameter_count():
    model = create_model("conv_vae", input_shape=(8, 8, 1), size="full", seed=1)
    assert isinstance(model, ConvVAE)
    # Encoder 3x3 convs 1->16 (stride 1), 16->32 (stride 2) to 4x4x32, dense 512 -> 2*16;
    # decoder dense 16 -> 512, 3x3 transpose 32->16 (stride 2), 3x3 conv 16->1.
    by_hand = ((9 * 1 * 16 + 16) + (9 * 16 * 32 + 32) + (512 * 32 + 32)
               + (16 * 512 + 512) + (9 * 32 * 16 + 16) + (9 * 16 * 1 + 1))
    assert count_params(model) == by_hand == 34_689
    x = jnp.asarray(np.random.default_rng(0).uniform(size=(5, 8, 8, 1)), jnp.float32)
    logits, mean, log_var = model(x, jax.random.PRNGKey(0))
    assert logits.shape == x.shape and mean.shape == log_var.shape == (5, 16)
    assert model.decode(mean).shape == x.shape
    np.testing.assert_array_equal(model.encode(x)[0], mean)
    assert count_params(create_model("conv_vae", input_shape=(8, 8, 1))) == 2_337  # tiny
    # Three levels, rectangular RGB images.
    rgb = ConvVAE(image_size=(8, 16), in_channels=3, channels=(4, 8, 8), latent_dim=2,
                  rngs=nnx.Rngs(0))
    out = nnx.eval_shape(lambda: rgb(jnp.zeros((2, 8, 16, 3)), jax.random.PRNGKey(0)))
    assert [o.shape for o in out] == [(2, 8, 16, 3), (2, 2), (2, 2)]


@pytest.mark.parametrize("make,error,match", [
    (lambda r: ConvVAE(channels=(), rngs=r), ValueError, "channels"),
    (lambda r: ConvVAE(latent_dim=0, rngs=r), ValueError, "latent_dim"),
    (lambda r: ConvVAE(in_channels=1.0, rngs=r), ValueError, "in_channels"),
    (lambda r: ConvVAE(image_size=(8, 0), rngs=r), ValueError, "image_size"),
    (lambda r: ConvVAE(image_size=6, channels=(4, 4, 4), rngs=r), ValueError, "image_size"),
])
def test_conv_vae_rejects_bad_arguments(make, error, match):
    with pytest.raises(error, match=match):
        make(nnx.Rngs(0))


def test_conv_vae_rejects_bad_inputs_and_create_model_its_num_classes():
    model = ConvVAE(channels=(2, 2), latent_dim=2, rngs=nnx.Rngs(0))
    with pytest.raises(TypeError, match="key"):
        model(jnp.zeros((1, 8, 8, 1)), None)
    with pytest.raises(ValueError, match="expected images"):
        model(jnp.zeros((1, 64)), jax.random.PRNGKey(0))
    with pytest.raises(ValueError, match="expected latents"):
        model.decode(jnp.zeros((1, 3)))
    with pytest.raises(ValueError, match="num_classes"):
        create_model("conv_vae", num_classes=10, input_shape=(8, 8, 1))
    with pytest.raises(ValueError, match="num_classes"):
        create_model("mlp", input_shape=(4,))
    with pytest.raises(ValueError, match="input_shape"):
        create_model("conv_vae", input_shape=(64,))


def test_docstring_examples():
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    tests = [t for t in doctest.DocTestFinder().find(vae_module, vae_module.__name__)
             if t.examples]
    assert {t.name.rsplit(".", 1)[-1] for t in tests} >= {"ConvVAE", "negative_elbo"}
    for test in tests:
        runner.run(test)
    assert runner.summarize(verbose=False).failed == 0


# ---------------------------------------------------------------------- the harness
def _batch(n=16, seed=0):
    x = np.random.default_rng(seed).uniform(size=(n, 8, 8, 1)).astype(np.float32)
    return jnp.asarray(x), jnp.zeros((n,), jnp.int32)


def test_vae_task_loss_is_the_elbo_with_noise_from_the_seed():
    model = create_model("conv_vae", input_shape=(8, 8, 1))
    task = train.model_task(model, "vae", steps=1, seed=7)
    x, y = _batch()
    loss, grads, rest, kl = task.grad_fn(task.params, task.rest, (), (x, y))
    # The step's noise is the second half of a split of the task's key.
    key, noise = jax.random.split(task.rest["key"])
    logits, mean, log_var = model(x, noise)
    want = negative_elbo(logits, x, mean, log_var)
    np.testing.assert_allclose([float(loss), float(kl)], [float(want.loss), float(want.kl)],
                               rtol=1e-5)
    np.testing.assert_array_equal(rest["key"], key)                 # the stream advances
    np.testing.assert_array_equal(rest["eval_key"], task.rest["eval_key"])
    assert jax.tree.structure(grads) == jax.tree.structure(task.params)
    # The noise depends on the seed only: same seed, same keys; another seed, others.
    same = train.model_task(create_model("conv_vae", input_shape=(8, 8, 1)), "vae", steps=1,
                            seed=7)
    other = train.model_task(model, "vae", steps=1, seed=8)
    np.testing.assert_array_equal(same.rest["key"], task.rest["key"])
    assert not np.array_equal(other.rest["key"], task.rest["key"])
    # Evaluation: the fixed eval key, sums over the batch.
    loss_sum, kl_sum = task.eval_fn(task.params, task.rest, (), x, y)
    ev = negative_elbo(*_outputs(model, x, task.rest["eval_key"]))
    np.testing.assert_allclose([float(loss_sum), float(kl_sum)],
                               [16 * float(ev.loss), 16 * float(ev.kl)], rtol=1e-5)
    with pytest.raises(ValueError, match="kind"):
        train.model_task(model, "density", steps=1)
    with pytest.raises(ValueError, match="seed"):
        train.model_task(model, "vae", steps=1, seed=1.5)


def _outputs(model, x, key):
    logits, mean, log_var = model(x, key)
    return logits, x, mean, log_var


def test_vae_harness_run_lowers_the_loss_and_reports_no_accuracy(tmp_path):
    config = train.Config(model="conv_vae", size="tiny", learning_rate=0.03, epochs=3,
                          seeds=1, methods=("kga",), train_subset=256, batch_size=32,
                          progress=False)
    data = train.load_data(config)
    assert data.x_train.shape[1:] == (8, 8, 1) and train.task_kind("conv_vae", data) == "vae"
    results = train.train_and_evaluate(config, str(tmp_path))
    assert results["dataset"]["task"] == "vae"
    base, kga = results["runs"]["base"][0], results["runs"]["kga"][0]
    losses = base["train_loss"]
    assert all(math.isfinite(v) for v in losses + base["test_loss"])
    assert losses[2] < losses[1] < losses[0] < 70.0     # 64 pixels: 64 log 2 = 44 at best init
    # Paired runs: the same weights, batches and noise, so KGA (identical to the base
    # until its first snapshot) gives the base's first epoch, to XLA's fusion (the two
    # are different compiled programs: README, "Safety").
    assert kga["train_loss"][0] == pytest.approx(losses[0], rel=1e-5)
    assert base["train_acc"] == base["test_acc"] == [None] * 3
    summary = results["summary"]
    assert summary["base"]["final_test_acc_mean"] is None
    assert summary["kga"]["test_acc_diff"] is None and summary["kga"]["reached"] in (0, 1)
    table = report.format_table(summary, task=results["dataset"]["task"])
    assert "test acc" not in table and "final test" in table
    assert (tmp_path / "test_metric.png").stat().st_size > 1000   # the test loss, plotted
    assert (tmp_path / "results.json").exists()


def test_cli_spelling():
    _, config = compare.parse_args(["--model", "conv_vae", "--methods", "kga", "--seeds", "5",
                                    "--lr", "0.03", "--tune"])
    assert (config.model, config.methods, config.seeds, config.tune_lr) == (
        "conv_vae", ("kga",), 5, True)
    _, quick = compare.parse_args(["--model", "conv_vae", "--tune", "--quick", "--no-tune"])
    assert not quick.tune_lr and quick.size == "tiny"
