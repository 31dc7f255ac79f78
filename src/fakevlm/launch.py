"""Multi-process training: the Kedro node writes a job folder and a launcher starts the workers.

Kedro runs in one process (one MLflow run, one writer per output); only the training loop is
distributed. `torchrun` starts the processes of one node; DeepSpeed's launcher reaches several
nodes through a hostfile (over ssh, so the job folder must sit on storage all nodes share).
Each worker is `python -m fakevlm.launch JOB_DIR`; rank 0 saves the trained model into the job.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from fakevlm.model import FakeVLM
from fakevlm.training import EXAMPLE_COLUMNS, free_port, load_examples, train

# What torchrun / deepspeed set for their workers; a process started inside a launcher must drop
# them, or its own process group joins the enclosing one's port.
LAUNCHER_VARIABLES = frozenset({"RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"})


def environment_without_launcher() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in LAUNCHER_VARIABLES}


def write_job(job_dir: Path, fakevlm: FakeVLM, rows: pd.DataFrame, params: dict[str, Any]) -> None:
    """The untrained model, the training rows (paths, not pixels) and the training params."""
    fakevlm.save_pretrained(job_dir / "init")
    columns = [column for column in EXAMPLE_COLUMNS if column in rows]
    job = {"params": params, "rows": rows[columns].to_dict(orient="records")}
    (job_dir / "job.json").write_text(json.dumps(job))


def launcher_command(launcher: dict[str, Any], job_dir: Path) -> list[str]:
    """The command line that starts every worker of the job."""
    worker = ["-m", "fakevlm.launch", str(job_dir)]
    if launcher["command"] == "torchrun":
        return [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={launcher['nproc_per_node']}",
                "--nnodes=1", "--master_addr=127.0.0.1", f"--master_port={launcher.get('master_port') or free_port()}",
                *worker]
    if launcher["command"] == "deepspeed":
        hostfile = ["--hostfile", launcher["hostfile"]] if launcher.get("hostfile") else []
        return ["deepspeed", "--no_local_rank", *hostfile, f"--master_port={launcher.get('master_port') or free_port()}",
                "--module", *worker]
    raise ValueError(f"training.launcher.command: {launcher['command']!r} is not torchrun, deepspeed or null")


def launch(launcher: dict[str, Any], job_dir: Path) -> tuple[FakeVLM, dict[str, Any], list[dict[str, Any]]]:
    """Run the job's workers to the end; returns the trained model, rank 0's history and what
    each rank reports (rank, world size, last step of each stage)."""
    command = launcher_command(launcher, job_dir)
    result = subprocess.run(command, env=environment_without_launcher())
    if result.returncode != 0:
        raise RuntimeError(f"training workers failed (exit {result.returncode}): {' '.join(command)}")
    history = json.loads((job_dir / "history.json").read_text())
    ranks = [json.loads(path.read_text()) for path in sorted(job_dir.glob("rank*.json"))]
    return FakeVLM.from_pretrained(job_dir / "out"), history, sorted(ranks, key=lambda r: r["rank"])


def run_worker(job_dir: Path) -> None:
    """One rank: train the job's model; rank 0 saves it and the history."""
    job = json.loads((job_dir / "job.json").read_text())
    params = job["params"]
    # on the CPU: the Trainer moves it to this rank's GPU (all ranks loading onto the first would not fit)
    fakevlm = FakeVLM.from_pretrained(job_dir / "init", device="cpu")
    examples = load_examples(pd.DataFrame(job["rows"]))
    history = train(fakevlm.model, fakevlm.processor, examples, params["question"], params["stages"],
                    params["max_length"], params["cache_pixels"], params["lora"], params["augment"])
    rank, world_size = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    steps = {stage: max((entry.get("step", 0) for entry in entries), default=0) for stage, entries in history.items()}
    (job_dir / f"rank{rank}.json").write_text(json.dumps({"rank": rank, "world_size": world_size, "steps": steps}))
    if rank == 0:
        fakevlm.save_pretrained(job_dir / "out")
        (job_dir / "history.json").write_text(json.dumps(history))


def main(argv: Sequence[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1:
        raise SystemExit("usage: python -m fakevlm.launch JOB_DIR")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s rank " + os.environ.get("RANK", "0") + " %(message)s")
    run_worker(Path(args[0]))


if __name__ == "__main__":
    main()
