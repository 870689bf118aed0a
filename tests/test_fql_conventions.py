"""One test per convention of the book's appendix (book/method.md): the paper's alphas only transfer if every one of them holds."""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fqlcore import data, nets
from fqlcore.agents import fql

OBS, ACT, B = 3, 2, 16


def make_batch(seed=0):
    rng = np.random.default_rng(seed)
    return {"observations": jnp.asarray(rng.normal(size=(B, OBS)), jnp.float32),
            "actions": jnp.asarray(rng.uniform(-1, 1, (B, ACT)), jnp.float32),
            "rewards": jnp.asarray(rng.normal(size=B), jnp.float32),
            "next_observations": jnp.asarray(rng.normal(size=(B, OBS)), jnp.float32),
            "masks": jnp.asarray(rng.integers(0, 2, B), jnp.float32), "terminals": jnp.zeros(B)}


def make_state(**overrides):
    config = fql.Config(hidden_dims=(8, 8), **overrides)
    state = fql.init(jax.random.PRNGKey(0), make_batch(), config)
    # Targets differ from the online critic, as they do after training has started.
    noisy = jax.tree.map(lambda p: p + 0.1, state.target_params)
    return state.replace(target_params=noisy)


def reference_losses(state, batch, key):
    """FQL's losses written straight from the appendix (book/method.md), independently of fql.losses."""
    c, p = state.config, state.params
    flow_net, one, critic = nets.VelocityField(c.hidden_dims, ACT), nets.OneStepPolicy(c.hidden_dims, ACT), \
        nets.Critic(c.hidden_dims)
    k_next, k_flow, k_noise = jax.random.split(key, 3)
    s, a, s2 = batch["observations"], batch["actions"], batch["next_observations"]
    a2 = jnp.clip(one.apply(p["onestep"], s2, jax.random.normal(k_next, a.shape)), -1, 1)
    q_next = critic.apply(state.target_params["critic"], s2, a2)
    q_next = q_next.min(0) if c.q_agg == "min" else q_next.mean(0)
    y = batch["rewards"] + c.discount * batch["masks"] * q_next
    critic_loss = ((critic.apply(p["critic"], s, a) - y) ** 2).mean()
    k_x0, k_t = jax.random.split(k_flow)
    x0, t = jax.random.normal(k_x0, a.shape), jax.random.uniform(k_t, (B, 1))
    bc_flow = ((flow_net.apply(p["flow"], s, (1 - t) * x0 + t * a, t) - (a - x0)) ** 2).mean()
    z = jax.random.normal(k_noise, a.shape)
    x = z
    for i in range(c.flow_steps):
        x = x + flow_net.apply(p["flow"], s, x, jnp.full((B, 1), i / c.flow_steps)) / c.flow_steps
    mu = one.apply(p["onestep"], s, z)
    distill = ((mu - jnp.clip(x, -1, 1)) ** 2).mean()
    q = critic.apply(p["critic"], s, jnp.clip(mu, -1, 1)).mean(0)
    q_loss = -q.mean() / (jnp.abs(q).mean() if c.normalize_q_loss else 1.0)
    return {"critic_loss": critic_loss, "bc_flow_loss": bc_flow, "distill_loss": distill, "q_loss": q_loss}


@pytest.mark.parametrize("overrides", [{}, {"q_agg": "min"}, {"normalize_q_loss": True}, {"alpha": 3.0}])
def test_losses_match_the_method_written_out(overrides):
    """Means over batch AND action dimensions, clip positions, mean/min aggregation, 10 Euler steps at t = i/10."""
    state, batch, key = make_state(**overrides), make_batch(1), jax.random.PRNGKey(7)
    _, metrics = fql.losses(state.params, state, batch, key)
    for name, value in reference_losses(state, batch, key).items():
        np.testing.assert_allclose(metrics[name], value, rtol=2e-5, atol=1e-6, err_msg=name)
    expected_actor = metrics["bc_flow_loss"] + state.config.alpha * metrics["distill_loss"] + metrics["q_loss"]
    np.testing.assert_allclose(metrics["actor_loss"], expected_actor, rtol=1e-6)


