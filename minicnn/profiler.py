"""Where the time of a training step goes: forward and backward time per layer, loss and optimizer.

``profile(model, x, y)`` runs a few full training steps (after one warm-up step that absorbs JIT compilation),
times each phase with ``time.perf_counter`` and reports medians, so that a learner sees which layer to optimise.
The steps are real: the weights change, as in training. They run whole, on one thread with BLAS on every core
(``minicnn.set_parallel('blas')``), so on several cores a model that ``minicnn.parallel`` cuts into slices of the
batch, or runs on one core, trains at another speed than the 'step' line says. Layers that training runs as one
step (a Conv2D(relu) and its MaxPooling2D(2): ``layers.fused``) are timed as one, on one line.
"""

from __future__ import annotations

import time

import numpy as np


def profile(model, x, y, batch_size: int = 32, steps: int = 10, print_fn=print) -> dict:
    """Median seconds per phase over ``steps`` training steps on the first ``batch_size`` samples.

    Returns ``{"layers": [(name, forward_s, backward_s), ...], "loss": s, "optimizer": s, "step": s}``.
    """
    model._require_compiled("profile")
    x, y = model._check_xy(x[:batch_size], y[:batch_size], "profile")
    xb, yb = model.backend.asarray(x, np.float32), model.backend.asarray(y, y.dtype)
    layers = model.layers
    # the steps of Sequential._forward and _forward_backward: the backward ones are the forward ones' tail
    forward_steps, backward_steps = model._steps(layers), model._steps(layers, model._first_trainable)
    first_back = len(forward_steps) - len(backward_steps)
    n = len(forward_steps)
    fwd, bwd = np.zeros((steps, n)), np.zeros((steps, n))
    loss_t, opt_t, step_t = np.zeros(steps), np.zeros(steps), np.zeros(steps)
    for s in range(-1, steps):  # s = -1: warm-up, not recorded
        t_step = time.perf_counter()
        for layer in layers:  # as Sequential._forward: the last pass's activations go first
            layer.cache = None
        out = xb
        for i, step in enumerate(forward_steps):
            t = time.perf_counter()
            out = step.forward(out, training=True)
            fwd[s, i] = time.perf_counter() - t
        t = time.perf_counter()
        last = layers[-1]
        if model._fused():
            _, dout = model.loss.forward_from_logits(last.logits, yb)
        else:
            _, dout = model.loss.forward(out, yb)
        loss_t[s] = time.perf_counter() - t
        for j in range(len(backward_steps) - 1, -1, -1):
            t = time.perf_counter()
            step = backward_steps[j]
            skip = step is last and model._fused()  # the loss gave dL/dz: as in Sequential._forward_backward
            dout = step.backward(dout, skip_activation=True) if skip else step.backward(dout)
            bwd[s, first_back + j] = time.perf_counter() - t
        t = time.perf_counter()
        model.optimizer.apply_gradients(model._trainable_items())
        opt_t[s] = time.perf_counter() - t
        step_t[s] = time.perf_counter() - t_step
    med = lambda a: float(np.median(a, axis=0)) if a.ndim == 1 else np.median(a, axis=0)
    result = {
        "layers": [
            (step.name, float(f), float(b)) for step, f, b in zip(forward_steps, med(fwd), med(bwd), strict=True)
        ],
        "loss": med(loss_t),
        "optimizer": med(opt_t),
        "step": med(step_t),
    }
    if print_fn:
        print_fn(format_profile(result, batch_size))
    return result


def format_profile(result: dict, batch_size: int) -> str:
    total = result["step"]
    rows = [(name, f, b) for name, f, b in result["layers"]]
    rows += [("loss", result["loss"], 0.0), ("optimizer", result["optimizer"], 0.0)]
    width = max(len(r[0]) for r in rows) + 2
    lines = [f"{'phase':<{width}}{'forward ms':>11}{'backward ms':>13}{'share':>8}"]
    for name, f, b in rows:
        lines.append(f"{name:<{width}}{f * 1e3:>11.2f}{b * 1e3:>13.2f}{(f + b) / total:>8.1%}")
    lines.append(f"{'step':<{width}}{total * 1e3:>11.2f} ms ({batch_size / total:,.0f} samples/s)")
    return "\n".join(lines)
