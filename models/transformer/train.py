"""Train the transformer with torch Adam on the one xp loss, saving checkpoints.

:func:`train` runs Adam (Kingma & Ba 2014, arXiv:1412.6980) on the minibatch mean of
:func:`.architecture.transformer_token_loss`, evaluated by torch through
``array_api_compat.torch`` (no second definition of the network), and returns the
checkpoints (the step-0 initialisation included) as
:class:`pplpatterning.spec.checkpoints.Checkpoint` (float64), saving them with
:func:`~pplpatterning.spec.checkpoints.save_checkpoint` when ``out_dir`` is given. Runs are
deterministic for a seed (minibatches from a NumPy generator, Adam on the CPU).

Command line (defaults: a 2-layer, 4-head attention-only model, 39k parameters, on the
induction task of :mod:`.task`; about two minutes on one CPU thread)::

    python -m pplpatterning.models.transformer.train --out runs/induction

writes ``step-XXXXXXXX.npz`` checkpoints (log-spaced steps), ``config.json`` (model, task
and training settings) and ``metrics.json`` (held-out loss per position label and head
scores at every checkpoint), and prints the loss by label.

torch is imported inside the functions, so ``import pplpatterning.models.transformer``
does not need it.
"""

from __future__ import annotations

import argparse
import json
import math
import numbers
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pplpatterning.spec.checkpoints import Checkpoint, save_checkpoint

from .architecture import TransformerConfig, init_params, param_shapes, transformer_consts, transformer_token_loss
from .task import LABELS, InductionTask

__all__ = ["train", "log_spaced_steps", "checkpoint_steps", "loss_by_label", "load_run", "main"]

_DTYPES = ("float32", "float64")


def log_spaced_steps(steps: int, count: int) -> list[int]:
    """``count`` distinct integer steps from 0 to ``steps`` (all of 0..steps when there are
    fewer), log-spaced so early training is resolved: 0, then round(steps^(i/(count-2)))
    for i = 0..count-2, nudged up where rounding repeats a step (and back down at the end,
    so the last is ``steps``)."""
    steps = int(steps)
    count = int(count)
    if count < 2:
        raise ValueError(f"`count` must be at least 2 (step 0 and the last step), got {count}.")
    if steps < 0:
        raise ValueError(f"`steps` must be non-negative, got {steps}.")
    if steps + 1 <= count:
        return list(range(steps + 1))
    m = count - 1  # positive steps 1..steps, m of them
    if m == 1:  # logspace of one point is its start (step 1), not the last step
        return [0, steps]
    grid = np.round(np.logspace(0.0, math.log10(steps), m)).astype(np.int64)
    for i in range(1, m):  # strictly increasing
        grid[i] = max(grid[i], grid[i - 1] + 1)
    for i in range(m - 1, -1, -1):  # and at most steps - (m - 1 - i)
        grid[i] = min(grid[i], steps - (m - 1 - i))
    return [0, *(int(g) for g in grid)]


def checkpoint_steps(steps: int, checkpoint_every: int | Sequence[int] | None) -> list[int]:
    """The steps :func:`train` checkpoints: every ``checkpoint_every``-th step (an int),
    the listed steps (a sequence), or 20 log-spaced steps (None); 0 is always included,
    and the last step too for an int or None."""
    if checkpoint_every is None:
        return log_spaced_steps(steps, 20)
    if isinstance(checkpoint_every, numbers.Integral) and not isinstance(checkpoint_every, bool):
        if int(checkpoint_every) < 1:
            raise ValueError(f"`checkpoint_every` must be a positive integer or a list of steps, got {checkpoint_every}.")
        return sorted({0, steps, *range(0, steps + 1, int(checkpoint_every))})
    if isinstance(checkpoint_every, (str, bytes)) or not isinstance(checkpoint_every, (Sequence, np.ndarray)):
        raise ValueError("`checkpoint_every` must be a positive integer, a list of steps, or None (log-spaced); "
                         f"got {checkpoint_every!r}.")
    out = set()
    for s in checkpoint_every:
        if isinstance(s, bool) or not isinstance(s, numbers.Integral) or not 0 <= int(s) <= steps:
            raise ValueError(f"`checkpoint_every` lists step {s!r}; steps must be integers in [0, steps = {steps}].")
        out.add(int(s))
    return sorted(out | {0})


