"""The baselines as the paper's public code ran them (github.com/seohongpark/fql, agents/ and main.py): each rule is
written out here in jnp, independently of fqlcore.agents, with inputs on which the rule fqlcore used before differs."""
import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fqlcore import data, nets, online
from fqlcore.agents import fawac, fql, ifql, iql, rebrac

OBS, ACT, B = 3, 2, 16


def make_batch(seed=0, action_dim=ACT):
    rng = np.random.default_rng(seed)
    return {"observations": jnp.asarray(rng.normal(size=(B, OBS)), jnp.float32),
            "actions": jnp.asarray(rng.uniform(-1, 1, (B, action_dim)), jnp.float32),
            "rewards": jnp.asarray(rng.normal(size=B), jnp.float32),
            "next_observations": jnp.asarray(rng.normal(size=(B, OBS)), jnp.float32),
            "next_actions": jnp.asarray(rng.uniform(-1, 1, (B, action_dim)), jnp.float32),
            "masks": jnp.asarray(rng.integers(0, 2, B), jnp.float32), "terminals": jnp.zeros(B)}


def make_state(agent, **overrides):
    """A small agent whose target networks differ from the online ones, as they do once training has started."""
    state = agent.init(jax.random.PRNGKey(0), make_batch(), agent.Config(hidden_dims=(8, 8), **overrides))
    return state.replace(target_params=jax.tree.map(lambda p: p + 0.1, state.target_params))


def last_dense(layers):
    """The output layer of an MLP's parameters (the highest-numbered Dense): ``layers`` as ``init`` gives them, or the
    dict of layers itself."""
    layers = layers.get("params", layers)
    return layers[max((k for k in layers if k.startswith("Dense_")), key=lambda k: int(k.split("_")[1]))]


def test_ifql_acts_with_the_candidate_whose_minimum_over_the_heads_is_largest():
    state = make_state(ifql, num_samples=16)
    # Head 1's output becomes -2 x head 0's: the mean of the heads is then -Q0 / 2 and its argmax picks the candidate
    # head 0 likes least, while the minimum picks the one nearest Q0 = 0. The two rules disagree.
    critic = jax.tree.map(lambda x: x, state.params["critic"])
    out = last_dense(critic["params"]["VmapMLP_0"])  # both heads' output layers, stacked on the first axis
    out["kernel"] = out["kernel"].at[1].set(-2 * out["kernel"][0])
    out["bias"] = jnp.zeros_like(out["bias"])
    state = state.replace(params={**state.params, "critic": critic})
    obs, key, n = make_batch(1)["observations"], jax.random.PRNGKey(5), 16

    field, q_net = nets.VelocityField((8, 8), ACT), nets.Critic((8, 8))
    repeated = jnp.repeat(obs[:, None], n, axis=1)
    x = jax.random.normal(key, (B, n, ACT))
    for i in range(10):  # the flow's 10 Euler steps at t = i / 10, then the clip
        x = x + field.apply(state.params["flow"], repeated, x, jnp.full((B, n, 1), i / 10)) / 10
    candidates = jnp.clip(x, -1, 1)
    q = q_net.apply(critic, repeated, candidates)  # (2, B, n)
    rows = jnp.arange(B)
    expected = candidates[rows, jnp.argmax(q.min(0), -1)]
    by_mean = candidates[rows, jnp.argmax(q.mean(0), -1)]
    assert not np.allclose(expected, by_mean), "the inputs must tell the two rules apart"
    np.testing.assert_allclose(ifql.act(state, obs, key), expected, rtol=1e-5, atol=1e-6)


def test_iql_policy_is_an_unsquashed_unit_gaussian_whose_output_layer_starts_at_scale_0_01():
    batch = make_batch(0, action_dim=8)
    state = iql.init(jax.random.PRNGKey(0), batch, iql.Config())  # the paper's 4 x 512
    names = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_leaves_with_path(state.params["actor"])]
    assert not any("log_std" in n or "LayerNorm" in n for n in names), "no learned std, no LayerNorm on the actor"
    kernel = last_dense(state.params["actor"])["kernel"]
    assert kernel.shape == (512, 8)
    # variance_scaling(0.01, "fan_avg", "uniform"): Var = 0.01 / ((fan_in + fan_out) / 2); Xavier would be 100x that.
    np.testing.assert_allclose(float(kernel.var()), 0.01 / ((512 + 8) / 2), rtol=0.1)
    # The mean is not squashed: an output-layer bias of 1.5 gives a mean of 1.5 (tanh would give 0.91), which the loss
    # sees unclipped and acting clips to 1.
    small = make_state(iql)
    actor = jax.tree.map(lambda x: x, small.params["actor"])
    last_dense(actor)["kernel"] = jnp.zeros_like(last_dense(actor)["kernel"])
    last_dense(actor)["bias"] = jnp.full((ACT,), 1.5)
    small = small.replace(params={**small.params, "actor": actor})
    batch = make_batch(2)
    _, metrics = iql.losses(small.params, small, batch, None)
    np.testing.assert_allclose(metrics["mse_to_data"], jnp.mean((1.5 - batch["actions"]) ** 2), rtol=1e-6)
    np.testing.assert_array_equal(iql.act(small, batch["observations"], None), jnp.ones((B, ACT)))


