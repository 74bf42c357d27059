"""``flowmaps info RUN``: what a run directory holds, read without building the model."""

from __future__ import annotations

import csv
from pathlib import Path

from ..errors import ConfigError
from ..io.checkpoint import load_state
from ..run.build import CHECKPOINT_FILE, CONFIG_FILE
from ..run.config import decay_name, dump_config, load_config


def _last_metrics(path: Path) -> dict[str, str]:
    if not path.is_file():
        return {}
    with open(path, newline="") as f:
        rows = [r for r in csv.DictReader(f) if None not in r.values()]
    return rows[-1] if rows else {}


def describe_run(run: Path) -> str:
    """The run's method and model, steps done of those asked, its data and teacher, the last metrics row, the
    last evaluation table and the config."""
    if not (run / CONFIG_FILE).is_file():
        raise ConfigError(f"{run}: not a run directory (no {CONFIG_FILE})")
    cfg = load_config(run / CONFIG_FILE)
    lines = [f"run {run}", f"  method: {cfg.objective.method}, network {cfg.model.net}"]
    if (run / CHECKPOINT_FILE).is_file():
        state = load_state(run / CHECKPOINT_FILE)
        params = sum(t.numel() for t in state["model"].values())
        lines[-1] += f" ({params:,} parameters)"
        lines.append(f"  steps: {int(state['step']):,} of {cfg.train.steps:,} done, {int(state['skipped'])} skipped")
        lines.append(f"  EMAs (sample/eval --ema): {', '.join(decay_name(d) for d in cfg.train.ema)}")
        teacher = state.get("teacher") or {}
        if teacher.get("kind") == "run":
            lines.append(f"  teacher: run {teacher['path']} at step {teacher.get('step')} (config sha256 "
                         f"{teacher['config_sha256'][:12]}…, checkpoint sha256 {teacher['checkpoint_sha256'][:12]}…)")
        elif teacher:
            lines.append(f"  teacher: {teacher.get('kind')}")
    else:
        lines.append(f"  steps: none done of {cfg.train.steps:,} (no checkpoint yet)")
    data = cfg.data.model_dump(mode="json")
    lines.append("  data: " + ", ".join(f"{k} {v}" for k, v in data.items() if v is not None))
    last = _last_metrics(run / "metrics.csv")
    if last:
        lines.append("  last metrics: " + ", ".join(f"{k} {v}" for k, v in last.items() if v != ""))
    if (run / "eval.md").is_file():
        lines += ["  last evaluation (eval.md):"] + ["    " + ln for ln in (run / "eval.md").read_text().splitlines()]
    lines += ["  config:"] + ["    " + ln for ln in dump_config(cfg).splitlines()]
    return "\n".join(lines)
