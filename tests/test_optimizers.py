"""Optimizers: each Numba step equals its NumPy twin, the classes keep and restore state, torch.optim is gold."""

import math
import os

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minicnn import optimizers
from minicnn.kernels import updates
from minicnn.testing import relative_error

TOL = 1e-5


def import_torch():
    """``torch``, or a skip for users without it; in CI (``CI`` set) a missing torch is a failure, not a skip."""
    if os.environ.get("CI", "").lower() not in ("", "0", "false"):
        import torch

        return torch
    return pytest.importorskip("torch", reason="the PyTorch comparisons need torch: pip install 'minicnn[bench]'")


# Each rule as (fast, reference, number of state arrays, hyper-parameters after the state).
RULES = {
    "sgd": (updates.sgd_update, updates.sgd_update_reference, 0, (0.1, 0.0, False)),
    "momentum": (updates.sgd_update, updates.sgd_update_reference, 1, (0.1, 0.9, False)),
    "nesterov": (updates.sgd_update, updates.sgd_update_reference, 1, (0.1, 0.9, True)),
    "adam": (updates.adam_update, updates.adam_update_reference, 2, (0.01, 0.9, 0.999, 1e-7, 3, 0.0)),
    "adamw": (updates.adam_update, updates.adam_update_reference, 2, (0.01, 0.9, 0.999, 1e-7, 7, 0.05)),
    "rmsprop": (updates.rmsprop_update, updates.rmsprop_update_reference, 1, (0.01, 0.9, 1e-7)),
}


def run_rule(rule, fn, shape, dtype, seed):
    """Apply one step of ``fn`` to fresh random arrays; return them (param first, then state)."""
    _, _, n_state, hyper = RULES[rule]
    rng = np.random.default_rng(seed)
    p, g = rng.standard_normal(shape).astype(dtype), rng.standard_normal(shape).astype(dtype)
    state = [np.abs(rng.standard_normal(shape)).astype(dtype) for _ in range(n_state)]
    if rule == "sgd":
        fn(p, g, None, *hyper)
    else:
        fn(p, g, *state, *hyper)
    return [p, *state]


@pytest.mark.parametrize("rule", RULES)
@settings(max_examples=15, deadline=None)
@given(shape=st.lists(st.integers(1, 7), min_size=1, max_size=4), seed=st.integers(0, 2**32 - 1))
def test_fast_update_equals_reference(rule, shape, seed):
    fast, reference = RULES[rule][:2]
    for dtype, tol in ((np.float32, TOL), (np.float64, 1e-12)):
        got = run_rule(rule, fast, shape, dtype, seed)
        expected = run_rule(rule, reference, shape, dtype, seed)
        for a, b in zip(got, expected, strict=True):
            assert a.dtype == dtype
            assert relative_error(a, b) < tol


@pytest.mark.parametrize("rule", RULES)
def test_fast_update_equals_reference_on_long_arrays(rule):
    # Long enough for the compiled loops' SIMD body and an odd remainder; Adam's and RMSprop's loops divide, and
    # only NumPy's error model (no zero-divisor check per element) lets the compiler vectorise them.
    fast, reference = RULES[rule][:2]
    got, expected = (run_rule(rule, f, (4099,), np.float32, 3) for f in (fast, reference))
    for a, b in zip(got, expected, strict=True):
        assert relative_error(a, b) < TOL
    assert updates._adam.targetoptions["error_model"] == "numpy"
    assert updates._rmsprop.targetoptions["error_model"] == "numpy"


def subnormal(a):
    return (a != 0) & (np.abs(a) < np.finfo(a.dtype).tiny)


STATEFUL = [rule for rule in RULES if RULES[rule][2]]


@pytest.mark.parametrize("rule", STATEFUL)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_state_of_a_zero_gradient_goes_to_zero_not_subnormal(rule, dtype):
    # A weight whose gradient stays zero (a dead unit's) has state that decays step after step. NumPy's formulas
    # take it into the subnormal numbers, 100x slower on x86, and it stays there; the fast loops flush it to zero.
    fast, reference, n_state, hyper = RULES[rule]
    rng = np.random.default_rng(0)
    p, g = rng.standard_normal(33).astype(dtype), np.zeros(33, dtype)
    start = [np.full(33, 100 * np.finfo(dtype).tiny, dtype) for _ in range(n_state)]  # a few steps from subnormal
    ours, theirs = (p.copy(), *(s.copy() for s in start)), (p.copy(), *(s.copy() for s in start))
    for _ in range(5000):  # Adam's v decays slowest: by 0.999 a step, 4,600 steps from 100x the smallest normal
        fast(ours[0], g, *ours[1:], *hyper)
        reference(theirs[0], g, *theirs[1:], *hyper)
    assert all(subnormal(s).any() for s in theirs[1:])  # the trap
    assert all(not subnormal(s).any() and not s.any() for s in ours[1:])  # flushed: exactly zero
    assert relative_error(ours[0], theirs[0]) < TOL  # and the weights are what the formulas give


