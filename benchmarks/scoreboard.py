"""The held-out family in one table: for every few-step recipe and every set of ``benchmarks/heldout.py``, its
N = 2 score over its teacher's, from the newest run under ``--runs`` that was trained from the recipe as it is
shipped now. Nothing is trained: a run of an earlier recipe, of another ``--scale`` (1 unless given) or with
``--set`` overrides that the recipe does not have is not counted, and a cell without a current run stays empty
(not run). Target as heldout.py's: ≤ 1.5× the teacher.

Teachers are current too. A distillation (or a model of teacher pairs) counts only beside the teacher it learned
from, trained from its recipe as shipped now. A teacher-free map (no teacher section, no pairs) learned nothing
from its teacher, which only scores it: beside a current teacher of its own it is scored against that one, else
against the set's newest current flow-matching teacher, whichever root holds it, so a new teacher recipe
re-references these cells instead of emptying them; with no current teacher on the set the cell shows its scores
without a ratio.

``--teacher-set`` scores the board as if the flow-matching teacher's recipe (``configs/checker_fm.yaml``) had these
overrides, as heldout.py's option of that name trains it: the board of a candidate teacher recipe, built from its
runs (and kept in a ``--base`` of its own) before the recipe is shipped.

Runs are scratch, the board is not: with ``--base`` (an earlier board's JSON) its cells stay, unless a newer current
run replaces them or the config they were trained from (each cell keeps its run's and its teacher's) is no longer
the recipe's as shipped, so a board can be brought up to date from the runs of one session.

    python benchmarks/scoreboard.py --runs 'runs/*' --base docs/benchmarks/heldout_scoreboard.json \
        --out docs/benchmarks/heldout_scoreboard
"""

from __future__ import annotations

import argparse
import glob
import json
import shlex
from pathlib import Path

from flowmaps.io.files import write_report
from flowmaps.run.config import RunConfig, load_config, parse_config, training_diff
from heldout import SETS, STUDENTS, config, score

LIMIT = 1.5
STALE = {"teacher": None, "teacher_run": None, "teacher_config": None, "teacher_mtime": 0.0}  # no current teacher


def shipped(cfg: RunConfig, recipe: str, name: str, root: Path, scale: float, teacher_set: list[str] = ()) -> bool:
    """Whether ``cfg`` trains as ``recipe``'s config as shipped now on set ``name`` under ``root`` (the
    flow-matching teacher's with the overrides ``teacher_set``)."""
    return not training_diff(cfg, config(recipe, SETS[name], root, scale, (), teacher_set if recipe == "fm" else ()))


def current(run: Path, recipe: str, name: str, n: int, scale: float, teacher_set: list[str] = ()) -> dict | None:
    """The cached evaluation of ``run`` and its config if it holds one and was trained from ``recipe``'s config as
    shipped now."""
    cached = run / f"heldout_eval_n{n}.json"
    if not (cached.is_file() and (run / "config.yaml").is_file()):
        return None
    cfg = load_config(run / "config.yaml")
    if not shipped(cfg, recipe, name, run.parent, scale, teacher_set):
        return None
    return {**json.loads(cached.read_text()), "mtime": cached.stat().st_mtime, "config": cfg.model_dump(mode="json")}


def teacher_free(cfg: RunConfig) -> bool:
    """Whether a few-step run learned from no teacher: neither distilled (``teacher``) nor fit to its pairs."""
    return cfg.teacher is None and cfg.data.kind != "pairs"


def kept(base: dict, scale: float, teacher_set: list[str] = ()) -> tuple[dict, dict]:
    """The cells of an earlier board whose run was trained from its recipe as shipped now and, unless it is
    teacher-free, whose teacher was too; and the current teachers they name, ``{set: {recipe: reference}}``."""
    board: dict = {name: {} for name in SETS}
    teachers: dict = {name: {} for name in SETS}
    for name, cells in base.items():
        for recipe, cell in cells.items():
            if name not in SETS or recipe not in STUDENTS or "config" not in cell:
                continue
            root = Path(cell["run"]).parent
            cfg, teacher = parse_config(cell["config"]), STUDENTS[recipe]
            if not shipped(cfg, recipe, name, root, scale):
                continue
            if cell.get("teacher_config") and shipped(parse_config(cell["teacher_config"]), teacher, name, root,
                                                       scale, teacher_set):
                newer(teachers[name], teacher, reference(cell))
            elif teacher_free(cfg):
                cell = {**cell, **STALE}  # to be scored against the set's current teacher
            else:
                continue
            board[name][recipe] = cell
    return board, teachers


def reference(cell: dict) -> dict:
    """The teacher a cell was scored against: its score, run, config and the time of its evaluation."""
    return {"teacher": cell["teacher"], "teacher_run": cell.get("teacher_run"),
            "teacher_config": cell["teacher_config"], "teacher_mtime": cell.get("teacher_mtime", cell["mtime"])}


def newer(refs: dict, teacher: str, ref: dict) -> None:
    """Keep ``ref`` as ``refs[teacher]`` if it was evaluated after the one there."""
    if ref["teacher_mtime"] > refs.get(teacher, {"teacher_mtime": -1.0})["teacher_mtime"]:
        refs[teacher] = ref


