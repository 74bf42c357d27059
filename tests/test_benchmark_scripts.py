"""The long benchmarks at smoke size: each script runs end to end on tiny budgets and writes its tables, so an
API change that breaks one shows here rather than at the next full rerun (its numbers are not checked)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(*args: str) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]


def test_lmm_checker_tables_at_smoke_size(tmp_path):
    common = ["--root", str(tmp_path / "runs"), "--steps", "2", "--pairs", "256", "--out", str(tmp_path)]
    _run("benchmarks/lmm_checker.py", "table1", *common)
    _run("benchmarks/lmm_checker.py", "quality", *common, "--n", "400")
    rows = json.loads((tmp_path / "lmm_quality.json").read_text())
    assert {"EDM (teacher)", "LMM", "2-RF (reflow of 1-RF on its own pairs)"} <= {r["model"] for r in rows}
    assert (tmp_path / "lmm_table1.md").is_file() and (tmp_path / "lmm_table1.png").stat().st_size > 10_000


def test_checker_table_at_each_recipe_or_one_budget(tmp_path):
    _run("-m", "flowmaps", "train", "configs/checker_fm.yaml", "train.steps=2", "--out", str(tmp_path / "fm"))
    common = ["--teacher", str(tmp_path / "fm"), "--n", "300", "--methods", "pfmm,meanflow", "--set",
              "model.width=16", "model.depth=1"]
    _run("benchmarks/checker_table.py", *common, "--steps", "4", "--batch", "32", "--runs", str(tmp_path / "a"),
         "--out", str(tmp_path / "a"))
    res = json.loads((tmp_path / "a.json").read_text())["methods"]
    assert {m: (r["steps"], r["batch"]) for m, r in res.items()} == {"pfmm": (4, 32), "meanflow": (4, 32)}
    assert f"checker_fm.yaml train.steps=2 --out {tmp_path / 'fm'}`" in (tmp_path / "a.md").read_text()
    pfmm = str(tmp_path / "a" / "pfmm")  # 4 rounds of one step: its last round's frozen copy against the model
    _run("benchmarks/pfmm_target.py", "--runs", pfmm, "--n", "300", "--out", str(tmp_path / "target"))
    target = json.loads((tmp_path / "target.json").read_text())[pfmm]
    assert target["round"] == 3 and len(target["model"]) == len(target["target"]) == 2
    _run("benchmarks/checker_table.py", *common, "train.steps=3", "--runs", str(tmp_path / "b"),
         "--out", str(tmp_path / "b"))  # no --steps / --batch: each recipe's batch (and here 3 steps by --set)
    res = json.loads((tmp_path / "b.json").read_text())["methods"]
    assert {m: (r["steps"], r["batch"]) for m, r in res.items()} == {"pfmm": (3, 512), "meanflow": (3, 512)}
    assert "ot coupling" in res["meanflow"]["net"] and "3 × 512" in (tmp_path / "b.md").read_text()


def test_step_cost_meanflow_and_gmm_benchmarks_at_smoke_size(tmp_path):
    _run("benchmarks/step_cost.py", "--width", "16", "--depth", "1", "--batch", "32", "--rounds", "1", "--steps", "1",
         "--out", str(tmp_path / "step_cost"))
    rows = json.loads((tmp_path / "step_cost.json").read_text())["rows"]
    assert {r["method"] for r in rows} >= {"fm", "lmd", "lsd", "fm+ot", "lsd+ot", "psdm+ot", "emd+bank", "fmm+ot",
                                           "pfmm+recipe"}
    _run("benchmarks/meanflow_2d.py", "--steps", "2", "--n", "400", "--data", "checker", "--runs",
         str(tmp_path / "mf"), "--out", str(tmp_path / "meanflow"))
    assert (tmp_path / "meanflow.md").is_file()
    _run("benchmarks/gmm_flowmaps.py", "--dims", "2", "--steps", "2", "--width", "16", "--depth", "1", "--n", "200",
         "--runs", str(tmp_path / "gmm"), "--out", str(tmp_path / "gmm_flowmaps"))
    assert (tmp_path / "gmm_flowmaps.md").is_file()


def test_peers_heldout_and_ablation_at_smoke_size(tmp_path):
    _run("benchmarks/peers.py", "--data", "rings", "--batch", "64", "--rounds", "1", "--steps", "1", "--n", "400",
         "--pairs", "256", "--set", "train.steps=3", "--root", str(tmp_path / "peers"),
         "--out", str(tmp_path / "peers"))
    result = json.loads((tmp_path / "peers.json").read_text())
    assert {r["model"] for r in result["quality"][0]["rows"]} >= {"flowmaps LMD", "torchcfm OT-CFM (Euler)"}
    assert len(result["speed"]) == 4 and len(result["ot"]) == 3
    _run("benchmarks/heldout.py", "--sets", "gmm8d", "--scale", "0.0005", "--n", "300", "--pairs", "256",
         "--root", str(tmp_path / "heldout"), "--out", str(tmp_path / "heldout"))
    runs = json.loads((tmp_path / "heldout.json").read_text())["runs"]["gmm8d"]
    assert {"fm", "edm", "lmd", "lsd", "meanflow", "lmm", "rf2"} <= set(runs)
    _run("benchmarks/scoreboard.py", "--runs", str(tmp_path / "heldout"), "--n", "300", "--scale", "0.0005", "--out",
         str(tmp_path / "board"))
    board = json.loads((tmp_path / "board.json").read_text())["gmm8d"]
    lmd = runs["lmd"]["rows"][1]["energy"] / runs["fm"]["rows"][0]["energy"]
    assert board["lmd"]["ratio"] == pytest.approx(lmd)
    assert set(board) == set(runs) - {"fm", "edm", "rf1", "otcfm", "botcfm"}  # every few-step recipe, none missing
    _run("benchmarks/scoreboard.py", "--runs", str(tmp_path / "heldout"), "--n", "300", "--out",
         str(tmp_path / "board1"))  # at another scale no run is the recipe as shipped: nothing counted
    assert json.loads((tmp_path / "board1.json").read_text())["gmm8d"] == {}
    for scale, kept in (("0.0005", set(board)), ("1", set())):  # the runs gone, a board keeps its current cells
        _run("benchmarks/scoreboard.py", "--runs", str(tmp_path / "none"), "--base", str(tmp_path / "board.json"),
             "--n", "300", "--scale", scale, "--out", str(tmp_path / "board2"))
        assert set(json.loads((tmp_path / "board2.json").read_text())["gmm8d"]) == kept
    stale = json.loads((tmp_path / "board.json").read_text())  # as if the teacher's recipe had changed since
    for cell in stale["gmm8d"].values():
        cell["teacher_config"]["train"]["steps"] += 1
        cell["teacher"] = 1.0
    (tmp_path / "stale.json").write_text(json.dumps(stale))
    free = {"fmm", "lsd", "esd", "psdm", "psdu", "meanflow"}  # no teacher section, no teacher pairs
    for runs_root, teacher in (("none", None), ("heldout", runs["fm"]["rows"][0]["energy"])):
        _run("benchmarks/scoreboard.py", "--runs", str(tmp_path / runs_root), "--base", str(tmp_path / "stale.json"),
             "--n", "300", "--scale", "0.0005", "--out", str(tmp_path / "board3"))
        board3 = json.loads((tmp_path / "board3.json").read_text())["gmm8d"]
        assert set(board3) == (free if teacher is None else set(board))  # distillations leave with their teacher
        for recipe in free:  # teacher-free cells stay, scored against the current teacher when there is one
            assert board3[recipe]["teacher"] == teacher
            ratio = runs[recipe]["rows"][1]["energy"] / teacher if teacher else None
            assert board3[recipe]["ratio"] == (pytest.approx(ratio) if teacher else None)
        assert ("| – |" in (tmp_path / "board3.md").read_text()) == (teacher is None)
    cand = ["--teacher-set", "train.lr=0.001"]  # a candidate teacher recipe: its runs count, the shipped ones' not
    _run("benchmarks/heldout.py", "--sets", "gmm8d", "--recipes", "fm,lmd", "--scale", "0.0005", "--n", "300",
         "--root", str(tmp_path / "cand"), "--out", str(tmp_path / "cand"), *cand)
    _run("benchmarks/scoreboard.py", "--runs", str(tmp_path / "heldout"), str(tmp_path / "cand"), "--n", "300",
         "--scale", "0.0005", "--out", str(tmp_path / "board4"), *cand)
    board4, ours = (json.loads((tmp_path / f"{f}.json").read_text()) for f in ("board4", "cand"))
    board4, ours = board4["gmm8d"], ours["runs"]["gmm8d"]
    assert board4["lmd"]["run"] == str(tmp_path / "cand" / "gmm8d" / "lmd")
    assert board4["lmd"]["ratio"] == pytest.approx(ours["lmd"]["rows"][1]["energy"] / ours["fm"]["rows"][0]["energy"])
    assert not {"emd", "pfmm"} & set(board4) and {"lmm", "rf2"} <= set(board4)  # only the flow maps' teacher changed
    assert board4["lsd"]["teacher"] == pytest.approx(ours["fm"]["rows"][0]["energy"])  # re-referenced to it
    assert "train.lr=0.001" in (tmp_path / "board4.md").read_text().splitlines()[0]
    _run("benchmarks/map_segments.py", "--run", str(tmp_path / "heldout" / "gmm8d" / "lmd"), "--n", "300",
         "--splits", "0.5", "--steps", "1,2", "--out", str(tmp_path / "segments"))
    rows = json.loads((tmp_path / "segments.json").read_text())["rows"]
    assert [r["sampler"] for r in rows[:3]] == ["teacher, adaptive solve", "map, N = 1", "map, N = 2"]
    assert len(rows) == 6 and all(r["score"] >= 0 for r in rows)
    lsd = str(tmp_path / "heldout" / "gmm8d" / "lsd")  # teacher-free: measured against its own velocity
    _run("benchmarks/map_segments.py", "--run", lsd, "--n", "300", "--splits", "0.5", "--steps", "1",
         "--out", str(tmp_path / "segments_lsd"))
    assert json.loads((tmp_path / "segments_lsd.json").read_text())["teacher"] == lsd
    assert "its own velocity" in (tmp_path / "segments_lsd.md").read_text()
    jumps = json.loads((tmp_path / "segments_lsd.json").read_text())["jumps"]
    assert [j["u"] for j in jumps] == ["0.5", "1"] and not any("X_{u,0}" in k for k in jumps[0])  # LSD: no backward
    _run("benchmarks/map_segments.py", "--run", str(tmp_path / "heldout" / "gmm8d" / "fmm"), "--n", "300", "--splits",
         "0.5", "--steps", "1", "--out", str(tmp_path / "segments_fmm"))
    back = json.loads((tmp_path / "segments_fmm.json").read_text())["jumps"][1]  # FMM, on the square: backward too
    assert 0 < back["X_{u,0}(Φ_{0,u}(z)) to z, median"] <= back["X_{u,0}(Φ_{0,u}(z)) to z, 90 %"]
    assert back["its energy to noise"] >= 0 and back["z's (floor)"] >= 0
    _run("benchmarks/teacher_marginals.py", "--runs", str(tmp_path / "heldout" / "gmm8d" / "fm"), "--n", "300",
         "--times", "0.5", "--out", str(tmp_path / "marginals"))
    (mid,) = json.loads((tmp_path / "marginals.json").read_text())["rows"]
    assert mid["coupling"] == "ot, block 256 of 1024" and min(mid["floor"], mid["independent"]) >= 0
    assert mid["rms the teacher's"] > 1.1 * mid["rms independent"]  # OT pairs point the same way: I_u stays wide
    _run("benchmarks/residual_tails.py", "--run", str(tmp_path / "heldout" / "gmm8d" / "lmd"), "--n", "2000",
         "--out", str(tmp_path / "tails"))
    tails = json.loads((tmp_path / "tails.json").read_text())[0]
    assert 0 < tails["median"] <= tails["mean"] and 0.01 <= tails["top 1 % share"] <= 1
    _run("benchmarks/step_grids.py", "--runs", str(tmp_path / "heldout" / "gmm8d" / "lmd"), "--n", "300",
         "--out", str(tmp_path / "grids"))
    grids = json.loads((tmp_path / "grids.json").read_text())[str(tmp_path / "heldout" / "gmm8d" / "lmd")]
    assert grids["scores"]["0.5"] == pytest.approx(runs["lmd"]["rows"][1]["energy"], rel=1e-6)  # heldout.py's N = 2
    assert grids["teacher"] == pytest.approx(runs["fm"]["rows"][0]["energy"]) and len(grids["scores"]) == 5
    r = subprocess.run([sys.executable, "benchmarks/heldout.py", "--sets", "gmm8d", "--recipes", "lmd", "--scale",
                        "0.0005", "--n", "300", "--root", str(tmp_path / "heldout"), "--out", str(tmp_path / "h2"),
                        "--set", "objective.grid_frac=0.5"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode != 0 and "another recipe" in r.stderr  # a cached run of another recipe is never reused
    r = subprocess.run([sys.executable, "benchmarks/heldout.py", "--sets", "gmm8d", "--recipes", "fm", "--scale",
                        "0.0005", "--n", "300", "--root", str(tmp_path / "heldout"), "--out", str(tmp_path / "h2"),
                        "--teacher-set", "objective.coupling=independent"], cwd=ROOT, capture_output=True, text=True,
                       timeout=600)
    assert r.returncode != 0 and "checker_fm.yaml" in r.stderr  # the teacher's overrides reach the teacher
    _run("benchmarks/lmm_ablation.py", "--scale", "0.002", "--teacher-scale", "0.002", "--seeds", "2", "--pairs",
         "256", "--n", "200", "--root", str(tmp_path / "ablation"), "--out", str(tmp_path / "ablation"))
    rows = json.loads((tmp_path / "ablation.json").read_text())["rows"]
    assert [r["row"] for r in rows[1::3]] == ["L2", "perceptual", "+ adversarial", "+ SOT"]


def test_ot_solvers_at_smoke_size(tmp_path):
    _run("benchmarks/ot_solvers.py", "--sizes", "8,16", "--sets", "rings,gmm8d", "--repeats", "1", "--out",
         str(tmp_path / "ot"))
    rows = json.loads((tmp_path / "ot.json").read_text())
    assert [(r["data"], r["n"]) for r in rows] == [("rings", 8), ("rings", 16), ("gmm8d", 8), ("gmm8d", 16)]
    assert all(r["simplex ms"] > 0 and r["Hungarian ms"] > 0 for r in rows)
