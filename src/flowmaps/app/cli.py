"""Command line: ``flowmaps train | pairs | prepare | sample | eval | info | encode | demo``.

Every :class:`flowmaps.errors.FlowmapsError` (bad arguments, config, data, checkpoint, pair store, device, a
failed write, a diverged training) prints one line ``flowmaps: error: …`` and exits with its status (2 bad
input, 1 a refused write, 3 non-finite training; see docs/guarantees.md); bad input is found before anything
on disk is written or overwritten. Any other exception is a bug and shows its traceback.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path

from ..errors import ConfigError, FlowmapsError, StoreError


class _Parser(argparse.ArgumentParser):
    """One-line errors, and ``key=value`` overrides allowed after options (``train CFG --out RUN a.b=1``)."""

    _inner = False
    intermixed = False

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


def _integers(text: str, low: int, what: str) -> list[int]:
    try:
        values = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{what} must be integers like 1,2,4, got {text!r}") from None
    if not values or min(values) < low:
        raise argparse.ArgumentTypeError(f"{what} must be >= {low}, got {text!r}")
    return values


def _at_least(low: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = low - 1
        if value < low:
            raise argparse.ArgumentTypeError(f"expected an integer >= {low}, got {text!r}")
        return value

    return parse


_positive = _at_least(1)


def _steps(text: str) -> list[int]:
    return _integers(text, 1, "steps")


def _grid(text: str):
    """A sampling grid ``0,t_1,...,1``: strictly increasing finite times in [0, 1] from noise (0) to data (1)."""
    from ..core.sampling import check_grid

    try:
        grid = check_grid([float(s) for s in text.split(",") if s.strip()])
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"{err} (from {text!r})") from None
    if float(grid[0]) != 0.0 or float(grid[-1]) != 1.0:
        raise argparse.ArgumentTypeError(f"a sampling grid goes from noise (t=0) to data (t=1), got {text!r}")
    return grid


def _edm_indices(text: str) -> list[int]:
    from ..core.sampling import edm_subset_grid

    idx = _integers(text, 0, "EDM step indices")
    try:
        edm_subset_grid(idx)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    return idx


def _output_file(path: Path, suffixes: tuple[str, ...], force: bool) -> Path:
    """An output file the command may write: a known suffix, an existing folder, not there unless ``force``."""
    if path.suffix not in suffixes:
        raise ConfigError(f"{path}: output must end in {' or '.join(suffixes)}")
    if not path.parent.is_dir():
        raise ConfigError(f"{path}: no folder {path.parent}; create it first")
    if path.exists() and not force:
        raise ConfigError(f"{path}: exists; pass --force to overwrite")
    return path


def cmd_train(args) -> None:
    from ..run.config import load_config
    from ..run.trainer import train

    overrides = list(args.overrides) + ([f"train.device={args.device}"] if args.device else [])
    cfg = load_config(args.config, overrides)
    out = Path(args.out or Path("runs") / Path(args.config).stem)
    train(cfg, out, resume=args.resume, progress=not args.quiet)
    print(f"run written to {out}")


def cmd_pairs(args) -> None:
    from ..core import distributed
    from ..pairs.generate import generate_pairs
    from ..pairs.store import verify_store

    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{out}: exists and is not a folder; a pair store is a folder")
    if args.verify:
        _verified(out, verify_store(out, full=True, check_noise=True), "its sha256 and its noise seeds")
        return
    if args.n is None:
        raise ConfigError("flowmaps pairs needs --n (the number of pairs)")
    from ..run.build import pair_teacher, resolve_device

    args.device = str(resolve_device(args.device))
    distributed.init(args.device)  # under torchrun the ranks split the shards (each on its LOCAL_RANK GPU)
    teacher = pair_teacher(args.teacher, args.solver, args.steps, device=args.device, guidance=args.guidance,
                           diffusers=_diffusers_options(args), sigma0=args.sigma0)
    m = generate_pairs(teacher, args.n, out, seed=args.seed, solver=args.solver, steps=args.steps,
                       shard_size=args.shard_size, batch_size=args.batch_size, repair=args.repair,
                       progress=not args.quiet)
    state = "complete" if m["complete"] else "incomplete"
    if distributed.world()[0] == 0:
        guided = f", guidance {args.guidance:g}" if args.guidance else ""
        print(f"{args.n} pairs ({args.solver}, NFE {m['nfe']}{guided}) in {len(m['shards'])} shards, {state} -> {out}")


def _diffusers_options(args) -> dict:
    """The diffusers teacher's options given on the command line (prediction, null_class)."""
    return {k: v for k, v in (("prediction", args.prediction), ("null_class", args.null_class)) if v}