def collect(roots: list[Path], n: int, scale: float = 1.0, base: dict | None = None,
            teacher_set: list[str] = ()) -> dict:
    """``{set: {recipe: cell}}``, each cell the newest current run's scores, its teacher's and the ratio (and both
    configs), over the kept cells of ``base``; teacher-free cells against the set's newest current teacher."""
    board, teachers = kept(base or {}, scale, teacher_set)
    for root in roots:
        for name in SETS:
            refs = {}
            for teacher in set(STUDENTS.values()):
                ref = current(root / name / teacher, teacher, name, n, scale, teacher_set)
                if ref is not None:
                    refs[teacher] = {"teacher": score(ref["rows"][0]), "teacher_run": str(root / name / teacher),
                                     "teacher_config": ref["config"], "teacher_mtime": ref["mtime"]}
                    newer(teachers[name], teacher, refs[teacher])
            for recipe, teacher in STUDENTS.items():
                run = current(root / name / recipe, recipe, name, n, scale)
                if run is None or (teacher not in refs and not teacher_free(parse_config(run["config"]))):
                    continue
                cell = {"run": str(root / name / recipe), "scores": [score(r) for r in run["rows"]],
                        "mtime": run["mtime"], "config": run["config"], **refs.get(teacher, STALE)}
                if recipe not in board[name] or cell["mtime"] > board[name][recipe]["mtime"]:
                    board[name][recipe] = cell
    for name, cells in board.items():
        for recipe, cell in cells.items():
            if cell["teacher"] is None:  # teacher-free, its own teacher gone or outdated: the set's newest current one
                cell |= teachers[name].get(STUDENTS[recipe], {})
            cell["ratio"] = None if cell["teacher"] is None else cell["scores"][1] / cell["teacher"]
    return board


def render(board: dict, command: str, n: int, teacher_set: list[str] = ()) -> str:
    sets = [s for s in SETS if board[s]]
    title = "every shipped recipe as it is now" + (
        f", the flow-matching teacher's with `{' '.join(teacher_set)}`" if teacher_set else "")
    lines = [f"# The held-out family, {title}", "", f"Command: `{command}`", "",
             "Each cell: the N = 2 score over the teacher's (KL on the 50×50 grid in 2-D, energy distance in 8 and 32 "
             f"dimensions; {n:,} samples), from the newest run trained from the recipe as shipped; target ≤ {LIMIT}× "
             "(misses in bold); empty: no run of the current recipe; `–`: a teacher-free run and no current teacher "
             "on the set. Teachers: the flow-matching one for the flow maps, EDM for lines matching, 1-RF for 2-RF; "
             "a teacher-free map's own if current, else the set's newest current one.", "",
             "| recipe | " + " | ".join(sets) + " | met |", "|---|" + "---|" * (len(sets) + 1)]
    for recipe in STUDENTS:
        cells = [board[s].get(recipe) for s in sets]
        if not any(cells):
            continue
        text = ["" if c is None else "–" if c["ratio"] is None else
                f"{c['ratio']:.2f}" if c["ratio"] <= LIMIT else f"**{c['ratio']:.2f}**" for c in cells]
        ran = [c for c in cells if c and c["ratio"] is not None]
        met = sum(c["ratio"] <= LIMIT for c in ran)
        lines.append(f"| {recipe} | " + " | ".join(text) + f" | {met} of {len(ran)} |")
    lines += ["", "Runs (N = 1 / 2 / 4; teacher):", ""]
    for s in sets:
        for recipe, c in board[s].items():
            scores = " / ".join(f"{v:.3g}" for v in c["scores"])
            teacher = "no current teacher" if c["teacher"] is None else f"teacher {c['teacher']:.3g}" + (
                f" (`{c['teacher_run']}`)" if c.get("teacher_run") else "")
            lines.append(f"- {s}, {recipe}: {scores}; {teacher} (`{c['run']}`)")
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", nargs="+", default=["runs/*"], help="heldout.py roots (globs allowed)")
    p.add_argument("--n", type=int, default=64_000, help="samples per score, as given to heldout.py")
    p.add_argument("--scale", type=float, default=1.0, help="count runs of heldout.py at this --scale only")
    p.add_argument("--base", help="an earlier board's JSON whose cells stay while current (see above)")
    p.add_argument("--teacher-set", nargs="*", default=[], metavar="KEY=VALUE",
                   help="the flow-matching teacher's recipe with these overrides (a candidate's board)")
    p.add_argument("--out", default="docs/benchmarks/heldout_scoreboard")
    args = p.parse_args()
    roots = sorted({Path(r) for pattern in args.runs for r in glob.glob(pattern) if Path(r).is_dir()})
    base = None
    if args.base:
        try:
            base = json.loads(Path(args.base).read_text())
        except (OSError, ValueError) as err:
            raise SystemExit(f"--base {args.base}: not a board's JSON ({err})") from None
    board = collect(roots, args.n, args.scale, base, args.teacher_set)
    command = ("python benchmarks/scoreboard.py --runs " + " ".join(f"'{r}'" for r in args.runs)
               + (f" --base {args.base}" if args.base else "")
               + (f" --n {args.n}" if args.n != 64_000 else "")
               + (f" --scale {args.scale:g}" if args.scale != 1 else "")
               + (f" --teacher-set {' '.join(map(shlex.quote, args.teacher_set))}" if args.teacher_set else "")
               + f" --out {args.out}")
    text = render(board, command, args.n, args.teacher_set)
    write_report(args.out, board, text)  # atomic: --base may be --out
    print(text)


if __name__ == "__main__":
    main()
