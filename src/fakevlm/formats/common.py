"""What every reader shares: safe paths, image roots (folder or zip), parallel decoding, rejects, rows.

A reader turns its annotation format into `Entry`s (one per image) or `RecordError`s (one per bad
record); `finish` decodes and hashes the images in worker processes and returns manifest rows plus
rejects, so every input item ends up in exactly one of the two.

Reject reasons read `"<kind>: <message>"`: the kind is a short stable key counted in the ingestion
summary, the message names the file and the record.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import logging
import math
import os
import re
import zipfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import pandas as pd
from PIL import Image, UnidentifiedImageError

log = logging.getLogger(__name__)

# The manifest: the interface every later stage reads. Order matters for readability only.
MANIFEST_COLUMNS = (
    "id",
    "image_path",
    "label",
    "category",
    "split",
    "source",
    "width",
    "height",
    "sha256",
    "artifact_family",
    "artifact_region",
    "artifact_strength",
    "reference_answer",
    "original",
)
# pandas' own string dtype for text: missing values are NA (pd.isna) both here and after a Parquet
# round trip, where object columns of None would come back as str columns of NaN.
MANIFEST_DTYPES = {
    column: {"width": "int64", "height": "int64", "artifact_strength": "float64"}.get(column, "str")
    for column in MANIFEST_COLUMNS
}
QUARANTINE_COLUMNS = ("source", "record", "path", "stage", "reason")
CATEGORIES = ("animal", "human", "object", "scene", "satellite", "doc", "deepfake")
LABEL_NAMES = ("real", "fake")
DEFAULT_WORKERS = 2
# A zip member in the manifest: fsspec's chained-URL spelling, `zip://<member>::<archive>`.
ZIP_URL = re.compile(r"^zip://(?P<member>.+)::(?P<archive>.+)$")


class RecordError(Exception):
    """One bad record or image: `kind` is the stable reason key, the message is for people."""

    def __init__(self, kind: str, message: str):
        super().__init__(f"{kind}: {message}")
        self.kind = kind
        self.message = message


@dataclass
class Entry:
    """One image a record asks for, before its file is checked: what the reader understood."""

    where: str  # "<file>: record <index or key>": names the record in every message and reject
    image: PurePosixPath  # relative to the source's image root, already checked by `safe_relative`
    label: str  # "real" | "fake"
    category: str
    original: Mapping[str, Any]  # the record as read (plus reader notes), kept in the manifest
    reference_answer: str | None = None
    artifact: tuple[str | None, str | None, float] = (None, None, math.nan)


# What a reader returns: manifest rows and rejects; every input item is in exactly one of them.
Ingested = tuple[pd.DataFrame, list[dict[str, str]]]


def reject(source: str, record: str, path: str | None, error: RecordError) -> dict[str, str]:
    """One quarantine row; `path` is the image (or file) the record is about, "" when unknown."""
    return {"source": source, "record": record, "path": path or "", "stage": "ingestion", "reason": str(error)}


def reason_kind(reason: str) -> str:
    """The stable key of a reject reason (the text before the first colon)."""
    return reason.split(":", 1)[0]


class UnreadableFile(ValueError):
    """An annotation file that cannot be read as its format needs; the message starts with its path.

    Ingestion quarantines the file (reason kind `unreadable_file`) and goes on with the rest.
    """

    def __init__(self, path: str | Path, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path = str(path)


class MissingFile(UnreadableFile, FileNotFoundError):
    """An annotation file that does not exist."""


def load_json(path: str | Path) -> Any:
    """A JSON file's content in UTF-8, UTF-16 or UTF-32 (a BOM is allowed: LOKI ships UTF-16 with one).

    A missing or broken file raises UnreadableFile naming the file and the position.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingFile(path, "annotation file not found")
    data = path.read_bytes()
    # RFC 8259's encodings, told apart by the BOM or the zero bytes around the first characters
    encoding = json.detect_encoding(data)
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError as err:
        raise UnreadableFile(path, f"invalid JSON: not {encoding} text at byte {err.start} "
                                   "(JSON files must be UTF-8, UTF-16 or UTF-32)") from err
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise UnreadableFile(path, f"invalid JSON at line {err.lineno}, column {err.colno}: {err.msg}") from err


def annotation_files(annotations: str | Path | Sequence[str | Path]) -> list[Path]:
    """The JSON files a source's `annotations` names: a file, a list of files, or every *.json in a
    folder (recursively, sorted)."""
    if isinstance(annotations, str | Path):
        path = Path(annotations)
        if not path.is_dir():
            return [path]
        files = sorted(path.rglob("*.json"))
        if not files:
            raise MissingFile(path, "folder holds no *.json annotation file")
        return files
    return [file for item in annotations for file in annotation_files(item)]


