"""Command line: ``flowmaps train | pairs | sample | eval | demo``.

Every user error (arguments, config, data, checkpoint, existing output) prints one line
``flowmaps: error: …`` and exits with status 2, before anything on disk is written or overwritten.
Training stopped by a non-finite loss, gradient or weight exits with status 3 (the last good checkpoint is
kept); a failing disk (full, read-only) with status 1. See docs/guarantees.md.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .checkpoint import CheckpointError
from .config import ConfigError, load_config
from .data.arrays import DataError


class _Parser(argparse.ArgumentParser):
    """One-line errors, and ``key=value`` overrides allowed after options (``train CFG --out RUN a.b=1``)."""

    _inner = False

    def error(self, message: str):
        self.exit(2, f"flowmaps: error: {message} (see {self.prog} --help)\n")

    def parse_known_args(self, args=None, namespace=None):
        if self._inner or not self.intermixed:
            return super().parse_known_args(args, namespace)
        self._inner = True
        try:
            return self.parse_known_intermixed_args(args, namespace)
        finally:
            self._inner = False

    intermixed = False


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}")
    return value


def _grid(text: str):
    """A sampling grid ``0,t_1,...,1``: strictly increasing times in [0, 1] from noise (0) to data (1)."""
    from .sampling import check_grid

    try:
        grid = check_grid([float(s) for s in text.split(",") if s.strip()])
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"{err} (from {text!r})") from None
    if float(grid[0]) != 0.0 or float(grid[-1]) != 1.0:
        raise argparse.ArgumentTypeError(f"a sampling grid goes from noise (t=0) to data (t=1), got {text!r}")
    return grid


def _steps(text: str) -> list[int]:
    try:
        steps = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"steps must be integers like 1,2,4, got {text!r}") from None
    if not steps or min(steps) < 1:
        raise argparse.ArgumentTypeError(f"steps must be >= 1, got {text!r}")
    return steps


def _indices(text: str) -> list[int]:
    try:
        idx = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"indices must be integers like 0,1, got {text!r}") from None
    if not idx or min(idx) < 0 or max(idx) > 17:
        raise argparse.ArgumentTypeError(f"indices must lie in 0..17, got {text!r}")
    return idx


def cmd_train(args) -> None:
    from .train import train

    cfg = load_config(args.config, args.overrides)
    out = Path(args.out or Path("runs") / Path(args.config).stem)
    train(cfg, out, resume=args.resume, progress=not args.quiet)
    print(f"run written to {out}")


def cmd_pairs(args) -> None:
    from . import distributed
    from .pairs import generate_pairs, run_teacher, shard_name, verify_store

    if args.verify:
        bad = verify_store(args.out, full=True, check_noise=True)
        if bad:
            names = ", ".join(f"{shard_name(k)} ({why})" for k, why in sorted(bad.items()))
            raise ValueError(f"{args.out}: damaged shards: {names}; rerun with --repair to regenerate them")
        print(f"{args.out}: every shard matches its sha256 and its noise seeds")
        return
    if args.n is None:
        raise ConfigError("flowmaps pairs needs --n (the number of pairs)")
    distributed.init(args.device)  # under torchrun the ranks split the shards
    teacher = run_teacher(args.teacher, args.solver, args.steps, device=args.device)
    m = generate_pairs(teacher, args.n, args.out, seed=args.seed, solver=args.solver, steps=args.steps,
                       shard_size=args.shard_size, batch_size=args.batch_size, repair=args.repair,
                       progress=not args.quiet)
    state = "complete" if m["complete"] else "incomplete"
    if distributed.world()[0] == 0:
        print(f"{args.n} pairs ({args.solver}, NFE {m['nfe']}) in {len(m['shards'])} shards, {state} -> {args.out}")


def cmd_sample(args) -> None:
    from .evaluate import noise, run_sampler
    from .runs import load_run
    from .sampling import class_labels

    out = Path(args.out)
    if out.suffix not in (".npy", ".png"):
        raise ConfigError(f"{out}: output must end in .npy or .png")
    if out.exists() and not args.force:
        raise ConfigError(f"{out}: exists; pass --force to overwrite")
    run = load_run(args.run)
    try:
        label = class_labels(run.model.num_classes, args.n, args.cls)
    except ValueError as err:
        raise ConfigError(f"{args.run}: {err}") from None
    x0 = noise(run.model, args.n, run.source.shape, args.seed)
    solver = args.solver or ("euler" if run.model.kind == "velocity" else "map")
    if args.edm_steps:  # the lines-matching grids: a subset of EDM's 18-step σ schedule, from α_{t0} x0
        import torch

        from .sampling import edm_subset_grid, sample, start_state

        grid = edm_subset_grid(args.edm_steps, run.model.sigma0)
        torch.manual_seed(args.seed + 1_000_003)
        s = sample(run.model, start_state(run.model, x0, grid), grid, solver=solver, label=label)
    else:
        s = run_sampler(run.model, x0, solver, args.steps, args.seed, grid=args.grid, label=label)
    if out.suffix == ".npy":
        from .data.arrays import save_array

        save_array(out, s.x)
    elif len(run.source.shape) == 1 and run.source.shape[0] == 2:
        from .plots import scatter_panels

        scatter_panels([(f"{solver}, NFE {s.nfe}", s.x)], out, run.source.bounds)
    else:
        from .plots import image_grid

        image_grid(s.x, out)
    print(f"{args.n} samples, solver {solver}, NFE {s.nfe} -> {out}")


def cmd_eval(args) -> None:
    from .evaluate import evaluate, markdown_table, save_rows
    from .runs import load_run

    run = load_run(args.run)
    e = run.cfg.eval
    solvers = tuple(args.solver.split(",")) if args.solver else None
    rows = evaluate(run.model, run.source, args.steps or e.steps, args.n or e.n, e.seed, solvers, bins=e.bins,
                    features=e.features)
    save_rows(run.path / "eval", rows)
    print(markdown_table(rows, f"{run.path} (step {run.step}, EMA weights)"))


def cmd_demo(args) -> None:
    from .demo import demo

    demo(Path(args.out), fast=args.fast, progress=not args.quiet)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="flowmaps", description="Few-step generative models: flow maps and lines matching.")
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train a config into a run directory")
    t.intermixed = True
    t.add_argument("config", help="YAML recipe (see configs/)")
    t.add_argument("overrides", nargs="*", help="key.sub=value overrides, e.g. train.steps=500")
    t.add_argument("--out", help="run directory (default runs/<config name>)")
    t.add_argument("--resume", action="store_true",
                   help="continue the run in --out from its last checkpoint (starts it if there is none)")
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    t.set_defaults(func=cmd_train)

    pr = sub.add_parser("pairs", help="write teacher pairs (z, Φ(z)) of a run into a pair store")
    pr.add_argument("teacher", help="teacher run directory")
    pr.add_argument("--n", type=_positive, help="number of pairs (required unless --verify)")
    pr.add_argument("--out", required=True, help="store directory (created, or resumed if it holds this teacher's pairs)")
    pr.add_argument("--solver", default="edm", help="edm (Heun on EDM's σ grid) | euler | heun | rk4 | adaptive | map")
    pr.add_argument("--steps", type=int, default=18, help="solver steps (edm: 18 steps = 35 NFE)")
    pr.add_argument("--seed", type=int, default=0, help="noise seed: z_i comes from seed·2^32 + i")
    pr.add_argument("--shard-size", type=int, help="pairs per shard file (default: the store's, else 65536)")
    pr.add_argument("--batch-size", type=int, default=8192, help="pairs per teacher batch")
    pr.add_argument("--repair", action="store_true", help="regenerate shards that are missing, truncated or corrupt")
    pr.add_argument("--verify", action="store_true", help="only check every shard's sha256 and noise, then exit")
    pr.add_argument("--device", default="cpu")
    pr.add_argument("--quiet", action="store_true", help="no progress bar")
    pr.set_defaults(func=cmd_pairs)

    s = sub.add_parser("sample", help="draw samples from a run")
    s.add_argument("run")
    s.add_argument("--steps", type=_positive, default=1, help="number of steps (uniform grid)")
    s.add_argument("--grid", type=_grid, help="explicit time grid instead of --steps, e.g. 0,0.5,1")
    s.add_argument("--edm-steps", type=_indices, help="instead of --steps: indices into EDM's 18-step σ grid, "
                   "e.g. 0,1 (lines matching's 2-step sampler)")
    s.add_argument("--n", type=_positive, default=10_000)
    s.add_argument("--solver", help="map | renoise | euler | heun | rk4 | adaptive (default: the model's own)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--class", dest="cls", type=int, help="class-conditional runs: sample only this class "
                   "(default: every class equally often, label_i = i mod classes)")
    s.add_argument("--out", required=True, help="FILE.npy (array) or FILE.png (plot)")
    s.add_argument("--force", action="store_true", help="overwrite --out if it exists")
    s.set_defaults(func=cmd_sample)

    e = sub.add_parser("eval", help="metrics at several step counts (writes RUN/eval.json and eval.md)")
    e.add_argument("run")
    e.add_argument("--steps", type=_steps, help="comma-separated, e.g. 1,2,4,8,16 (default: the config's)")
    e.add_argument("--n", type=_positive, help="samples per row (default: the config's eval.n)")
    e.add_argument("--solver", help="comma-separated solvers (default: by model kind)")
    e.set_defaults(func=cmd_eval)

    d = sub.add_parser("demo", help="the embedded default: a teacher and few-step models on the checkerboard")
    d.add_argument("--out", default="runs/demo", help="output directory (default runs/demo)")
    d.add_argument("--fast", action="store_true", help="a much shorter run (smoke test)")
    d.add_argument("--quiet", action="store_true")
    d.set_defaults(func=cmd_demo)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except (ConfigError, CheckpointError, DataError, ValueError) as err:
        print(f"flowmaps: error: {err}", file=sys.stderr)
        return 2
    except RuntimeError as err:
        train = sys.modules.get(f"{__package__}.train")  # NonFiniteError comes from a loaded training loop
        if train is None or not isinstance(err, train.NonFiniteError):
            raise
        print(f"flowmaps: error: {err}", file=sys.stderr)
        return 3
    except OSError as err:  # disk full, read-only, permissions
        reason = err.strerror or str(err)
        print(f"flowmaps: error: {f'{err.filename}: ' if err.filename else ''}{reason}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("flowmaps: interrupted; the last checkpoint is kept", file=sys.stderr)
        return 130
    finally:
        distributed = sys.modules.get(f"{__package__}.distributed")  # loaded only by commands that use it
        if distributed is not None:
            distributed.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
