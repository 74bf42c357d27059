"""The README's main job, at its smoke size: `flowmaps demo --fast` writes samples, a plot and a metrics table."""

import json

from flowmaps.app.cli import main


def test_demo_fast_writes_samples_plot_and_metrics(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--fast", "--out", str(out), "--quiet"]) == 0
    assert (out / "samples.png").stat().st_size > 10_000
    rows = json.loads((out / "metrics.json").read_text())
    models = {r["model"] for r in rows}
    assert {"teacher", "lmm"} <= models
    for r in rows:
        assert (r["nfe"] >= 1 or r["model"] == "target") and r["kl"] >= 0 and r["w2"] >= 0
    assert "| model" in (out / "metrics.md").read_text()
    assert "samples.png" in capsys.readouterr().out
