"""Any folder (or zip archive) with `real/` and `fake/` sub-folders; the category comes from config.

Source keys: `images` (the folder holding real/ and fake/, or a zip of it), `category`, `split`.
Every file below real/ or fake/ (nested folders included) is one record; hidden files are skipped.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fakevlm.formats.common import (
    LABEL_NAMES,
    Entry,
    Ingested,
    RecordError,
    check_category,
    finish,
    open_root,
    reject,
    workers_of,
)

REQUIRED_KEYS = ("images", "category", "split")


def read_folder(source: Mapping[str, Any]) -> Ingested:
    """Manifest rows and rejects of a real/ + fake/ folder; the label is the top folder's name."""
    name, root = str(source["name"]), open_root(source["images"])
    files = [(label, path) for label in LABEL_NAMES for path in root.walk(label)]
    try:
        category = check_category(source["category"], f"source {name!r}")
    except RecordError as err:
        # a wrong category in config would otherwise drop every image silently: each is quarantined.
        rejects = [reject(name, f"{root.location}: {path.as_posix()}", root.display(path), err) for _, path in files]
        return finish([], rejects, root, source=name, split=str(source["split"]), workers=0)
    entries = [
        Entry(
            where=f"{root.location}: {path.as_posix()}",
            image=path,
            label=label,
            category=category,
            original={"file": path.as_posix(), "folder": label},
        )
        for label, path in files
    ]
    return finish(entries, [], root, source=name, split=str(source["split"]), workers=workers_of(source))