def _check_tokens(tokens: Any, config: TransformerConfig) -> np.ndarray:
    arr = np.asarray(tokens)
    if arr.dtype.kind not in "iu":
        raise TypeError(f"`tokens` must be an integer array of token ids, got dtype {arr.dtype}.")
    if arr.ndim != 2 or not 2 <= arr.shape[1] <= config.context + 1:
        raise ValueError(f"`tokens` must have shape (n, seq_len) with 2 ≤ seq_len ≤ context + 1 = "
                         f"{config.context + 1}, got {arr.shape}.")
    if arr.size and (arr.min() < 0 or arr.max() >= config.vocab):
        raise ValueError(f"`tokens` holds ids outside [0, vocab = {config.vocab}): min {arr.min()}, max {arr.max()}.")
    return arr.astype(np.int64, copy=False)


def train(config: TransformerConfig, tokens: Any, *, steps: int, lr: float = 3e-3, batch_size: int = 64,
          seed: int = 0, checkpoint_every: int | Sequence[int] | None = None, out_dir: str | Path | None = None,
          init: Mapping[str, Any] | None = None, dtype: str = "float32", weight_decay: float = 0.0,
          log: Any = None) -> list[Checkpoint]:
    """Adam on L_B(w) = mean over a minibatch of B sequences and their positions of the
    per-token cross-entropy; returns the checkpoints at :func:`checkpoint_steps` (step 0 =
    the initialisation ``init`` or :func:`init_params` ``(config, seed)``, as rounded to
    ``dtype``), saved to ``out_dir`` if given.

    Minibatches are drawn with replacement from ``tokens`` (int (n, seq_len)) by a NumPy
    generator seeded with ``seed``; ``weight_decay`` > 0 uses AdamW's decoupled decay
    (Loshchilov & Hutter 2017, arXiv:1711.05101). ``log(step, loss)`` is called at every
    checkpoint if given.
    """
    import array_api_compat.torch as xp
    import torch

    if not isinstance(config, TransformerConfig):
        raise TypeError(f"`config` must be a TransformerConfig, got {type(config).__name__}.")
    data = _check_tokens(tokens, config)
    if isinstance(steps, bool) or not isinstance(steps, numbers.Integral) or int(steps) < 0:
        raise ValueError(f"`steps` must be a non-negative integer, got {steps!r}.")
    steps = int(steps)
    if isinstance(lr, bool) or not isinstance(lr, numbers.Real) or not 0 < float(lr) < math.inf:
        raise ValueError(f"`lr` must be a finite positive number, got {lr!r}.")
    if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral) or int(batch_size) < 1:
        raise ValueError(f"`batch_size` must be a positive integer, got {batch_size!r}.")
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or int(seed) < 0:
        raise ValueError(f"`seed` must be a non-negative integer, got {seed!r}.")
    if dtype not in _DTYPES:
        raise ValueError(f"`dtype` must be one of {_DTYPES}, got {dtype!r}.")
    if isinstance(weight_decay, bool) or not isinstance(weight_decay, numbers.Real) or not 0 <= float(weight_decay):
        raise ValueError(f"`weight_decay` must be a non-negative number, got {weight_decay!r}.")
    save_at = set(checkpoint_steps(steps, checkpoint_every))
    shapes = param_shapes(config)
    start = init_params(config, int(seed)) if init is None else dict(init)
    bad = [k for k in shapes if k not in start or np.shape(start[k]) != shapes[k]]
    if bad or set(start) - set(shapes):
        raise ValueError(f"`init` does not match the config's parameters (wrong or missing: {bad}, "
                         f"unexpected: {sorted(set(start) - set(shapes))}).")

    tdtype = torch.float32 if dtype == "float32" else torch.float64
    params = {k: torch.tensor(np.asarray(start[k], dtype=np.float64), dtype=tdtype).requires_grad_(True)
              for k in shapes}
    consts = {k: torch.tensor(np.asarray(v, dtype=np.float64), dtype=tdtype) for k, v in transformer_consts(config).items()}
    tokens_t = torch.from_numpy(np.ascontiguousarray(data))
    opt_cls = torch.optim.AdamW if weight_decay > 0 else torch.optim.Adam
    opt = opt_cls(list(params.values()), lr=float(lr), **({"weight_decay": float(weight_decay)} if weight_decay else {}))
    rng = np.random.default_rng(int(seed))

    out: list[Checkpoint] = []

    def keep(step: int, loss: float) -> None:
        ckpt = Checkpoint(step, {k: v.detach().to(torch.float64).numpy().copy() for k, v in params.items()})
        out.append(ckpt)
        if out_dir is not None:
            save_checkpoint(out_dir, step, ckpt.params)
        if log is not None:
            log(step, loss)

    loss_value = math.nan
    if 0 in save_at:
        keep(0, loss_value)
    for step in range(1, steps + 1):
        idx = torch.from_numpy(rng.integers(0, data.shape[0], size=int(batch_size)))
        batch = {"tokens": tokens_t[idx]}
        loss = xp.mean(transformer_token_loss(params, batch, consts, xp))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        loss_value = float(loss.detach())
        if not math.isfinite(loss_value):
            raise FloatingPointError(f"training loss became {loss_value} at step {step}; lower `lr` (now {lr}).")
        if step in save_at:
            keep(step, loss_value)
    return out


