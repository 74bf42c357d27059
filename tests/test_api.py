"""The Python API: the README's example runs exactly as printed, and the public names are exported."""

import os
import re
from pathlib import Path

import flowmaps

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_example_runs_as_printed(tmp_path, capsys):
    text = README.read_text()
    section = text[text.index("## Python API"):]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    assert 15 <= len(code.strip().splitlines()) <= 25
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        exec(compile(code, "README.md", "exec"), {})
    finally:
        os.chdir(cwd)
    out = capsys.readouterr().out
    assert re.search(r"^map 1 NFE 1 KL \d", out, re.M) and re.search(r"^map 2 NFE 2 KL \d", out, re.M)
    assert (tmp_path / "runs" / "api_lmd" / "checkpoint.safetensors").exists()


def test_public_names():
    for name in flowmaps.__all__:
        assert getattr(flowmaps, name) is not None, name
    assert flowmaps.__version__ == "0.2.0" and "sample" in dir(flowmaps)
    assert issubclass(flowmaps.ConfigError, flowmaps.FlowmapsError)