def cmd_encode(args) -> None:
    from ..data import build_source
    from ..data.latents import encode_store
    from ..run.autoencoders import load_autoencoder
    from ..run.build import resolve_device
    from ..run.config import load_config

    cfg = load_config(args.config, args.overrides)
    if cfg.data.kind != "images":
        raise ConfigError(f"{args.config}: flowmaps encode encodes images (data.kind=images), not data.kind="
                          f"{cfg.data.kind}")
    resolve_device(args.device)
    source = build_source(cfg.data)
    encode, _, identity = load_autoencoder(args.vae, args.device)
    channels = source.shape[0]
    try:
        encode(source.x[:1])
    except RuntimeError as err:
        raise ConfigError(f"{args.vae}: cannot encode {channels}-channel images of shape {source.shape} "
                          f"({str(err).splitlines()[0][:120]})") from None
    m = encode_store(encode, source.x, source.labels, args.out, {"autoencoder": identity,
                     "data": cfg.data.model_dump(mode="json")}, args.shard_size, args.batch_size, args.repair,
                     not args.quiet)
    shape = tuple(m["fields"]["x1"]["shape"])
    print(f"{m['n']} images {source.shape} -> latents {shape} in {len(m['shards'])} shards -> {args.out}")


def _decoder(path: str):
    """The autoencoder's decoder when ``path`` is a run trained on latents, else None."""
    from ..io.shards import read_manifest
    from ..run.autoencoders import decoder_of
    from ..run.build import CONFIG_FILE
    from ..run.config import load_config

    if not (Path(path) / CONFIG_FILE).is_file():
        return None
    data = load_config(Path(path) / CONFIG_FILE).data
    return decoder_of(read_manifest(data.path, "latents")["autoencoder"]) if data.kind == "latents" else None


def _sampling(model, args):
    """The sampler's inputs for ``sample`` and ``eval``, with user errors as one line."""
    from ..core.sampling import DEFAULTS, class_labels, get_solver

    solvers = [s.strip() for s in args.solver.split(",") if s.strip()] if args.solver else \
        [DEFAULTS[model.form].solver]
    try:
        for name in solvers:
            get_solver(name, model.form)
        label = class_labels(model.num_classes, args.n, getattr(args, "cls", None))
    except ValueError as err:
        raise ConfigError(f"{args.run}: {err}") from None
    return solvers, label


def _device(args) -> str:
    """``--device`` (default: cuda when available), joining the process group when started under torchrun."""
    from ..core import distributed
    from ..run.build import resolve_device

    device = str(resolve_device(args.device))
    distributed.init(device)
    return device


def _spec(args, model, t0: float, solver: str) -> dict:
    """The sampler of ``sample``: ``solver`` on ``--steps`` (default: the form's) from ``t0``, ``--grid`` or
    ``--edm-grid``."""
    from ..core.sampling import DEFAULTS

    steps = None if args.grid is not None or args.edm_grid is not None else args.steps or DEFAULTS[model.form].steps
    return {"solver": solver, "steps": steps, "grid": args.grid, "edm_grid": args.edm_grid, "t0": t0}