def test_distillation_compares_the_unclipped_one_step_output():
    """Push mu's output to ~5: the distillation error must see 5, while the critic sees the clipped action 1."""
    state, batch = make_state(), make_batch(3)
    params = state.params
    last = sorted(k for k in params["onestep"]["params"]["MLP_0"] if k.startswith("Dense"))[-1]
    big = jax.tree.map(lambda x: x, params)
    big["onestep"]["params"]["MLP_0"][last]["kernel"] = jnp.zeros_like(params["onestep"]["params"]["MLP_0"][last]["kernel"])
    big["onestep"]["params"]["MLP_0"][last]["bias"] = jnp.full((ACT,), 5.0)
    key = jax.random.PRNGKey(0)
    _, metrics = fql.losses(big, state, batch, key)
    z = jax.random.normal(jax.random.split(key, 3)[2], (B, ACT))
    target = fql.flow_actions(state, batch["observations"], z, big)  # clipped into [-1, 1]
    assert float(jnp.max(jnp.abs(target))) <= 1.0
    # A mean over batch and action dimensions of (5 - target)^2: a clipped mu would give (1 - target)^2, a sum over
    # action dimensions ACT times more.
    np.testing.assert_allclose(metrics["distill_loss"], jnp.mean((5.0 - target) ** 2), rtol=1e-5)
    critic = nets.Critic(state.config.hidden_dims)
    q_clipped = critic.apply(params["critic"], batch["observations"], jnp.ones((B, ACT))).mean(0)
    np.testing.assert_allclose(metrics["q_loss"], -q_clipped.mean(), rtol=1e-5)


def test_q_agg_changes_the_td_target_only():
    batch, key = make_batch(4), jax.random.PRNGKey(1)
    mean_state, min_state = make_state(q_agg="mean"), make_state(q_agg="min")
    _, m_mean = fql.losses(mean_state.params, mean_state, batch, key)
    _, m_min = fql.losses(min_state.params, min_state, batch, key)
    assert abs(float(m_mean["critic_loss"]) - float(m_min["critic_loss"])) > 1e-4
    np.testing.assert_allclose(m_mean["q_loss"], m_min["q_loss"], rtol=1e-7)  # the actor's Q: always the mean
    with pytest.raises(ValueError, match="q_agg"):
        bad = make_state(q_agg="max")
        fql.losses(bad.params, bad, batch, key)


def test_normalize_q_loss_rescales_the_actor_gradient_by_one_over_mean_abs_q():
    batch, key = make_batch(5), jax.random.PRNGKey(2)
    plain, normalized = make_state(alpha=0.0), make_state(alpha=0.0, normalize_q_loss=True)

    def q_grad(state):
        return jax.grad(lambda p: fql.losses(p, state, batch, key)[1]["q_loss"])(state.params)["onestep"]

    g_plain, g_norm = q_grad(plain), q_grad(normalized)
    _, metrics = fql.losses(plain.params, plain, batch, key)
    mu = nets.OneStepPolicy((8, 8), ACT).apply(plain.params["onestep"], batch["observations"],
                                               jax.random.normal(jax.random.split(key, 3)[2], (B, ACT)))
    q = nets.Critic((8, 8)).apply(plain.params["critic"], batch["observations"], jnp.clip(mu, -1, 1)).mean(0)
    scale = 1.0 / float(jnp.abs(q).mean())
    for a, b in zip(jax.tree.leaves(g_plain), jax.tree.leaves(g_norm)):
        np.testing.assert_allclose(b, a * scale, rtol=1e-4, atol=1e-7)


def test_the_q_term_does_not_train_the_critic_and_the_critic_loss_does_not_train_the_actor():
    state, batch, key = make_state(), make_batch(6), jax.random.PRNGKey(3)
    grads = jax.grad(lambda p: fql.losses(p, state, batch, key)[1]["q_loss"])(state.params)
    assert all(float(jnp.abs(g).max()) == 0 for g in jax.tree.leaves(grads["critic"]))
    grads = jax.grad(lambda p: fql.losses(p, state, batch, key)[1]["critic_loss"])(state.params)
    assert all(float(jnp.abs(g).max()) == 0 for g in jax.tree.leaves(grads["onestep"]))
    grads = jax.grad(lambda p: fql.losses(p, state, batch, key)[1]["distill_loss"])(state.params)
    assert all(float(jnp.abs(g).max()) == 0 for g in jax.tree.leaves(grads["flow"])), "no gradient through the solver"


