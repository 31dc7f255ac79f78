"""Readers and writers of the on-disk data set formats fakevlm ingests.

Every reader takes one configured source (a dict) and returns `(rows, rejects)`: manifest rows
(columns `MANIFEST_COLUMNS`) and quarantine rows (source, record, path, stage, reason).
"""

from fakevlm.formats import ddvqa, fakeclue, folder, loki
from fakevlm.formats.common import (
    MANIFEST_COLUMNS,
    QUARANTINE_COLUMNS,
    UNREADABLE_IMAGE,
    open_image,
    read_image_bytes,
)
from fakevlm.formats.ddvqa import read_ddvqa
from fakevlm.formats.fakeclue import read_fakeclue, split_paths, write_fakeclue_split
from fakevlm.formats.folder import read_folder
from fakevlm.formats.loki import read_loki

# format name -> (reader, source keys it needs besides name and format)
READERS = {
    "fakeclue": (read_fakeclue, fakeclue.REQUIRED_KEYS),
    "loki": (read_loki, loki.REQUIRED_KEYS),
    "ddvqa": (read_ddvqa, ddvqa.REQUIRED_KEYS),
    "folder": (read_folder, folder.REQUIRED_KEYS),
}

__all__ = ["MANIFEST_COLUMNS", "QUARANTINE_COLUMNS", "READERS", "UNREADABLE_IMAGE", "open_image", "read_ddvqa", "read_image_bytes", "read_fakeclue",
           "read_folder", "read_loki", "split_paths", "write_fakeclue_split"]
