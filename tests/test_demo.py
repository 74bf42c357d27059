"""The README's main job, at its smoke size: `flowmaps demo --fast` writes samples, a plot and a metrics table;
`benchmarks/demo_ablation.py` reruns its students' recipes on that teacher."""

import json
import os
import subprocess
import sys
from pathlib import Path

from flowmaps.app.cli import main

ROOT = Path(__file__).resolve().parents[1]


def test_demo_fast_writes_samples_plot_and_metrics_and_its_ablation_runs(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--fast", "--out", str(out), "--quiet"]) == 0
    assert (out / "samples.png").stat().st_size > 10_000
    rows = json.loads((out / "metrics.json").read_text())
    models = {r["model"] for r in rows}
    assert {"teacher", "lmd", "lmm"} <= models
    for r in rows:
        assert (r["nfe"] >= 1 or r["model"] == "target") and r["kl"] >= 0 and r["energy"] >= 0
    assert "| model" in (out / "metrics.md").read_text()
    assert "samples.png" in capsys.readouterr().out

    table = tmp_path / "ablation"
    r = subprocess.run([sys.executable, "benchmarks/demo_ablation.py", "--smoke", "--demo", str(out), "--rows",
                        "lmd_earlier,lmm_sot", "--root", str(tmp_path / "runs"), "--out", str(table)], cwd=ROOT,
                       env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    rows = json.loads(table.with_suffix(".json").read_text())["rows"]
    assert [r["model"] for r in rows] == ["teacher", "lmd", "lmm"]
    assert all(r["N=1"] >= 0 for r in rows[1:]) and "+ SOT" in table.with_suffix(".md").read_text()
    r = subprocess.run([sys.executable, "benchmarks/demo_ablation.py", "--smoke", "--demo", str(out), "--rows",
                        "lmd_huber", "--seeds", "0,1", "--root", str(tmp_path / "runs"), "--out", str(table)],
                       cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    row = json.loads(table.with_suffix(".json").read_text())["rows"][1]  # mean ± std over the two seeds' runs
    assert len(row["seeds"]["N=1"]) == 2 and row["N=1"].count("±") == 1
    assert (tmp_path / "runs" / "lmd_huber_s1").is_dir()