def cmd_sample(args) -> None:
    from ..core import distributed
    from ..run.build import load_run, open_teacher
    from .samples import write_npy, write_picture, write_pngs

    out = Path(args.out)
    if out.suffix:
        out = _output_file(out, (".npy", ".png"), args.force)
    elif not out.parent.is_dir():
        raise ConfigError(f"{out}: no folder {out.parent}; create it first")
    device = _device(args)
    model, teacher, identity = open_teacher(args.run, args.guidance, _diffusers_options(args), args.sigma0, device,
                                            ema=args.ema or True)
    solvers, _ = _sampling(model, args)
    if len(solvers) != 1:
        raise ConfigError(f"flowmaps sample takes one solver, got {','.join(solvers)}")
    if out.suffix and distributed.world()[1] > 1:
        raise ConfigError(f"{out}: several processes write a folder of PNGs (--out DIR), not one {out.suffix} file")
    spec = {**_spec(args, model, teacher.t0, solvers[0]), "cls": args.cls, "device": device}
    shape, n, seed, batch = tuple(teacher.shape), args.n, args.seed, args.batch_size or 500
    decode = _decoder(args.run)  # a model of latents: its samples are images
    note = ""
    if out.suffix == ".npy":
        nfe = write_npy(model, shape, out, n, seed, batch, decode=decode, **spec)
    elif out.suffix == ".png":
        bounds = load_run(args.run).source.bounds if len(shape) == 1 else None
        nfe = write_picture(model, shape, out, n, seed, batch, bounds, decode=decode, **spec)
    else:
        about = {"run": identity, "ema": args.ema, "guidance": args.guidance, "n": n, "seed": seed, "batch": batch,
                 **{k: v.tolist() if hasattr(v, "tolist") else v for k, v in spec.items() if k != "device"}}
        made, nfe = write_pngs(model, shape, out, about, n, seed, batch, decode=decode, **spec)
        made = sum(distributed.collect(made))
        note = f" ({made} written now, {n - made} already there)"
    if distributed.world()[0] == 0:
        print(f"{n} samples, solver {solvers[0]}, NFE {nfe if nfe is not None else 'all made before'} -> {out}{note}")


def cmd_eval(args) -> None:
    from ..core import distributed
    from ..run.build import load_run
    from .evaluate import evaluate, markdown_table, save_rows

    device = _device(args)
    run = load_run(args.run, ema=args.ema or True, device=device)
    e = run.cfg.eval
    args.n = args.n or e.n
    solvers = _sampling(run.model, args)[0] if args.solver else None
    features = args.features.split(",") if args.features else e.features
    references = dict(e.reference)
    if args.ref:
        from ..core.metrics.frechet import default_features

        names = default_features(run.source.shape, features)
        if len(names) != 1:
            raise ConfigError(f"--ref {args.ref}: the run measures features {names or 'none'}; --ref needs exactly "
                              "one (set --features)")
        references[names[0]] = args.ref
    chosen = args.grid is not None or args.edm_grid is not None or args.steps  # else the config's eval grids
    steps = args.steps if chosen else e.steps
    edm_grids = [args.edm_grid] if args.edm_grid is not None else None if chosen else e.edm_grids
    rows = evaluate(run.model, run.source, steps, args.n, e.seed, solvers, bins=e.bins, features=features,
                    grid=args.grid, edm_grids=edm_grids, references=references, stats_dir=run.path / "stats",
                    batch=args.batch_size or e.batch, device=device, progress=not args.quiet, t0=run.t0)
    if distributed.world()[0] == 0:
        save_rows(run.path / "eval", rows)
        which = f"EMA {args.ema}" if args.ema else "EMA"
        print(markdown_table(rows, f"{run.path} (step {run.step}, {which} weights)"))


def _verified(out: Path, bad: list, what: str) -> None:
    """``--verify``'s verdict on a sharded store: the damaged shards as one error line, or one line of success."""
    from ..io.shards import describe

    if bad:
        raise StoreError(f"{out}: damaged shards: {describe(bad)}; rerun with --repair to make them again")
    print(f"{out}: every shard matches {what}")


def cmd_prepare(args) -> None:
    from ..data.prepare import open_source, prepare
    from ..io.shards import verify

    out = Path(args.out)
    if args.verify:
        _verified(out, verify(out), "its sha256")
        return
    if args.src is None:
        raise ConfigError("flowmaps prepare needs SRC (an image folder, a .npy/.npz, or a torchvision root with --set)")
    items, about = open_source(args.src, args.size, args.set, args.split, args.key, args.label_key)
    m = prepare(items, about, out, args.shard_size, args.workers, args.repair, progress=not args.quiet)
    print(f"{m['n']} images of shape {tuple(m['fields']['x']['shape'])}, {m['num_classes']} classes, "
          f"{len(m['shards'])} shards -> {out}")


