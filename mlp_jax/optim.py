"""Optax optimiser and learning-rate schedule from an :class:`OptimConfig`."""

from __future__ import annotations

from dataclasses import replace

import optax

from mlp_jax.config import OptimConfig


def schedule(cfg: OptimConfig, steps_per_epoch: int, epochs: int) -> optax.Schedule:
    """Learning rate as a function of the optimiser step."""
    if cfg.schedule == "constant":
        return optax.constant_schedule(cfg.learning_rate)
    total = max(steps_per_epoch * epochs, 1)
    warmup = min(steps_per_epoch * cfg.warmup_epochs, total - 1)
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0, peak_value=cfg.learning_rate, warmup_steps=warmup, decay_steps=total, end_value=0.0
    )


def make(cfg: OptimConfig, steps_per_epoch: int, epochs: int) -> optax.GradientTransformation:
    """The optimiser: optional clipping, then adam / adamw / sgd(momentum) on the schedule."""
    lr = schedule(cfg, steps_per_epoch, epochs)
    if cfg.name == "adamw":
        core = optax.adamw(lr, weight_decay=cfg.weight_decay)
    elif cfg.name == "adam":
        core = optax.adam(lr)
    elif cfg.name == "sgd":
        core = optax.sgd(lr, momentum=cfg.momentum or None, nesterov=False)
    else:  # validated by config, kept for a clear message if called directly
        raise ValueError(f"unknown optimiser {cfg.name!r}")
    parts = []
    if cfg.grad_clip_norm > 0:
        parts.append(optax.clip_by_global_norm(cfg.grad_clip_norm))
    if cfg.weight_decay > 0 and cfg.name != "adamw":
        parts.append(optax.add_decayed_weights(cfg.weight_decay))
    return optax.chain(*parts, core) if parts else core


def make_injectable(
    cfg: OptimConfig, steps_per_epoch: int, epochs: int, decay: bool | None = None
) -> optax.GradientTransformation:
    """:func:`make` with ``learning_rate`` and ``weight_decay`` held in the optimiser state.

    ``state.hyperparams["learning_rate"]`` (the peak of the schedule) and
    ``["weight_decay"]`` are arrays, so stacked states give each sweep member its own
    values inside one program. ``decay``: include the decay term even when
    ``cfg.weight_decay`` is 0 (a member may set its own); 0 leaves the update unchanged.
    """
    unit = None if cfg.schedule == "constant" else schedule(replace(cfg, learning_rate=1.0), steps_per_epoch, epochs)
    decay = cfg.weight_decay > 0 if decay is None else decay

    def factory(learning_rate: float, weight_decay: float) -> optax.GradientTransformation:
        lr = learning_rate if unit is None else (lambda count: learning_rate * unit(count))
        if cfg.name == "adamw":
            core = optax.adamw(lr, weight_decay=weight_decay)
        elif cfg.name == "adam":
            core = optax.adam(lr)
        elif cfg.name == "sgd":
            core = optax.sgd(lr, momentum=cfg.momentum or None, nesterov=False)
        else:
            raise ValueError(f"unknown optimiser {cfg.name!r}")
        parts = []
        if cfg.grad_clip_norm > 0:
            parts.append(optax.clip_by_global_norm(cfg.grad_clip_norm))
        if decay and cfg.name != "adamw":
            parts.append(optax.add_decayed_weights(weight_decay))
        return optax.chain(*parts, core) if parts else core

    return optax.inject_hyperparams(factory)(learning_rate=cfg.learning_rate, weight_decay=cfg.weight_decay)