def iql_reference(state, batch):
    """The public code's IQL losses (agents/iql.py), written out."""
    c, p = state.config, state.params
    critic, value = nets.Critic(c.hidden_dims), nets.ValueFunction(c.hidden_dims)
    mean_net = nets.MLP(c.hidden_dims, ACT)
    s, a = batch["observations"], batch["actions"]
    v = value.apply(p["value"], s)
    diff = critic.apply(state.target_params["critic"], s, a).min(0) - v  # V's target: the TARGET critic's min
    value_loss = (jnp.where(diff >= 0, c.expectile, 1 - c.expectile) * diff**2).mean()
    y = batch["rewards"] + c.discount * batch["masks"] * value.apply(p["value"], batch["next_observations"])
    q1, q2 = critic.apply(p["critic"], s, a)
    critic_loss = ((q1 - y) ** 2 + (q2 - y) ** 2).mean()  # summed over the two heads
    advantage = jnp.minimum(q1, q2) - v  # the ONLINE critic's min
    weights = jnp.minimum(jnp.exp(c.alpha * advantage), 100.0)
    mu = mean_net.apply(p["actor"], s)
    log_prob = -0.5 * ((a - mu) ** 2).sum(-1) - 0.5 * ACT * math.log(2 * math.pi)  # N(mu, I)
    return {"value_loss": value_loss, "critic_loss": critic_loss, "actor_loss": -(weights * log_prob).mean()}, \
        advantage, weights


def test_iql_losses_match_the_public_code_written_out():
    """Online-critic advantages, exp(alpha * A) clipped at 100, a unit-Gaussian log-likelihood, critic heads summed."""
    state, batch = make_state(iql), make_batch(3)
    _, advantage, _ = iql_reference(state, batch)
    # An inverse temperature at which some weights hit the clip at 100 and others do not.
    state = state.replace(config=dataclasses.replace(state.config, alpha=1.5 * math.log(100) / float(advantage.max())))
    expected, _, weights = iql_reference(state, batch)
    assert 0 < int(jnp.sum(weights == 100.0)) < B
    _, metrics = iql.losses(state.params, state, batch, None)
    for name, value in expected.items():
        np.testing.assert_allclose(metrics[name], value, rtol=2e-5, atol=1e-6, err_msg=name)


def test_iql_evaluates_with_the_clipped_mean_and_explores_with_a_unit_gaussian_sample():
    state, obs, key = make_state(iql), make_batch(4)["observations"], jax.random.PRNGKey(9)
    mu = nets.MLP((8, 8), ACT).apply(state.params["actor"], obs)
    np.testing.assert_array_equal(iql.act(state, obs, key), jnp.clip(mu, -1, 1))
    np.testing.assert_allclose(iql.explore(state, obs, key), jnp.clip(mu + jax.random.normal(key, mu.shape), -1, 1),
                               rtol=1e-6)


def test_rebrac_actor_is_tanh_of_an_mlp_whose_output_layer_starts_at_scale_0_01():
    batch = make_batch(0, action_dim=8)
    state = rebrac.init(jax.random.PRNGKey(0), batch, rebrac.Config())
    names = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_leaves_with_path(state.params["actor"])]
    assert not any("LayerNorm" in n for n in names), "no LayerNorm on the actor"
    kernel = last_dense(state.params["actor"])["kernel"]
    np.testing.assert_allclose(float(kernel.var()), 0.01 / ((512 + 8) / 2), rtol=0.1)
    mlp = nets.MLP((512,) * 4, 8).apply(state.params["actor"], batch["observations"])
    np.testing.assert_allclose(rebrac.act(state, batch["observations"], None), jnp.tanh(mlp), rtol=1e-6)
    # The public code's defaults (agents/rebrac.py get_config); alpha_actor and alpha_critic are set per task.
    c = rebrac.Config()
    assert (c.actor_noise, c.actor_noise_clip, c.actor_freq) == (0.2, 0.5, 2)
    assert (c.tau, c.discount, c.lr) == (0.005, 0.99, 3e-4)
    assert (c.alpha_actor, c.alpha_critic, c.critic_layer_norm) == (0.0, 0.0, True)