@pytest.mark.parametrize("rule", STATEFUL)
def test_a_nan_gradient_still_reaches_the_weight_and_state(rule):
    fast, _, n_state, hyper = RULES[rule]
    p, g = np.ones(40, np.float32), np.full(40, 1e-3, np.float32)
    g[17] = np.nan
    state = [np.zeros(40, np.float32) for _ in range(n_state)]
    fast(p, g, *state, *hyper)
    for a in (p, *state):
        assert np.isnan(a[17]) and not np.isnan(np.delete(a, 17)).any()


def test_non_contiguous_arrays_are_refused():
    p = np.zeros((4, 6), dtype=np.float32)[:, ::2]  # a copy would be updated, not p
    with pytest.raises(ValueError, match="C-contiguous"):
        updates.sgd_update(p, np.ones_like(p), None, 0.1, 0.0, False)


# ---------------------------------------------------------------------------------------------------- classes
def make_params(seed=0, dtype=np.float32):
    rng = np.random.default_rng(seed)
    return {"conv2d/kernel": rng.standard_normal((3, 3, 2, 4)).astype(dtype), "conv2d/bias": np.zeros(4, dtype)}


def grads_for(step, params, dtype=np.float32):
    rng = np.random.default_rng(100 + step)
    return {k: rng.standard_normal(p.shape).astype(dtype) for k, p in params.items()}


def train(opt, params, steps, first=0):
    for step in range(first, first + steps):
        g = grads_for(step, params)
        opt.apply_gradients((k, params[k], g[k]) for k in params)


OPTIMIZERS = {
    "sgd": lambda: optimizers.SGD(0.1),
    "momentum": lambda: optimizers.SGD(0.1, momentum=0.9, nesterov=True),
    "adam": lambda: optimizers.Adam(0.01),
    "adamw": lambda: optimizers.AdamW(0.01, weight_decay=0.1),
    "rmsprop": lambda: optimizers.RMSprop(0.01),
}


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_apply_gradients_updates_in_place_and_keeps_state(name):
    opt, params = OPTIMIZERS[name](), make_params()
    before = {k: p.copy() for k, p in params.items()}
    arrays = dict(params)
    train(opt, params, 2)
    assert opt.iterations == 2
    for k in params:
        assert params[k] is arrays[k] and not np.array_equal(params[k], before[k])
        assert set(opt.state[k]) == set(opt.slots)
        assert all(a.shape == params[k].shape and a.dtype == np.float32 for a in opt.state[k].values())


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_save_load_continue_is_identical_to_not_stopping(name):
    straight, params = OPTIMIZERS[name](), make_params()
    train(straight, params, 5)

    first, saved_params = OPTIMIZERS[name](), make_params()
    train(first, saved_params, 3)
    saved = first.get_state()
    saved_params = {k: p.copy() for k, p in saved_params.items()}
    train(first, make_params(), 1, first=3)  # the saved state is a copy: later steps must not change it
    assert int(saved["iterations"]) == 3

    resumed = OPTIMIZERS[name]()
    resumed.set_state(saved)
    train(resumed, saved_params, 2, first=3)
    assert resumed.iterations == straight.iterations == 5
    for k in params:
        np.testing.assert_array_equal(saved_params[k], params[k])
    assert resumed.get_state().keys() == straight.get_state().keys()


def test_set_state_errors():
    opt, params = optimizers.Adam(), make_params()
    train(opt, params, 1)
    state = opt.get_state()
    with pytest.raises(ValueError, match="no 'iterations'"):
        opt.set_state({k: v for k, v in state.items() if k != "iterations"})
    with pytest.raises(ValueError, match=r"'conv2d/bias/m' has shape \(5,\).*shape \(4,\)"):
        opt.set_state({**state, "conv2d/bias/m": np.zeros(5, np.float32)})
    with pytest.raises(ValueError, match="unexpected entry 'conv2d/bias/velocity'"):
        opt.set_state({**state, "conv2d/bias/velocity": np.zeros(4, np.float32)})
    with pytest.raises(ValueError, match=r"'conv2d/bias' needs entries for \['m', 'v'\]"):
        opt.set_state({k: v for k, v in state.items() if k != "conv2d/bias/v"})

    fresh = optimizers.Adam()  # no state yet: the shape is checked when the parameter first comes by
    fresh.set_state({**state, "conv2d/bias/m": np.zeros(5, np.float32), "conv2d/bias/v": np.zeros(5, np.float32)})
    with pytest.raises(ValueError, match="restored state 'conv2d/bias/m' has shape"):
        train(fresh, params, 1)


