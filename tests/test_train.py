"""The training loop: scan equals a Python loop, vmap equals separate runs, resume equals no interruption."""
import jax
import numpy as np
import pytest

from fqlcore import data, toy, train
from fqlcore.agents import bc, fql

SMALL = fql.Config(hidden_dims=(16, 16), alpha=1.0)


@pytest.fixture(scope="module")
def dataset():
    return toy.bandit_dataset(2_000, seed=1)


def assert_trees_equal(a, b, exact=False):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        if exact:
            np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
        else:
            np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-5, atol=1e-6)


def test_k_scanned_updates_equal_k_single_updates_with_the_same_keys(dataset):
    states, keys = train.init_seeds(fql, SMALL, dataset, seeds=1, batch_size=32)
    state, key = train.seed_slice(states, 0), keys[0]
    scanned, scanned_key, _ = jax.jit(train.make_chunk(fql, 32, 5))(state, key, dataset)
    update = jax.jit(fql.update)
    for _ in range(5):
        key, batch_key = jax.random.split(key)
        state, _ = update(state, data.sample(dataset, batch_key, 32))
    np.testing.assert_array_equal(scanned_key, key)
    assert_trees_equal(scanned, state)
    assert int(scanned.step) == 5


def test_n_vmapped_seeds_equal_n_separate_runs(dataset):
    states, keys = train.init_seeds(fql, SMALL, dataset, seeds=3, batch_size=32)
    chunk = train.make_chunk(fql, 32, 4)
    together, _, metrics = jax.jit(jax.vmap(chunk, in_axes=(0, 0, None)))(states, keys, dataset)
    for i in range(3):
        alone, _, alone_metrics = jax.jit(chunk)(train.seed_slice(states, i), keys[i], dataset)
        assert_trees_equal(train.seed_slice(together, i), alone)
        np.testing.assert_allclose(metrics["critic_loss"][i], alone_metrics["critic_loss"], rtol=1e-5)
    assert not np.allclose(metrics["critic_loss"][0], metrics["critic_loss"][1]), "seeds must differ"


def test_a_resumed_run_ends_bitwise_equal_to_an_uninterrupted_one(dataset, tmp_path):
    kwargs = dict(seeds=2, batch_size=32, chunk_size=10, progress=False)
    whole = train.train(fql, SMALL, dataset, 40, checkpoint_dir=str(tmp_path / "whole"), **kwargs)

    def interrupt_at_20(state, seed, calls=[]):
        calls.append(1)
        if len(calls) > 4:  # evaluations at steps 0 and 10 (2 seeds each) pass, the one at 20 is "Ctrl-C"
            raise KeyboardInterrupt
        return {"calls": float(len(calls))}

    resumed_dir = str(tmp_path / "resumed")
    with pytest.raises(KeyboardInterrupt):
        train.train(fql, SMALL, dataset, 40, checkpoint_dir=resumed_dir, evaluate=interrupt_at_20, eval_every=10, **kwargs)
    _, _, step, _, _ = train.load_checkpoint(resumed_dir, whole.states, SMALL)
    assert step == 10, "the last chunk whose evaluations finished is kept"
    resumed = train.train(fql, SMALL, dataset, 40, checkpoint_dir=resumed_dir, **kwargs)
    assert_trees_equal(resumed.states, whole.states, exact=True)
    assert resumed.metric("critic_loss", 1)[1].tolist() == whole.metric("critic_loss", 1)[1].tolist()


def param_sum(state, seed):
    """A stand-in evaluation: a number that only the evaluated state decides."""
    return {"score": float(sum(np.sum(np.asarray(x)) for x in jax.tree.leaves(state.params)))}


def test_evaluations_in_the_background_give_the_history_of_inline_ones(dataset, tmp_path):
    import concurrent.futures
    import time
    kwargs = dict(seeds=2, batch_size=32, chunk_size=10, progress=False, eval_every=10)
    inline = train.train(fql, SMALL, dataset, 30, evaluate=param_sum, **kwargs)
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        def slow(state, seed):  # finishes after the next chunks have trained
            return pool.submit(lambda: (time.sleep(0.3), param_sum(state, seed))[1])
        background = train.train(fql, SMALL, dataset, 30, evaluate=slow, checkpoint_dir=str(tmp_path), **kwargs)
    for seed in range(2):
        steps, scores = background.metric("score", seed)
        assert steps.tolist() == [0, 10, 20, 30]
        assert scores.tolist() == inline.metric("score", seed)[1].tolist()
    assert train.load_checkpoint(str(tmp_path), background.states, SMALL)[4] == {}, "nothing left pending"