def loss_by_label(config: TransformerConfig, params: Mapping[str, Any], tokens: Any, labels: Any,
                  *, batch_size: int = 512) -> dict[str, float]:
    """Mean per-token loss (nats) at the target positions of each label in
    :data:`.task.LABELS` (targets are tokens[:, 1:], so "start" never occurs), plus "all";
    float64 NumPy through the same loss; NaN for a label with no position."""
    data = _check_tokens(tokens, config)
    labels = np.asarray(labels)
    if labels.shape != data.shape:
        raise ValueError(f"`labels` has shape {labels.shape}, `tokens` {data.shape}; they must match.")
    p = {k: np.asarray(params[k], dtype=np.float64) for k in param_shapes(config)}
    consts = transformer_consts(config)
    per_token = np.concatenate([
        transformer_token_loss(p, {"tokens": data[lo:lo + batch_size]}, consts, np)
        for lo in range(0, data.shape[0], batch_size)
    ])
    target_labels = labels[:, 1:]
    out = {"all": float(per_token.mean())}
    for code, name in enumerate(LABELS):
        sel = target_labels == code
        out[name] = float(per_token[sel].mean()) if sel.any() else math.nan
    return out


def load_run(directory: str | Path) -> tuple[TransformerConfig, list[Checkpoint], dict[str, Any]]:
    """(config, checkpoints, the whole config.json) of a run written by the command line."""
    from pplpatterning.spec.checkpoints import load_checkpoints

    root = Path(directory)
    meta_path = root / "config.json"
    if not meta_path.is_file():
        raise FileNotFoundError(f"{str(root)!r} has no config.json; was it written by "
                                "`python -m pplpatterning.models.transformer.train --out DIR`?")
    meta = json.loads(meta_path.read_text())
    return TransformerConfig.from_dict(meta["model"]), load_checkpoints(root), meta


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m pplpatterning.models.transformer.train",
        description="Train the built-in small transformer on the synthetic induction task (bigram background with "
                    "repeated random spans) and save log-spaced checkpoints for LLC trajectories.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--out", required=True, help="run directory for step-*.npz checkpoints, config.json, metrics.json")
    g = p.add_argument_group("model")
    g.add_argument("--vocab", type=int, default=32, help="vocabulary size")
    g.add_argument("--context", type=int, default=32, help="input positions (sequences hold context + 1 tokens)")
    g.add_argument("--d-model", type=int, default=64, help="residual stream width")
    g.add_argument("--n-heads", type=int, default=4, help="attention heads per layer")
    g.add_argument("--d-head", type=int, default=16, help="width of each head")
    g.add_argument("--n-layers", type=int, default=2, help="number of blocks")
    g.add_argument("--mlp", action="store_true", default=False, help="add an MLP to every block")
    g.add_argument("--d-mlp", type=int, default=None, help="MLP width (None: 4 * d_model)")
    g.add_argument("--activation", choices=("gelu", "relu"), default="gelu", help="MLP activation")
    g.add_argument("--layer-norm", action="store_true", default=False, help="add affine pre-layer-norms")
    g = p.add_argument_group("task")
    g.add_argument("--span-min", type=int, default=4, help="shortest repeated span")
    g.add_argument("--span-max", type=int, default=8, help="longest repeated span")
    g.add_argument("--sharpness", type=float, default=3.0, help="peakedness of the bigram transition matrix")
    g.add_argument("--task-seed", type=int, default=0, help="seed of the bigram transition matrix")
    g.add_argument("--n-train", type=int, default=20000, help="training sequences")
    g.add_argument("--n-eval", type=int, default=2000, help="held-out sequences for metrics.json")
    g = p.add_argument_group("training")
    g.add_argument("--steps", type=int, default=4000, help="Adam steps")
    g.add_argument("--lr", type=float, default=3e-3, help="Adam learning rate")
    g.add_argument("--weight-decay", type=float, default=0.0, help="AdamW decoupled weight decay (0: plain Adam)")
    g.add_argument("--batch-size", type=int, default=64, help="sequences per step")
    g.add_argument("--seed", type=int, default=0, help="seed of the initialisation, the data and the minibatches")
    g.add_argument("--checkpoints", type=int, default=30, help="number of log-spaced checkpoints (step 0 included)")
    g.add_argument("--dtype", choices=_DTYPES, default="float32", help="training precision (checkpoints are float64)")
    g.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """The command line (see the module docstring); returns the exit status."""
    import torch

    from .components import head_scores

    args = _parser().parse_args(argv)
    if args.threads < 1:
        raise SystemExit("--threads must be at least 1")
    torch.set_num_threads(args.threads)
    config = TransformerConfig(vocab=args.vocab, context=args.context, d_model=args.d_model, n_heads=args.n_heads,
                               d_head=args.d_head, n_layers=args.n_layers, mlp=args.mlp, d_mlp=args.d_mlp,
                               activation=args.activation, layer_norm=args.layer_norm)
    task = InductionTask(vocab=args.vocab, seq_len=args.context + 1, span=(args.span_min, args.span_max),
                         sharpness=args.sharpness, task_seed=args.task_seed)
    train_data = task.sample(args.n_train, np.random.default_rng([args.seed, 1]))
    eval_data = task.sample(args.n_eval, np.random.default_rng([args.seed, 2]))
    steps = log_spaced_steps(args.steps, args.checkpoints)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    meta = {"model": config.to_dict(), "n_params": config.n_params,
            "task": {"vocab": task.vocab, "seq_len": task.seq_len, "span": list(task.span), "min_gap": task.min_gap,
                     "sharpness": task.sharpness, "task_seed": task.task_seed, "bigram_entropy": task.bigram_entropy()},
            "training": {k: getattr(args, k) for k in ("steps", "lr", "weight_decay", "batch_size", "seed", "n_train",
                                                       "n_eval", "dtype", "threads")},
            "checkpoint_steps": steps}
    (out / "config.json").write_text(json.dumps(meta, indent=2))
    print(f"{config.n_params} parameters; bigram entropy {task.bigram_entropy():.3f} nats, "
          f"uniform {math.log(task.vocab):.3f}; training {args.steps} steps -> {out}", flush=True)
    t0 = time.perf_counter()
    ckpts = train(config, train_data.tokens, steps=args.steps, lr=args.lr, batch_size=args.batch_size, seed=args.seed,
                  checkpoint_every=steps, out_dir=out, dtype=args.dtype, weight_decay=args.weight_decay)
    seconds = time.perf_counter() - t0
    rows = []
    header = f"{'step':>7} " + " ".join(f"{n:>16}" for n in ("all", *LABELS[1:])) + "  max prev  max ind"
    print(header)
    for c in ckpts:
        losses = loss_by_label(config, c.params, eval_data.tokens, eval_data.labels)
        scores = head_scores(config, c.params, eval_data.tokens, eval_data.labels, eval_data.source)
        rows.append({"step": c.step, "loss": losses, "previous_token": scores["previous_token"].tolist(),
                     "induction": scores["induction"].tolist()})
        print(f"{c.step:>7} " + " ".join(f"{losses[n]:>16.4f}" for n in ("all", *LABELS[1:]))
              + f"  {scores['previous_token'].max():8.3f} {scores['induction'].max():8.3f}")
    (out / "metrics.json").write_text(json.dumps({"train_seconds": seconds, "checkpoints": rows}, indent=2))
    print(f"trained in {seconds:.1f} s; {len(ckpts)} checkpoints in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