def test_learning_rate_is_read_at_every_step():
    opt, p = optimizers.SGD(0.1), np.ones(3, np.float32)
    opt.apply_gradients([("w", p, np.ones(3, np.float32))])
    opt.learning_rate = 0.5  # as a callback (ReduceLROnPlateau, a schedule) does
    opt.apply_gradients([("w", p, np.ones(3, np.float32))])
    np.testing.assert_allclose(p, 1 - 0.1 - 0.5)


@pytest.mark.parametrize(
    "identifier, cls",
    [("sgd", optimizers.SGD), ("Adam", optimizers.Adam), ("adamw", optimizers.AdamW), ("rmsprop", optimizers.RMSprop)],
)
def test_get_and_config_round_trip(identifier, cls):
    opt = optimizers.get(identifier)
    assert type(opt) is cls and optimizers.get(opt) is opt
    again = optimizers.get({"class_name": cls.__name__, "config": opt.get_config()})
    assert type(again) is cls and again.get_config() == opt.get_config()


def test_keras_defaults_and_bad_arguments():
    assert optimizers.SGD().get_config() == {"name": "SGD", "learning_rate": 0.01, "momentum": 0.0, "nesterov": False}
    assert optimizers.AdamW().weight_decay == 0.004 and optimizers.Adam().epsilon == 1e-7
    assert optimizers.RMSprop().rho == 0.9
    with pytest.raises(ValueError, match=r"SGD: momentum must be in \[0.0, 1.0\]; got 1.5"):
        optimizers.SGD(momentum=1.5)
    with pytest.raises(ValueError, match=r"Adam: beta_1 must be in \[0.0, 1.0\)"):
        optimizers.Adam(beta_1=1.0)
    with pytest.raises(ValueError, match="unknown optimizer 'adagrad'"):
        optimizers.get("adagrad")


# ---------------------------------------------------------------------------------------------------- PyTorch
# The same maths in torch.optim, hyper-parameter for hyper-parameter:
# * SGD: torch keeps b = mu b + g and steps p -= lr b (Nesterov: p -= lr (g + mu b)); Keras keeps v = mu v - lr g,
#   which is -lr b at every step while lr is constant. dampening=0.
# * Adam(W): torch divides by sqrt(v) / sqrt(1 - beta_2^t) + eps, Keras by sqrt(v) + eps after folding
#   sqrt(1 - beta_2^t) into lr_t; equal when eps_torch = eps / sqrt(1 - beta_2^t), so it is set before every step.
#   AdamW's decay is p *= 1 - lr wd first in both.
# * RMSprop: torch's alpha is Keras's rho. Keras 3 divides by sqrt(v + eps), torch by sqrt(v) + eps: no eps
#   makes these equal, so both use eps = 0 here (the gradients stay away from 0).
TORCH_CASES = {
    "sgd": (dict(learning_rate=0.1), "SGD", dict(lr=0.1)),
    "momentum": (dict(learning_rate=0.1, momentum=0.9), "SGD", dict(lr=0.1, momentum=0.9)),
    "nesterov": (
        dict(learning_rate=0.1, momentum=0.9, nesterov=True),
        "SGD",
        dict(lr=0.1, momentum=0.9, nesterov=True),
    ),
    "adam": (dict(learning_rate=0.01, beta_1=0.8, beta_2=0.99), "Adam", dict(lr=0.01, betas=(0.8, 0.99))),
    "adamw": (
        dict(learning_rate=0.01, weight_decay=0.1, beta_1=0.8, beta_2=0.99),
        "AdamW",
        dict(lr=0.01, weight_decay=0.1, betas=(0.8, 0.99)),
    ),
    "rmsprop": (dict(learning_rate=0.01, rho=0.8, epsilon=0.0), "RMSprop", dict(lr=0.01, alpha=0.8, eps=0.0)),
}


@pytest.mark.torch
@pytest.mark.parametrize("steps", [1, 5])
@pytest.mark.parametrize("case", TORCH_CASES)
def test_matches_torch_optim(case, steps):
    torch = import_torch()
    ours_kwargs, torch_name, torch_kwargs = TORCH_CASES[case]
    ours = optimizers.get({"class_name": torch_name, "config": ours_kwargs})
    params = make_params(dtype=np.float64)
    tparams = {k: torch.tensor(p.copy(), requires_grad=True) for k, p in params.items()}
    topt = getattr(torch.optim, torch_name)(list(tparams.values()), **torch_kwargs)
    rng = np.random.default_rng(7)
    for t in range(1, steps + 1):
        grads = {k: rng.choice([-1, 1], p.shape) * rng.uniform(0.1, 2.0, p.shape) for k, p in params.items()}
        ours.apply_gradients((k, params[k], grads[k]) for k in params)
        for k, tp in tparams.items():
            tp.grad = torch.tensor(grads[k])
        if torch_name.startswith("Adam"):
            topt.param_groups[0]["eps"] = ours.epsilon / math.sqrt(1 - ours.beta_2**t)
        topt.step()
    for k in params:
        assert relative_error(params[k], tparams[k].detach().numpy()) < 1e-12