def unreadable(source: str, error: UnreadableFile) -> dict[str, str]:
    """The quarantine row of an annotation file that could not be read at all."""
    return reject(source, error.path, error.path, RecordError("unreadable_file", str(error)))


def safe_relative(value: Any, where: str, key: str = "image") -> PurePosixPath:
    """A record's image path as a relative posix path that cannot leave its root, else RecordError."""
    if not isinstance(value, str) or not value.strip():
        raise RecordError("bad_path", f"{where}: {key!r} must be a non-empty string, got {value!r}")
    # Windows separators and drive letters would escape the root on some systems: refuse them too.
    posix = PurePosixPath(value.replace("\\", "/"))
    if posix.is_absolute() or ".." in posix.parts or re.match(r"^[A-Za-z]:", value):
        raise RecordError("unsafe_path", f"{where}: {key!r} must stay inside the image root, got {value!r}")
    return posix


def require(record: Any, keys: Sequence[str], where: str) -> Mapping[str, Any]:
    """The record as a mapping holding every key in `keys`, else RecordError."""
    if not isinstance(record, Mapping):
        raise RecordError("not_an_object", f"{where}: expected a JSON object, got {type(record).__name__}")
    missing = [key for key in keys if key not in record]
    if missing:
        raise RecordError("missing_field", f"{where}: missing required key(s) {missing}")
    return record


def check_category(category: Any, where: str) -> str:
    """A FakeClue category name, else RecordError."""
    if category not in CATEGORIES:
        raise RecordError("unknown_category", f"{where}: unknown category {category!r}; expected one of {CATEGORIES}")
    return category


def verdicts_of(source: Mapping[str, Any]) -> Mapping[str, str]:
    """A source's `verdict`: the sentence for each label that opens the source's own explanations.

    Annotation keeps those explanations as the answers, and validation wants every answer to open
    as FakeClue's do ("This is a fake image."); LOKI's descriptions and DD-VQA's human answers do not.
    """
    verdicts = source["verdict"]
    if not isinstance(verdicts, Mapping) or not all(isinstance(verdicts.get(label), str) for label in LABEL_NAMES):
        raise ValueError(f"source {source['name']!r}: `verdict` must map {list(LABEL_NAMES)} to a sentence "
                         f"(as annotation.verdict does), got {verdicts!r}")
    return verdicts


def explained(verdicts: Mapping[str, str], label: str, explanation: str | None) -> str | None:
    """A source's own explanation in FakeClue's form: the label's verdict sentence, then the text."""
    return f"{verdicts[label]} {explanation}" if explanation else None


def workers_of(source: Mapping[str, Any]) -> int:
    """How many decoding processes a source asks for (0 or 1: decode in this process)."""
    return int(source.get("workers", DEFAULT_WORKERS))


# --- image roots ------------------------------------------------------------------------------------


class ImageRoot:
    """Where a source's images live: a folder or a zip archive, read without extracting."""

    location: str
    unsafe_members: list[str]

    def task(self, relative: PurePosixPath) -> tuple[str, ...]:
        """A picklable description of one image for `image_facts` in a worker."""
        raise NotImplementedError

    def display(self, relative: PurePosixPath) -> str:
        """The image's path as the manifest stores it."""
        raise NotImplementedError

    def walk(self, folder: str) -> list[PurePosixPath]:
        """Every file under `folder` (relative to the root), sorted: for sources without annotations."""
        raise NotImplementedError


def project_relative(path: str | Path) -> Path:
    """`path` relative to the working directory (the Kedro project root) when it lies inside it.

    Artifacts store image paths in this form, so they are the same in every clone and still
    resolve when `data/` is pulled or mounted elsewhere; paths outside the project stay as given.
    """
    path = Path(path)
    if path.is_absolute() and path.is_relative_to(Path.cwd()):
        return path.relative_to(Path.cwd())
    return path


def open_root(images: str | Path) -> ImageRoot:
    """The image root a source names: a zip archive when the path is one, else a folder."""
    path = project_relative(images)
    return ZipRoot(path) if path.is_file() and zipfile.is_zipfile(path) else FolderRoot(path)


class FolderRoot(ImageRoot):
    """Images in a folder. FakeClue's test images may sit one folder deeper (`test/test/...`)."""

    def __init__(self, root: Path):
        self.unsafe_members = []
        # descend while the root holds only a folder of its own name: unzipping test.zip into test/
        # gives test/test/...; paths in the annotations are relative to the inner one.
        while root.is_dir():
            children = [child for child in root.iterdir() if not child.name.startswith(".")]
            if len(children) != 1 or children[0].name != root.name or not children[0].is_dir():
                break
            root = children[0]
        self.root = PurePosixPath(root.as_posix())
        self.location = str(root)

    def task(self, relative: PurePosixPath) -> tuple[str, ...]:
        return ("file", str(self.root), relative.as_posix())

    def display(self, relative: PurePosixPath) -> str:
        return (self.root / relative).as_posix()

    def walk(self, folder: str) -> list[PurePosixPath]:
        base = Path(self.root) / folder
        if not base.is_dir():
            return []
        # hidden files (.DS_Store, ._x) are filesystem noise, not records; everything else is kept,
        # so a stray non-image is quarantined rather than silently skipped.
        return sorted(
            PurePosixPath(p.relative_to(Path(self.root)).as_posix())
            for p in base.rglob("*")
            if (p.is_file() or p.is_symlink()) and not p.name.startswith(".")
        )