def cmd_info(args) -> None:
    from .info import describe_run

    print(describe_run(Path(args.run)))


def cmd_demo(args) -> None:
    from ..run.build import resolve_device
    from .demo import demo

    demo(Path(args.out), fast=args.fast, progress=not args.quiet, device=str(resolve_device(args.device)))


def _solver_help() -> str:
    from ..core.sampling import SOLVERS

    return "; ".join(f"{s.name}: {s.help}" for s in SOLVERS.values())


def _non_negative(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}")
    return value


def _teacher_options(p: argparse.ArgumentParser) -> None:
    """The teacher's options of ``pairs`` and ``sample`` (the keys of a config's teacher section)."""
    from ..core.frames import PREDICTIONS

    p.add_argument("--guidance", type=_non_negative, default=0.0, metavar="W", help="classifier-free guidance scale w: "
                   "b_w = (1 + w) b(x,t|k) - w b(x,t|null); a class-conditional velocity run trained with "
                   "model.cond_drop, or a diffusers model with --null-class")
    p.add_argument("--prediction", choices=PREDICTIONS, metavar="KIND", help="diffusers folders: what the network "
                   f"predicts, {' | '.join(PREDICTIONS)} (default: the scheduler config's prediction_type)")
    p.add_argument("--null-class", action="store_true", help="diffusers folders: the last class embedding is "
                   "the unconditional one (trained with label dropout)")
    p.add_argument("--sigma0", type=float, metavar="S", help="diffusers folders: the base scale of the noise x0 "
                   "(default 1)")


_DEVICE_HELP = "cpu, cuda, cuda:N or mps (default: cuda when available)"


