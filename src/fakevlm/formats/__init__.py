"""Readers and writers of the on-disk data set formats fakevlm ingests."""

from fakevlm.formats.fakeclue import MANIFEST_COLUMNS, read_fakeclue, split_paths, write_fakeclue_split

__all__ = ["MANIFEST_COLUMNS", "read_fakeclue", "split_paths", "write_fakeclue_split"]