class ZipRoot(ImageRoot):
    """Images inside a zip archive (FakeClue's train.zip / test.zip), read member by member."""

    def __init__(self, archive: Path):
        self.archive = str(archive)
        self.location = self.archive
        with zipfile.ZipFile(archive) as handle:
            names = [info.filename for info in handle.infolist() if not info.is_dir()]
        # zip-slip: a member that would be written outside the target if extracted is never used.
        self.unsafe_members = sorted(name for name in names if not _safe_member(name))
        self.members = {name for name in names if _safe_member(name)}
        # the archive's top folders: test.zip holds test/... (sometimes test/test/...); annotation
        # paths are relative to the innermost of these that exists.
        stem = archive.stem
        self.prefixes = [prefix for prefix in (f"{stem}/{stem}/", f"{stem}/", "") if
                         prefix == "" or any(name.startswith(prefix) for name in self.members)]

    def _member(self, relative: PurePosixPath) -> str:
        """The member name of an image: the first archive top folder that holds it."""
        name = relative.as_posix()
        for prefix in self.prefixes:
            if prefix + name in self.members:
                return prefix + name
        return self.prefixes[0] + name  # missing: reported as missing at this (most likely) place

    def task(self, relative: PurePosixPath) -> tuple[str, ...]:
        return ("zip", self.archive, self._member(relative))

    def display(self, relative: PurePosixPath) -> str:
        return f"zip://{self._member(relative)}::{Path(self.archive).as_posix()}"

    def walk(self, folder: str) -> list[PurePosixPath]:
        for prefix in self.prefixes:
            start = f"{prefix}{folder}/"
            found = [name for name in self.members if name.startswith(start)]
            if found:
                return sorted(PurePosixPath(name[len(prefix):]) for name in found
                              if not PurePosixPath(name).name.startswith("."))
        return []


def _safe_member(name: str) -> bool:
    """Whether an archive member stays inside the extraction target (no absolute, `..` or drive)."""
    posix = PurePosixPath(name.replace("\\", "/"))
    return not (posix.is_absolute() or ".." in posix.parts or re.match(r"^[A-Za-z]:", name))


def read_image_bytes(image_path: str) -> bytes | None:
    """The bytes of a manifest `image_path` (a file, or `zip://<member>::<archive>`); None if absent."""
    match = ZIP_URL.match(image_path)
    if match is None:
        path = Path(image_path)
        return path.read_bytes() if path.is_file() else None
    try:
        return _zip(match["archive"]).read(match["member"])
    except (FileNotFoundError, KeyError):
        return None


# What opening and decoding an image file raises when the file is not a usable image
UNREADABLE_IMAGE = (OSError, UnidentifiedImageError, Image.DecompressionBombError, Image.DecompressionBombWarning)


def open_image(image_path: str) -> Image.Image:
    """Open a manifest `image_path`: a file, or `zip://<member>::<archive>` for an archived image."""
    data = read_image_bytes(image_path)
    if data is None:
        raise FileNotFoundError(f"image not found: {image_path}")
    return Image.open(io.BytesIO(data))


# --- decoding in worker processes ---------------------------------------------------------------------


def _zip(archive: str) -> zipfile.ZipFile:
    """One open handle per archive and process: reading the central directory once, not per image.

    Keyed by process id too: a forked worker (a DataLoader's, a decoding pool's) must not share its
    parent's handle, whose file offset all of them would move.
    """
    return _zip_in_process(archive, os.getpid())


@functools.lru_cache(maxsize=8)
def _zip_in_process(archive: str, pid: int) -> zipfile.ZipFile:
    return zipfile.ZipFile(archive)


