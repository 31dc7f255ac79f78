"""The `fakevlm` command (not `cli.py`: Kedro reads that name for project commands): use a trained detector on your own images, and manage the registry's aliases.

    fakevlm detect IMAGE_OR_FOLDER... [--model models:/fakevlm@champion | FOLDER] [--json]
    fakevlm serve [--model models:/fakevlm@champion | FOLDER] [--host 127.0.0.1] [--port 8000] [--api-key KEY]
    fakevlm registry rollback | promote VERSION | unlock
    fakevlm deploy argo | kfp [--env gpu] [--by stage|node] [--output FILE]

The MLflow store is $MLFLOW_TRACKING_URI, else the project's sqlite:///mlflow.db; a server with
authentication reads $MLFLOW_TRACKING_USERNAME and $MLFLOW_TRACKING_PASSWORD.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from tqdm import tqdm

from fakevlm.detector import detect_files, load_detector, use_tracking_store

DEFAULT_MODEL = "models:/fakevlm@champion"
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".gif"}
# conf/base/parameters_registry.yml's (tests/test_cli.py checks they agree: the command runs where
# conf/ is not); a hand-made move waits less for a run's promotion than a run does
REGISTRY = {"model_name": "fakevlm", "champion_alias": "champion", "previous_alias": "previous", "lock_wait_s": 60,
            "lock_poll_s": 1.0}


def image_paths(targets: Sequence[str]) -> Iterator[Path]:
    """Files as given; folders walked for image files, sorted. A missing path is yielded too,
    so that it is reported rather than skipped in silence."""
    for target in map(Path, targets):
        if target.is_dir():
            yield from sorted(p for p in target.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        else:
            yield target


def detect(args: argparse.Namespace) -> int:
    detector = load_detector(args.model)
    paths = list(image_paths(args.targets))
    failures = 0
    for start in tqdm(range(0, len(paths), args.batch_size), desc="images", unit="batch", disable=len(paths) <= 1,
                      file=sys.stderr):
        batch = paths[start : start + args.batch_size]
        for result in detect_files(detector, [(str(path), path) for path in batch], args.batch_size):
            print_result(result, args.json)
            failures += "error" in result
    return 1 if failures == len(paths) else 0


def serve(args: argparse.Namespace) -> int:
    from fakevlm.server import check_exposure, run_server  # FastAPI and uvicorn only for this command

    check_exposure(args)  # before the model takes its time to load
    run_server(load_detector(args.model), args)
    return 0


def print_result(result: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(result), flush=True)
    elif "error" in result:
        print(f"{result['path']}: error: {result['error']}", flush=True)
    else:
        probability = "" if result["fake_probability"] is None else f" (fake probability {result['fake_probability']:.2f})"
        print(f"{result['path']}: {result['verdict'] or 'no verdict'}{probability}: {result['explanation']}", flush=True)


def registry(args: argparse.Namespace) -> int:
    from mlflow import MlflowClient

    from fakevlm.registry import promote, rollback, server_failures, unlock

    uri = use_tracking_store()
    client = MlflowClient()
    params = dict(REGISTRY, model_name=args.name)
    with server_failures(uri, f"{args.action} of model {args.name!r}"):
        if args.action == "rollback":
            record = rollback(client, args.name, params)
        elif args.action == "unlock":
            record = unlock(client, args.name)
        else:
            record = promote(client, args.name, args.version, params)
    print(json.dumps(record))
    return 0


def deploy(args: argparse.Namespace) -> int:
    from fakevlm import deploy as specs

    project = Path.cwd()
    with contextlib.redirect_stdout(sys.stderr):   # Kedro's log, so that the standard output is the spec alone
        if args.spec == "mlflow-run":
            text = specs.start_mlflow_run(project, args.env)
        else:
            text = (specs.argo_yaml if args.spec == "argo" else specs.kfp_yaml)(project, args.env, args.by)
    if args.output:   # an orchestrator's output path, whose folder may not exist yet (KFP's)
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(text)
    else:
        print(text, end="")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fakevlm", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("detect", help="say whether images are real or fake, and why")
    run.add_argument("targets", nargs="+", help="image files or folders (searched recursively)")
    run.add_argument("--model", default=DEFAULT_MODEL, help=f"registry URI or model folder (default {DEFAULT_MODEL})")
    run.add_argument("--json", action="store_true", help="one JSON object per image")
    run.add_argument("--batch-size", type=int, default=16)
    run.set_defaults(handler=detect)
    web = commands.add_parser("serve", help="an HTTP API, an OpenAI-compatible chat endpoint and a web page")
    web.add_argument("--model", default=DEFAULT_MODEL, help=f"registry URI or model folder (default {DEFAULT_MODEL})")
    web.add_argument("--host", default="127.0.0.1",
                     help="address to listen on (default 127.0.0.1, this machine only); another, e.g. 0.0.0.0, "
                          "needs --api-key or --allow-no-key")
    web.add_argument("--port", type=int, default=8000)
    web.add_argument("--api-key", default=os.environ.get("FAKEVLM_API_KEY"),
                     help="require `Authorization: Bearer KEY` on every endpoint but /health (default $FAKEVLM_API_KEY)")
    web.add_argument("--allow-no-key", action="store_true", help="listen on a --host beyond this machine without a key")
    web.add_argument("--allowed-host", action="append", metavar="NAME",
                     help="a Host name served besides localhost, 127.0.0.1, ::1 and --host (repeatable)")
    web.add_argument("--max-batch", type=int, default=16,
                     help="most images in one /detect request, and in one generation across requests (default 16)")
    web.add_argument("--batching", action=argparse.BooleanOptionalAction, default=True,
                     help="answer concurrent requests in one batched generation (default on)")
    web.add_argument("--batch-wait-ms", type=float, default=5, help="longest wait for more requests to batch (default 5)")
    web.add_argument("--max-upload-mb", type=float, default=20, help="largest request body, in MB (default 20)")
    web.add_argument("--max-image-mpixels", type=float, default=40,
                     help="largest image, in Mpixels, checked from its header before decoding (default 40)")
    web.add_argument("--max-aspect-ratio", type=float, default=20, help="longest side / shortest side (default 20)")
    web.add_argument("--max-request-mpixels", type=float, default=100,
                     help="all the images of one request together, in Mpixels (default 100)")
    web.add_argument("--decode-workers", type=int, default=2, help="images decoded at once, all requests together")
    web.add_argument("--shutdown-timeout", type=float, default=3,
                     help="seconds a stop signal waits for open connections (default 3)")
    web.set_defaults(handler=serve)
    reg = commands.add_parser("registry", help="move the champion alias by hand, or release the promotion lock "
                                                "a dead run left")
    reg.add_argument("action", choices=["rollback", "promote", "unlock"])
    reg.add_argument("version", nargs="?", help="the version to promote")
    reg.add_argument("--name", default=REGISTRY["model_name"])
    reg.set_defaults(handler=registry)
    spec = commands.add_parser("deploy", help="the orchestrator spec of the pipelines (run in the project folder)",
                               description="argo: an Argo Workflow; kfp: a Kubeflow pipeline; mlflow-run: (the "
                                           "workflow's first step) start its MLflow run and write the run's id")
    spec.add_argument("spec", choices=["argo", "kfp", "mlflow-run"])
    spec.add_argument("--env", default="gpu", help="the Kedro environment of every step (default gpu)")
    spec.add_argument("--by", choices=["stage", "node"], default="stage", help="a step per stage (default) or per node")
    spec.add_argument("--output", help="write it to this file (default: standard output)")
    spec.set_defaults(handler=deploy)
    args = parser.parse_args(argv)
    if args.command == "registry" and args.action == "promote" and not args.version:
        parser.error("registry promote needs a VERSION")
    try:
        return args.handler(args)
    except RuntimeError as error:
        from fakevlm.registry import RegistryError   # loaded by then: only MLflow's steps raise it

        if isinstance(error, RegistryError):
            parser.exit(2, f"fakevlm: error: {error}\n")
        raise


if __name__ == "__main__":
    sys.exit(main())
