"""`make gpu-smoke`: the `--env gpu` path end to end on this CPU, in minutes.

It makes what a GPU user would download, locally: a LLaVA-1.5-shaped checkpoint (fakevlm.llava15)
and FakeClue-format data at 336 px where conf/gpu reads FakeClue; then it runs
`kedro run --env gpu` with only what a CPU forces overridden (conf/smoke/gpu_smoke.yml's
`overrides`): every stage, training through torchrun with 2 processes, ZeRO-2, gradient
checkpointing and images decoded by the loader workers, as conf/gpu has them.

    python -m fakevlm.smoke [--config conf/smoke/gpu_smoke.yml] [-- extra kedro run arguments]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from omegaconf import OmegaConf

from fakevlm import fakeclue_mini, llava15
from fakevlm.datasets.fakeclue_dataset import FakeClueDataset

DEFAULT_CONFIG = "conf/smoke/gpu_smoke.yml"


def write_data(data: dict[str, Any], mini_params: dict[str, Any]) -> dict[str, int]:
    """FakeClue-mini's generator at `data.image_size`, `data.per_category` images per category
    and split, written in FakeClue's layout under `data.folder`; returns the images per split."""
    params = {**mini_params, "image_size": data["image_size"], "per_category": data["per_category"]}
    splits = fakeclue_mini.build(params)
    FakeClueDataset(data["folder"]).save(splits)
    return {split: len(content["records"]) for split, content in splits.items()}


def kedro_params(overrides: dict[str, Any]) -> str:
    """`--params` of `kedro run`: dotted keys, values as YAML reads them back."""
    return ",".join(f"{key}={yaml.safe_dump(value, default_flow_style=True).strip().removesuffix('...').strip()}"
                    for key, value in overrides.items())


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fakevlm.smoke", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default=DEFAULT_CONFIG)
    parser.add_argument("kedro_args", nargs=argparse.REMAINDER, help="more `kedro run` arguments, after --")
    args = parser.parse_args(argv)
    config = yaml.safe_load(Path(args.config).read_text())
    timings: dict[str, float] = {}

    start = time.perf_counter()
    model = config["llava15"]
    fakevlm = llava15.build(model, llava15.corpus_from(model["corpus_files"], model["question"]))
    fakevlm.save_pretrained(model["folder"])
    timings["checkpoint"] = time.perf_counter() - start

    start = time.perf_counter()
    base = OmegaConf.to_container(OmegaConf.load("conf/base/parameters_ingestion.yml"), resolve=True)
    counts = write_data(config["data"], base["ingestion"]["fakeclue_mini"])
    timings["data"] = time.perf_counter() - start
    print(f"gpu-smoke: {model['folder']} and {config['data']['folder']} ({counts}) made", flush=True)

    start = time.perf_counter()
    extra = [a for a in args.kedro_args if a != "--"]
    command = [sys.executable, "-m", "kedro", "run", "--env", "gpu", "--params", kedro_params(config["overrides"]),
               *extra]
    result = subprocess.run(command)
    timings["kedro run --env gpu"] = time.perf_counter() - start
    print("gpu-smoke: " + ", ".join(f"{name} {seconds:.0f} s" for name, seconds in timings.items())
          + ("" if result.returncode == 0 else f"; kedro run failed (exit {result.returncode})"), flush=True)
    return result.returncode


if __name__ == "__main__":
    sys.exit(main())