def image_facts(task: tuple[str, ...]) -> tuple[str, Any, Any]:
    """("ok", (width, height), sha256) of one image, or (kind, message, "") when it is unusable.

    Runs in worker processes, so it returns plain tuples and never raises for a bad image.
    """
    kind, location, name = task
    try:
        if kind == "zip":
            data = _zip(location).read(name)
        else:
            path = Path(location) / name
            # a symlink inside the tree could point anywhere: only files inside the root are read.
            if path.is_symlink() and not path.resolve().is_relative_to(Path(location).resolve()):
                return "unsafe_path", f"links outside the image root to {path.resolve()}", ""
            data = path.read_bytes()
    except (FileNotFoundError, KeyError, IsADirectoryError):
        return "image_missing", "image file not found", ""
    except OSError as err:
        return "image_unreadable", f"image file not readable: {err}", ""
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()  # a full decode: truncated files fail here, not in training
            size = image.size
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        return "image_undecodable", f"image not decodable: {err}", ""
    return "ok", size, hashlib.sha256(data).hexdigest()


def decode_all(tasks: Sequence[tuple[str, ...]], workers: int) -> list[tuple[str, Any, Any]]:
    """`image_facts` of every task, in task order; in `workers` processes when there are several."""
    if workers <= 1 or len(tasks) < 2:
        return [image_facts(task) for task in tasks]
    # big chunks: the per-task cost is one small file, so pickling round trips would dominate.
    chunk = max(1, min(256, len(tasks) // (workers * 4)))
    with ProcessPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(image_facts, tasks, chunksize=chunk))


# --- from entries to rows ----------------------------------------------------------------------------


def parse_records(
    items: Iterable[tuple[str, Any]], parse: Callable[[str, Any], list[Entry]], source: str
) -> tuple[list[Entry], list[dict[str, str]]]:
    """Entries of every (where, record) item; a record `parse` refuses becomes one reject."""
    entries: list[Entry] = []
    rejects: list[dict[str, str]] = []
    for where, record in items:
        try:
            entries.extend(parse(where, record))
        except RecordError as err:
            # FakeClue names its image `image`, LOKI `image_path`
            image = record.get("image", record.get("image_path")) if isinstance(record, Mapping) else None
            rejects.append(reject(source, where, image if isinstance(image, str) else "", err))
    return entries, rejects


def finish(
    entries: Sequence[Entry],
    rejects: list[dict[str, str]],
    root: ImageRoot,
    *,
    source: str,
    split: str,
    workers: int,
) -> Ingested:
    """Decode and hash every entry's image; manifest rows for the good ones, rejects for the rest."""
    members = [f"{root.location}: archive member {name!r}" for name in root.unsafe_members]
    rejects = list(rejects) + [
        reject(source, member, name, RecordError("unsafe_path", f"{member} would land outside the root"))
        for member, name in zip(members, root.unsafe_members, strict=True)
    ]
    kept, seen = [], {}
    for entry in entries:
        first = seen.setdefault(entry.image, entry)
        if first is not entry:
            message = f"{entry.where}: image {entry.image.as_posix()!r} already used by {first.where}"
            rejects.append(reject(source, entry.where, root.display(entry.image), RecordError("duplicate_path", message)))
        else:
            kept.append(entry)
    results = decode_all([root.task(entry.image) for entry in kept], workers)
    rows = []
    for entry, (status, size, digest) in zip(kept, results, strict=True):
        path = root.display(entry.image)
        if status != "ok":
            rejects.append(reject(source, entry.where, path, RecordError(status, f"{entry.where}: {size}: {path}")))
            continue
        rows.append(_row(entry, path, size, digest, source, split))
    frame = manifest_frame(rows).sort_values(["split", "id"], kind="stable").reset_index(drop=True)
    if rejects:
        log.warning("source %s: %d rejected, first: %s", source, len(rejects), rejects[0]["reason"])
    return frame, rejects


def manifest_frame(rows: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """Manifest rows as a frame with the manifest's columns and dtypes (also when there are none)."""
    return pd.DataFrame(rows, columns=list(MANIFEST_COLUMNS)).astype(MANIFEST_DTYPES)


def _row(entry: Entry, path: str, size: tuple[int, int], digest: str, source: str, split: str) -> dict[str, Any]:
    """One manifest row; width and height come from the decoded file, never from the record."""
    family, region, strength = entry.artifact
    return {
        "id": f"{source}/{split}/{entry.image.as_posix()}",
        "image_path": path,
        "label": entry.label,
        "category": entry.category,
        "split": split,
        "source": source,
        "width": size[0],
        "height": size[1],
        "sha256": digest,
        "artifact_family": family,
        "artifact_region": region,
        "artifact_strength": strength,
        "reference_answer": entry.reference_answer,
        "original": json.dumps(entry.original, sort_keys=True, ensure_ascii=False, default=str),
    }


def enumerate_list(data: Any, path: Path, noun: str = "records") -> Iterator[tuple[str, Any]]:
    """(where, record) of a JSON list; anything but a list fails the whole file."""
    if not isinstance(data, list):
        raise UnreadableFile(path, f"expected a JSON list of {noun}, got {type(data).__name__}")
    for index, record in enumerate(data):
        yield f"{path}: record {index}", record