def test_layer_norm_after_the_activation_on_the_critic_only():
    state = make_state()
    has_ln = lambda tree: any("LayerNorm" in jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_leaves_with_path(tree))
    assert has_ln(state.params["critic"])
    assert not has_ln(state.params["flow"]) and not has_ln(state.params["onestep"])
    mlp = nets.MLP((4,), 1, layer_norm=True)
    x = jnp.arange(6.0).reshape(2, 3) / 3
    params = mlp.init(jax.random.PRNGKey(0), x)["params"]
    h = jax.nn.gelu(x @ params["Dense_0"]["kernel"] + params["Dense_0"]["bias"])
    h = (h - h.mean(-1, keepdims=True)) / jnp.sqrt(h.var(-1, keepdims=True) + 1e-6)
    h = h * params["LayerNorm_0"]["scale"] + params["LayerNorm_0"]["bias"]
    np.testing.assert_allclose(mlp.apply({"params": params}, x), h @ params["Dense_1"]["kernel"] + params["Dense_1"]["bias"],
                               rtol=1e-5, atol=1e-6)


def test_networks_gelu_xavier_and_raw_time_input():
    state = fql.init(jax.random.PRNGKey(0), make_batch(), fql.Config())  # the paper's 4 x 512
    first = state.params["flow"]["params"]["MLP_0"]["Dense_0"]["kernel"]
    assert first.shape == (OBS + ACT + 1, 512), "v(s, x, t) takes t as one raw scalar input"
    hidden = state.params["flow"]["params"]["MLP_0"]["Dense_1"]["kernel"]
    assert len(state.params["flow"]["params"]["MLP_0"]) == 5  # 4 hidden layers + output
    np.testing.assert_allclose(float(hidden.var()), 2 / (512 + 512), rtol=0.05)  # Xavier: Var = 2 / (fan_in + fan_out)
    heads = state.params["critic"]["params"]["VmapMLP_0"]["Dense_0"]["kernel"]
    assert heads.shape[0] == 2 and not np.allclose(heads[0], heads[1]), "two independently initialized heads"


def test_acting_is_stochastic_and_clipped():
    state = make_state()
    big = jax.tree.map(lambda x: x * 30, state.params)  # outputs far outside [-1, 1]
    state = state.replace(params=big)
    obs = make_batch()["observations"]
    a1, a2 = fql.act(state, obs, jax.random.PRNGKey(0)), fql.act(state, obs, jax.random.PRNGKey(1))
    assert a1.shape == (B, ACT) and float(jnp.abs(a1).max()) <= 1.0
    assert not np.allclose(a1, a2), "fresh noise z at every call"
    np.testing.assert_array_equal(a1, fql.act(state, obs, jax.random.PRNGKey(0)))
    assert fql.act(state, obs[0], jax.random.PRNGKey(0)).shape == (ACT,)


def test_dataset_actions_are_clipped_on_load():
    n = 4
    ds = data.from_arrays(np.zeros((n, 1)), np.array([[-1.0], [1.0], [2.0], [0.5]]), np.zeros(n), np.zeros((n, 1)), np.ones(n))
    np.testing.assert_allclose(np.asarray(ds.actions)[:, 0], [-1 + 1e-5, 1 - 1e-5, 1 - 1e-5, 0.5], rtol=0, atol=1e-7)


def test_one_adam_step_on_all_networks_and_polyak_targets():
    state, batch = make_state(), make_batch(7)
    new, _ = fql.update(state, batch)
    for name in ("flow", "onestep", "critic"):
        assert any(not np.allclose(a, b) for a, b in zip(jax.tree.leaves(state.params[name]),
                                                         jax.tree.leaves(new.params[name]))), name
    # The paper's code moves the target toward the parameters as they were BEFORE this step's update.
    expected = jax.tree.map(lambda p, t: 0.005 * p + 0.995 * t, state.params["critic"], state.target_params["critic"])
    after = jax.tree.map(lambda p, t: 0.005 * p + 0.995 * t, new.params["critic"], state.target_params["critic"])
    for a, b, c in zip(jax.tree.leaves(expected), jax.tree.leaves(new.target_params["critic"]), jax.tree.leaves(after)):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    assert any(not np.allclose(a, c, rtol=1e-6, atol=1e-7) for a, c in
               zip(jax.tree.leaves(expected), jax.tree.leaves(after)))  # the two rules differ here
    assert int(new.step) == 1 and dataclasses.asdict(new.config) == dataclasses.asdict(state.config)