def test_rebrac_losses_match_the_public_code_written_out():
    """Target actor + noise N(0, 0.2^2) clipped at 0.5, min of the target heads minus alpha_critic * sum of squares;
    the actor: -Q_min / mean|Q_min| + alpha_actor * sum of squares, averaged over the batch."""
    state, batch, key = make_state(rebrac, alpha_actor=0.3, alpha_critic=0.2), make_batch(5), jax.random.PRNGKey(4)
    c, p, tp = state.config, state.params, state.target_params
    actor, critic = nets.MLP((8, 8), ACT), nets.Critic((8, 8))
    s, a, s2 = batch["observations"], batch["actions"], batch["next_observations"]
    noise = jnp.clip(0.2 * jax.random.normal(key, a.shape), -0.5, 0.5)
    a2 = jnp.clip(jnp.tanh(actor.apply(tp["actor"], s2)) + noise, -1, 1)
    next_q = critic.apply(tp["critic"], s2, a2).min(0) - c.alpha_critic * ((a2 - batch["next_actions"]) ** 2).sum(-1)
    y = batch["rewards"] + c.discount * batch["masks"] * next_q
    critic_loss = ((critic.apply(p["critic"], s, a) - y) ** 2).mean()
    pi = jnp.tanh(actor.apply(p["actor"], s))
    q = critic.apply(p["critic"], s, pi).min(0)
    actor_loss = -(q / jnp.abs(q).mean()).mean() + (c.alpha_actor * ((pi - a) ** 2).sum(-1)).mean()
    _, metrics = rebrac.losses(p, state, batch, key, 1.0)
    np.testing.assert_allclose(metrics["critic_loss"], critic_loss, rtol=2e-5, atol=1e-6)
    np.testing.assert_allclose(metrics["actor_loss"], actor_loss, rtol=2e-5, atol=1e-6)


def test_rebrac_updates_the_actor_on_the_2nd_4th_and_later_even_updates():
    """The public loop counts updates from 1 and passes full_update = (i % actor_freq == 0): the first update trains
    the critic only and leaves the actor and the targets where they were."""
    state, batch = make_state(rebrac), make_batch(6)
    same = lambda x, y: all(jax.tree.leaves(jax.tree.map(lambda u, v: bool(jnp.all(u == v)), x, y)))
    first = rebrac.update(state, batch)[0]
    assert same(first.params["actor"], state.params["actor"]) and same(first.target_params, state.target_params)
    assert not same(first.params["critic"], state.params["critic"])
    second = rebrac.update(first, batch)[0]
    assert not same(second.params["actor"], first.params["actor"])
    assert not same(second.target_params["actor"], first.target_params["actor"])
    assert not same(second.target_params["critic"], first.target_params["critic"])


def test_fawac_weights_exp_of_alpha_times_the_online_critics_advantage():
    state, batch = make_state(fawac, alpha=3.0), make_batch(7)
    critic, value = nets.Critic((8, 8)), nets.ValueFunction((8, 8))
    s, a = batch["observations"], batch["actions"]
    advantage = critic.apply(state.params["critic"], s, a).min(0) - value.apply(state.params["value"], s)
    _, metrics = fawac.losses(state.params, state, batch, jax.random.PRNGKey(0))
    np.testing.assert_allclose(metrics["awr_weight_mean"], jnp.minimum(jnp.exp(3.0 * advantage), 100).mean(), rtol=1e-5)


@pytest.mark.parametrize("name", ["rebrac", "iql", "fql"])
def test_online_fine_tuning_explores_as_the_public_code(name):
    """main.py acts online with sample_actions(temperature=1): ReBRAC adds clip(N(0, 0.2^2), -0.5, 0.5) to its action
    and IQL samples N(mean, I), both then clipped to [-1, 1]; FQL's one-step policy is stochastic as it is."""
    agent = {"rebrac": rebrac, "iql": iql, "fql": fql}[name]
    rng = np.random.default_rng(0)
    n = 64
    obs = rng.normal(size=(n, OBS)).astype(np.float32)
    dataset = data.from_arrays(obs, rng.uniform(-1, 1, (n, ACT)), rng.normal(size=n), obs, np.ones(n), capacity=n + 1)
    state = agent.init(jax.random.PRNGKey(0), data.sample(dataset, jax.random.PRNGKey(1), 8),
                       agent.Config(hidden_dims=(8, 8)))
    transition = {"observations": obs[0], "actions": np.zeros(ACT, np.float32), "rewards": np.float32(0),
                  "next_observations": obs[1], "masks": np.float32(1), "terminals": np.float32(0)}
    key, next_obs = jax.random.PRNGKey(2), jnp.asarray(obs[1])
    new_state, _, _, _, action = online.make_step(agent, 8)(state, dataset, key, transition, next_obs)
    act_key = jax.random.split(key, 3)[2]
    if name == "fql":
        expected = fql.act(new_state, next_obs[None], act_key)[0]
    else:
        out = nets.MLP((8, 8), ACT).apply(new_state.params["actor"], next_obs[None])[0]
        noise = jax.random.normal(act_key, (1, ACT))[0]
        expected = jnp.clip(jnp.tanh(out) + jnp.clip(0.2 * noise, -0.5, 0.5), -1, 1) if name == "rebrac" else \
            jnp.clip(out + noise, -1, 1)
        assert not np.allclose(action, agent.act(new_state, next_obs[None], act_key)[0]), "not the evaluation action"
    np.testing.assert_allclose(action, expected, rtol=1e-5, atol=1e-6)