def test_a_run_stopped_while_evaluating_evaluates_that_state_again_when_resumed(dataset, tmp_path):
    import concurrent.futures
    kwargs = dict(seeds=2, batch_size=32, chunk_size=10, progress=False, eval_every=10)
    inline = train.train(fql, SMALL, dataset, 30, evaluate=param_sum, **kwargs)

    def never_done_then_stop(state, seed):
        if int(state.step) == 20:
            raise KeyboardInterrupt  # Ctrl-C while the evaluations of steps 0 and 10 are still running
        return concurrent.futures.Future()  # never finishes

    with pytest.raises(KeyboardInterrupt):
        train.train(fql, SMALL, dataset, 30, evaluate=never_done_then_stop, checkpoint_dir=str(tmp_path), **kwargs)
    _, _, step, _, pending = train.load_checkpoint(str(tmp_path), inline.states, SMALL)
    assert step == 10 and sorted(pending) == [0, 10], "the states of unfinished evaluations are kept"
    resumed = train.train(fql, SMALL, dataset, 30, evaluate=param_sum, checkpoint_dir=str(tmp_path), **kwargs)
    for seed in range(2):
        assert resumed.metric("score", seed)[1].tolist() == inline.metric("score", seed)[1].tolist()
    assert_trees_equal(resumed.states, inline.states, exact=True)


def test_resuming_with_another_config_is_refused(dataset, tmp_path):
    train.train(fql, SMALL, dataset, 10, batch_size=32, chunk_size=10, checkpoint_dir=str(tmp_path), progress=False)
    other = fql.Config(hidden_dims=(16, 16), alpha=2.0)
    with pytest.raises(ValueError, match="another config"):
        train.train(fql, other, dataset, 20, batch_size=32, chunk_size=10, checkpoint_dir=str(tmp_path), progress=False)


def test_checkpoints_hold_no_pickle(dataset, tmp_path):
    train.train(fql, SMALL, dataset, 10, batch_size=32, chunk_size=10, checkpoint_dir=str(tmp_path), progress=False)
    with np.load(tmp_path / train.CHECKPOINT, allow_pickle=False) as f:
        assert all(f[k].dtype != object for k in f.files)


def test_a_nan_loss_stops_training_with_a_clear_message(tmp_path):
    n = 64
    huge = data.from_arrays(np.zeros((n, 1)), np.zeros((n, 1)), np.full(n, 1e38), np.zeros((n, 1)), np.ones(n))
    with pytest.raises(FloatingPointError, match="diverged.*critic_loss.*learning rate"):
        train.train(fql, SMALL, huge, 20, batch_size=8, chunk_size=10, progress=False)


def test_evaluation_runs_at_step_zero_and_every_eval_every(dataset):
    result = train.train(bc, bc.Config(hidden_dims=(8,)), dataset, 30, batch_size=16, chunk_size=7, eval_every=15,
                         evaluate=lambda state, seed: {"score": float(state.step)}, progress=False)
    steps, scores = result.metric("score")
    assert steps.tolist() == [0, 15, 30] and scores.tolist() == [0, 15, 30]


def test_fql_improves_on_flow_bc_on_the_multimodal_bandit():
    """The book's central claim at toy scale: same data, same flow, plus a critic and one-step distillation."""
    dataset = toy.bandit_dataset(10_000)
    flow_bc = train.train(bc, bc.Config(hidden_dims=(128, 128)), dataset, 3000, chunk_size=1000, progress=False)
    agent = train.train(fql, fql.Config(hidden_dims=(128, 128), alpha=0.3), dataset, 3000, chunk_size=1000,
                        progress=False)
    key = jax.random.PRNGKey(0)
    bc_return = toy.bandit_return(lambda o, k: bc.act(flow_bc.state(0), o, k), key)
    fql_return = toy.bandit_return(lambda o, k: fql.act(agent.state(0), o, k), key)
    assert fql_return > bc_return + 0.15, (fql_return, bc_return)
