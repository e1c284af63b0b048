"""Keras's optimizers: ``SGD``, ``Adam``, ``AdamW``, ``RMSprop``, and ``get`` for ``compile(optimizer=...)``.

An optimizer walks ``(key, param, grad)`` triples, e.g. ``("conv2d/kernel", w, dw)``, and updates each ``param``
in place with the kernels of ``minicnn.kernels.updates`` (through ``self.backend``). What it remembers between
steps lives in ``state[key]``, a dict of arrays shaped like the parameter, created at the first step:

==========  =========================  ==========================================
optimizer   ``state[key]``             meaning
==========  =========================  ==========================================
SGD         ``{"velocity"}``           the momentum buffer (none when momentum=0)
Adam(W)     ``{"m", "v"}``             running means of ``g`` and ``g^2``
RMSprop     ``{"v"}``                  running mean of ``g^2``
==========  =========================  ==========================================

``get_state()`` flattens it to ``{"conv2d/kernel/m": array, ..., "iterations": array(t)}`` for the save file;
``set_state`` puts it back, so that training resumed from a file takes exactly the steps it would have taken.
"""

from __future__ import annotations

import numpy as np

from minicnn.backend import get_backend

__all__ = ["Optimizer", "SGD", "Adam", "AdamW", "RMSprop", "get"]


class Optimizer:
    """Base class: the learning rate, the step counter and the per-parameter state."""

    slots: tuple[str, ...] = ()  # the state arrays kept per parameter

    def __init__(self, learning_rate: float, name: str | None = None):
        self.learning_rate = _check_range(self, "learning_rate", learning_rate, 0.0)
        self.name = name or type(self).__name__.lower()
        self.iterations = 0
        self.state: dict[str, dict] = {}
        self._unchecked: set[str] = set()  # keys restored by set_state, not yet seen next to their parameter
        self.backend = get_backend()

    def apply_gradients(self, items) -> None:
        """One step: update every ``param`` of ``items = [(key, param, grad), ...]`` in place."""
        self.iterations += 1
        for key, p, g in items:
            state = self.state.get(key)
            if state is None:
                state = self.state[key] = {s: self.backend.zeros(p.shape, p.dtype) for s in self.slots}
            elif key in self._unchecked:
                self._check_restored(key, p)
            self.update(p, g, state)

    def update(self, p, g, state: dict) -> None:
        raise NotImplementedError

    # ------------------------------------------------------------------------------------------------ saving
    def get_state(self) -> dict[str, np.ndarray]:
        """``{"<key>/<slot>": host copy, ..., "iterations": np.array(t)}``."""
        flat = {"iterations": np.array(self.iterations, dtype=np.int64)}
        for key, state in self.state.items():
            for slot, a in state.items():
                flat[f"{key}/{slot}"] = np.array(self.backend.to_numpy(a))  # a copy: later steps must not change it
        return flat

    def set_state(self, flat: dict) -> None:
        """Restore what ``get_state`` returned (replacing the current state)."""
        who = f"{type(self).__name__}.set_state"
        if "iterations" not in flat:
            raise ValueError(f"{who}: the state has no 'iterations' entry; got keys {sorted(flat)}")
        state: dict[str, dict] = {}
        for name, a in flat.items():
            if name == "iterations":
                continue
            key, _, slot = name.rpartition("/")
            if slot not in self.slots or not key:
                raise ValueError(
                    f"{who}: unexpected entry {name!r}; this optimizer keeps "
                    f"{', '.join(repr('<key>/' + s) for s in self.slots) or 'no per-parameter state'}"
                )
            a = np.asarray(a)
            old = self.state.get(key, {}).get(slot)
            if old is not None and tuple(old.shape) != a.shape:
                raise ValueError(
                    f"{who}: {name!r} has shape {a.shape}, but the parameter '{key}' has shape {tuple(old.shape)}"
                )
            state.setdefault(key, {})[slot] = self.backend.asarray(np.array(a), a.dtype)
        for key, slots in state.items():
            if set(slots) != set(self.slots):
                raise ValueError(f"{who}: '{key}' needs entries for {list(self.slots)}; got {sorted(slots)}")
        self.iterations = int(np.asarray(flat["iterations"]))
        self.state = state
        self._unchecked = set(state)

    def _check_restored(self, key, p) -> None:
        for slot, a in self.state[key].items():
            if tuple(a.shape) != tuple(p.shape):
                raise ValueError(
                    f"{type(self).__name__}: the restored state '{key}/{slot}' has shape {tuple(a.shape)}, but the "
                    f"parameter '{key}' has shape {tuple(p.shape)}: was the state saved from another model?"
                )
            if a.dtype != p.dtype:
                self.state[key][slot] = self.backend.asarray(self.backend.to_numpy(a), p.dtype)
        self._unchecked.discard(key)

    def to_backend(self, backend) -> None:
        """Move the state arrays to ``backend`` (as ``Layer.to_backend`` does for parameters)."""
        host = {k: {s: self.backend.to_numpy(a) for s, a in st.items()} for k, st in self.state.items()}
        self.backend = backend
        self.state = {k: {s: backend.asarray(a, a.dtype) for s, a in st.items()} for k, st in host.items()}

    # ------------------------------------------------------------------------------------------------ config
    def get_config(self) -> dict:
        return {"name": self.name, "learning_rate": self.learning_rate}

    @classmethod
    def from_config(cls, config: dict) -> Optimizer:
        return cls(**config)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items() if k != "name")
        return f"{type(self).__name__}({args})"