def _sampler_args(p: argparse.ArgumentParser, steps_help: str) -> None:
    """The sampling grid (one of --steps, --grid, --edm-grid), --device, --ema and --batch-size of sample/eval."""
    from ..core.sampling import EDM_SUBSETS

    how = p.add_mutually_exclusive_group()
    how.add_argument("--steps", type=_steps if "comma" in steps_help else _positive, help=steps_help)
    how.add_argument("--grid", type=_grid, help="an explicit time grid from noise (0) to data (1), e.g. 0,0.5,1")
    how.add_argument("--edm-grid", type=_edm_indices, help="a time grid of EDM's 18 σ levels: increasing indices "
                     "into them (lines matching's samplers are "
                     f"{' | '.join(','.join(map(str, s)) for s in EDM_SUBSETS)}, NFE 1, 2, 3, 3, 4)")
    p.add_argument("--device", help=_DEVICE_HELP)
    p.add_argument("--ema", help="the EMA to sample, by its decay (e.g. 0.9999; default: the first of train.ema)")
    p.add_argument("--batch-size", type=_positive, help="samples per batch on the device (default 500)")


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    p = _Parser(prog="flowmaps", description="Few-step generative models: flow maps and lines matching. "
                "`edm` names three things: the objective (EDM's denoiser training), the solver (EDM's Heun "
                "sampler) and sample's --edm-grid (a time grid of EDM's σ levels).")
    p.add_argument("--version", action="version", version=f"flowmaps {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train a config into a run directory")
    t.intermixed = True
    t.add_argument("config", help="YAML recipe (see configs/)")
    t.add_argument("overrides", nargs="*", help="key.sub=value overrides, e.g. train.steps=500")
    t.add_argument("--out", help="run directory (default runs/<config name>)")
    t.add_argument("--resume", action="store_true",
                   help="continue the run in --out from its last checkpoint (starts it if there is none)")
    t.add_argument("--device", help=f"{_DEVICE_HELP}; sets train.device")
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    t.set_defaults(func=cmd_train)

    pr = sub.add_parser("pairs", help="write teacher pairs (z, Φ(z)) of a run or a diffusers model into a pair store")
    pr.add_argument("teacher", help="teacher: a run directory or a diffusers save_pretrained folder")
    pr.add_argument("--n", type=_positive, help="number of pairs (required unless --verify)")
    pr.add_argument("--out", required=True,
                    help="store directory (created, or resumed if it holds this teacher's pairs)")
    pr.add_argument("--solver", default="edm", help="edm (Heun on EDM's σ grid) | map | euler | heun | rk4 | adaptive")
    pr.add_argument("--steps", type=_positive, default=18, help="solver steps (edm: 18 steps = 35 NFE)")
    pr.add_argument("--seed", type=int, default=0, help="noise seed: z_i comes from seed·2^32 + i")
    pr.add_argument("--shard-size", type=_positive, help="pairs per shard file (default: the store's, else 65536)")
    pr.add_argument("--batch-size", type=_positive, default=8192, help="pairs per teacher batch")
    pr.add_argument("--repair", action="store_true", help="regenerate shards that are missing, truncated or corrupt")
    pr.add_argument("--verify", action="store_true", help="only check every shard's sha256 and noise, then exit")
    pr.add_argument("--device", help=_DEVICE_HELP)
    pr.add_argument("--quiet", action="store_true", help="no progress bar")
    _teacher_options(pr)
    pr.set_defaults(func=cmd_pairs)

    s = sub.add_parser("sample", help="draw samples from a run or a diffusers model, in batches")
    s.add_argument("run", help="a run directory or a diffusers save_pretrained folder")
    _sampler_args(s, "N steps on a uniform time grid (default: heun 18 steps for a velocity model, 1 step of map "
                  "for a flow map or an endpoint model)")
    s.add_argument("--n", type=_positive, default=10_000)
    s.add_argument("--solver", help=f"the sampler (default: heun for a velocity model, map otherwise). "
                   f"{_solver_help()}")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--class", dest="cls", type=int, help="class-conditional runs: sample only this class "
                   "(default: every class equally often, label_i = i mod classes)")
    s.add_argument("--out", required=True, help="FILE.npy (array), FILE.png (picture) or DIR (numbered PNGs, "
                   "resumable; split over the ranks under torchrun)")
    s.add_argument("--force", action="store_true", help="overwrite a FILE --out if it exists")
    _teacher_options(s)
    s.set_defaults(func=cmd_sample)

    i = sub.add_parser("info", help="a run's config, steps done, teacher, data and metrics")
    i.add_argument("run")
    i.set_defaults(func=cmd_info)

    e = sub.add_parser("eval", help="metrics at several step counts or one grid (writes RUN/eval.json and eval.md)")
    e.add_argument("run")
    _sampler_args(e, "comma-separated, e.g. 1,2,4,8,16 (default: the config's eval.steps)")
    e.add_argument("--n", type=_at_least(2), help="samples per row, at least 2 (default: the config's eval.n)")
    e.add_argument("--solver", help="comma-separated (default: euler and heun, plus the adaptive solve, for a velocity "
                   f"model; map for a flow map; map and renoise for an endpoint model). {_solver_help()}")
    e.add_argument("--features", help="comma-separated feature extractors for images (default: the config's "
                   "eval.features, else digits for one channel, inception for RGB)")
    e.add_argument("--ref", help="reference statistics .npz (mu, sigma) of the feature set, e.g. a published "
                   "FID reference (default: computed from the data once and cached)")
    e.add_argument("--quiet", action="store_true", help="no progress messages")
    e.set_defaults(func=cmd_eval)

    pp = sub.add_parser("prepare", help="an image data set into a prepared store that training streams")
    pp.add_argument("src", nargs="?", help="an image folder, a .npy/.npz of images, or a torchvision root (--set)")
    pp.add_argument("--out", required=True, help="store directory (created, or resumed if it holds this source)")
    pp.add_argument("--set", help="the torchvision set at SRC (cifar10, cifar100, mnist, fashionmnist, svhn, stl10, "
                    "celeba), read from the local root; never downloaded")
    pp.add_argument("--split", default="train", help="the torchvision split (default train)")
    pp.add_argument("--size", type=_positive, help="resize every image to size×size")
    pp.add_argument("--key", help="the .npz array of the images (default: its only array)")
    pp.add_argument("--label-key", help="the .npz array of the labels (default: none)")
    pp.add_argument("--shard-size", type=_positive, default=8192, help="images per shard file (default 8192)")
    pp.add_argument("--workers", type=_at_least(0), default=0, help="decoding processes (default 0: this one)")
    pp.add_argument("--repair", action="store_true", help="make again shards that are missing, truncated or corrupt")
    pp.add_argument("--verify", action="store_true", help="only check every shard's sha256, then exit")
    pp.add_argument("--quiet", action="store_true", help="no progress bar")
    pp.set_defaults(func=cmd_prepare)

    en = sub.add_parser("encode", help="encode a config's images with a diffusers AutoencoderKL into a latent store")
    en.intermixed = True
    en.add_argument("config", help="YAML recipe whose data section (data.kind=images) is encoded")
    en.add_argument("overrides", nargs="*", help="key.sub=value overrides, e.g. data.size=32")
    en.add_argument("--vae", required=True, help="the AutoencoderKL's save_pretrained folder (or a pipeline's)")
    en.add_argument("--out", required=True, help="store directory (created, or resumed if it holds these latents); "
                    "train on it with data: {kind: latents, path: OUT}")
    en.add_argument("--shard-size", type=_positive, default=65_536, help="images per shard file")
    en.add_argument("--batch-size", type=_positive, default=256, help="images per encoder batch")
    en.add_argument("--repair", action="store_true", help="make shards that are missing or corrupt again")
    en.add_argument("--device", default="cpu")
    en.add_argument("--quiet", action="store_true", help="no progress bar")
    en.set_defaults(func=cmd_encode)

    d = sub.add_parser("demo", help="the embedded default: a teacher and few-step models on the checkerboard")
    d.add_argument("--out", default="runs/demo", help="output directory (default runs/demo)")
    d.add_argument("--fast", action="store_true", help="a much shorter run (smoke test)")
    d.add_argument("--device", help=_DEVICE_HELP)
    d.add_argument("--quiet", action="store_true")
    d.set_defaults(func=cmd_demo)
    return p


