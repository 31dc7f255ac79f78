"""bench/gpu_recipe.py at toy width on the CPU: the GPU measurement runs end to end before a GPU is lent."""

from __future__ import annotations

import re
import subprocess
import sys

from .conftest import PROJECT_ROOT
from .tiny_project import project_environment


def test_gpu_recipe_bench_runs_at_toy_width(tmp_path):
    result = subprocess.run([sys.executable, "bench/gpu_recipe.py", "--toy", "--steps", "1", "--generate", "4"],
                            cwd=PROJECT_ROOT, env=project_environment(tmp_path), capture_output=True, text=True,
                            timeout=900, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    figures = re.findall(r"([\d.]+) (samples/s|tokens/s|GiB|hours)", result.stdout)
    assert sorted(unit for _, unit in figures) == ["GiB", "hours", "samples/s", "tokens/s", "tokens/s"]
    assert all(float(value) > 0 for value, _ in figures)
    assert "gradient checkpointing, batch 2 x 1024 tokens" in result.stdout