def _check_range(opt, arg, value, low, high=None, high_open=False) -> float:
    """``float(value)``, after checking that it lies in ``[low, high]`` (``[low, high)`` if ``high_open``)."""
    value = float(value)
    below_high = high is None or (value < high if high_open else value <= high)
    if not (value >= low and below_high):
        interval = f"[{low}, " + ("inf)" if high is None else f"{high})" if high_open else f"{high}]")
        raise ValueError(f"{type(opt).__name__}: {arg} must be in {interval}; got {value}")
    return value


class SGD(Optimizer):
    """Stochastic gradient descent, with optional (Nesterov) momentum.

    ``v = momentum v - lr g``;  ``p += v``  (Nesterov: ``p += momentum v - lr g``);  momentum 0: ``p -= lr g``
    """

    def __init__(self, learning_rate=0.01, momentum=0.0, nesterov=False, name=None):
        super().__init__(learning_rate, name or "SGD")
        self.momentum = _check_range(self, "momentum", momentum, 0.0, 1.0)
        self.nesterov = bool(nesterov)
        self.slots = ("velocity",) if self.momentum != 0 else ()

    def update(self, p, g, state):
        self.backend.sgd_update(p, g, state.get("velocity"), self.learning_rate, self.momentum, self.nesterov)

    def get_config(self):
        return {**super().get_config(), "momentum": self.momentum, "nesterov": self.nesterov}


class Adam(Optimizer):
    """Adam (Kingma & Ba), with Keras's placement of epsilon (outside the bias correction):

    ``m += (g - m)(1 - beta_1)``;  ``v += (g^2 - v)(1 - beta_2)``;
    ``p -= lr sqrt(1 - beta_2^t) / (1 - beta_1^t) * m / (sqrt(v) + epsilon)``
    """

    slots = ("m", "v")

    def __init__(self, learning_rate=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-7, name=None):
        super().__init__(learning_rate, name)
        self.beta_1 = _check_range(self, "beta_1", beta_1, 0.0, 1.0, high_open=True)
        self.beta_2 = _check_range(self, "beta_2", beta_2, 0.0, 1.0, high_open=True)
        self.epsilon = _check_range(self, "epsilon", epsilon, 0.0)
        self.weight_decay = 0.0

    def update(self, p, g, state):
        self.backend.adam_update(
            p,
            g,
            state["m"],
            state["v"],
            self.learning_rate,
            self.beta_1,
            self.beta_2,
            self.epsilon,
            self.iterations,
            self.weight_decay,
        )

    def get_config(self):
        return {**super().get_config(), "beta_1": self.beta_1, "beta_2": self.beta_2, "epsilon": self.epsilon}


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter): before each Adam step, ``p -= lr weight_decay p``.
    Unlike an L2 term in the loss, the decay does not pass through ``m`` and ``v``, so it is not rescaled."""

    def __init__(self, learning_rate=0.001, weight_decay=0.004, beta_1=0.9, beta_2=0.999, epsilon=1e-7, name=None):
        super().__init__(learning_rate, beta_1, beta_2, epsilon, name)
        self.weight_decay = _check_range(self, "weight_decay", weight_decay, 0.0)

    def get_config(self):
        return {**super().get_config(), "weight_decay": self.weight_decay}


class RMSprop(Optimizer):
    """RMSprop (Hinton), as Keras 3 computes it (no momentum, not centred):

    ``v = rho v + (1 - rho) g^2``;  ``p -= lr g / sqrt(v + epsilon)``
    """

    slots = ("v",)

    def __init__(self, learning_rate=0.001, rho=0.9, epsilon=1e-7, name=None):
        super().__init__(learning_rate, name)
        self.rho = _check_range(self, "rho", rho, 0.0, 1.0)
        self.epsilon = _check_range(self, "epsilon", epsilon, 0.0)

    def update(self, p, g, state):
        self.backend.rmsprop_update(p, g, state["v"], self.learning_rate, self.rho, self.epsilon)

    def get_config(self):
        return {**super().get_config(), "rho": self.rho, "epsilon": self.epsilon}


# ---------------------------------------------------------------------------------------------------- get
_CLASSES = {c.__name__.lower(): c for c in (SGD, Adam, AdamW, RMSprop)}


def get(identifier) -> Optimizer:
    """An Optimizer from an Optimizer (returned as is), an Optimizer class, a name ('sgd', 'adam', 'adamw',
    'rmsprop', any case) or a config dict ``{"class_name": ..., "config": ...}``."""
    if isinstance(identifier, Optimizer):
        return identifier
    if isinstance(identifier, type) and issubclass(identifier, Optimizer):
        return identifier()
    if isinstance(identifier, str) and identifier.lower() in _CLASSES:
        return _CLASSES[identifier.lower()]()
    if isinstance(identifier, dict) and str(identifier.get("class_name", "")).lower() in _CLASSES:
        return _CLASSES[identifier["class_name"].lower()].from_config(identifier.get("config", {}))
    raise ValueError(
        f"unknown optimizer {identifier!r}; choose one of {', '.join(map(repr, _CLASSES))}, "
        "an Optimizer instance or a config dict"
    )