def out_of_memory(err: BaseException) -> str | None:
    """The allocator's own words when ``err`` is a refused allocation (they name the size), else None."""
    text = " ".join(str(err).split())
    if isinstance(err, MemoryError) or "can't allocate memory" in text or "out of memory" in text.lower():
        return re.sub(r"^\[enforce fail at [^\]]*\] err == 0\. ", "", text)[:240] or type(err).__name__
    return None


SPINCOUNT = "1000"
"""How long a waiting OpenMP thread spins before it sleeps (GNU OpenMP's default: 300,000)."""


def quiet_waits() -> None:
    """OpenMP threads that spin briefly, then sleep while they wait (``GOMP_SPINCOUNT`` = :data:`SPINCOUNT`),
    unless ``OMP_WAIT_POLICY`` or ``GOMP_SPINCOUNT`` is set: on cores shared with another busy process, threads
    spinning long at a barrier for a descheduled sibling made training up to 30× slower, while threads that sleep
    at once (``OMP_WAIT_POLICY=PASSIVE``) made it a third slower alone (benchmarks/contention.py). It takes effect
    when torch is first imported, which the command line does after this."""
    if "OMP_WAIT_POLICY" not in os.environ and "GOMP_SPINCOUNT" not in os.environ:
        os.environ["GOMP_SPINCOUNT"] = SPINCOUNT


def main(argv: list[str] | None = None) -> int:
    quiet_waits()
    args = build_parser().parse_args(argv)
    done = False
    try:
        args.func(args)
        done = True
    except FlowmapsError as err:
        print(f"flowmaps: error: {err}", file=sys.stderr)
        return err.status
    except (RuntimeError, MemoryError) as err:  # torch.OutOfMemoryError is a RuntimeError
        words = out_of_memory(err)
        if words is None:
            raise
        print(f"flowmaps: error: out of memory ({words}); ask for a smaller model, batch or --n", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("flowmaps: interrupted; the last checkpoint is kept", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader of our output went away (e.g. `flowmaps info RUN | head`)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    finally:
        distributed = sys.modules.get(f"{__package__.rsplit('.', 1)[0]}.core.distributed")
        if distributed is not None:  # loaded only by commands that use it
            distributed.close(wait=done)
    return 0


if __name__ == "__main__":
    sys.exit(main())
