"""LOKI (ICLR 2025) image questions: a JSON list of questions about one image or a pair.

A question: `image_path` (string, or list of two), `question_type`, `type_sec` (LOKI's category,
mapped to FakeClue's by the source's `categories`), `question`, `answer`: "real"/"fake", or an
option letter "A"/"B". Extra keys are kept in `original`. Source keys: `images` (LOKI's image root),
`annotations`, `split`; optional `categories` {type_sec: category}, `options` {A: real|fake, ...}
(single-image questions whose text does not say which option is which) and `pair_asks`
(real|fake: what a two-image question asks for when its text does not say).

Which option is which is read from the question text first ("A. Real  B. AI-generated"), and a
pair question names the image it asks for ("Which image is AI-generated?" -> the chosen one is
fake, the other real). A question that cannot be decided is quarantined, never guessed.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fakevlm.formats.common import (
    CATEGORIES,
    Entry,
    Ingested,
    RecordError,
    check_category,
    enumerate_list,
    finish,
    load_json,
    open_root,
    parse_records,
    require,
    safe_relative,
    workers_of,
)

REQUIRED_KEYS = ("images", "annotations", "split")
# Words a question or option uses for each label; "not real" style negations are not expected in
# LOKI's fixed option texts, so plain word matching suffices.
_WORDS = {
    "fake": r"fake|ai[- ]generated|generated|synthetic|synthesi[sz]ed|artificial",
    "real": r"real|authentic|natural|genuine|photograph(?:ed)?",
}
_OPTION = re.compile(r"(?:^|[\s(])([AB])\s*[.):]\s*([^\n]*?)(?=(?:\s+[AB]\s*[.):])|$|\n)", re.IGNORECASE)
_OPPOSITE = {"real": "fake", "fake": "real"}


def read_loki(source: Mapping[str, Any]) -> Ingested:
    """Manifest rows and rejects of a LOKI question file; a two-image question gives two rows."""
    path = Path(source["annotations"])
    rules = _Rules(source)
    entries, rejects = parse_records(enumerate_list(load_json(path), path, "questions"), rules.entries, str(source["name"]))
    return finish(entries, rejects, open_root(source["images"]), source=str(source["name"]),
                  split=str(source["split"]), workers=workers_of(source))


class _Rules:
    """A source's configured mappings, applied to one question at a time."""

    def __init__(self, source: Mapping[str, Any]):
        # LOKI spells categories its own way ("Animal", "Doc"): same names map case-insensitively.
        self.categories = {c: c for c in CATEGORIES} | {str(k).lower(): v for k, v in (source.get("categories") or {}).items()}
        self.options = {str(k).upper(): v for k, v in (source.get("options") or {}).items()}
        self.pair_asks = source.get("pair_asks")

    def entries(self, where: str, record: Any) -> list[Entry]:
        """One Entry per image of a question; RecordError when a field is missing or undecidable."""
        record = require(record, ("image_path", "type_sec", "answer"), where)
        images = record["image_path"]
        images = [images] if isinstance(images, str) else images
        if not isinstance(images, list) or len(images) not in (1, 2):
            raise RecordError("bad_field", f"{where}: 'image_path' must be a string or a list of two, got {images!r}")
        paths = [safe_relative(image, where, "image_path") for image in images]
        category = check_category(self.categories.get(str(record["type_sec"]).lower(), record["type_sec"]), where)
        labels = self._labels(record, len(paths), where)
        suffix = len(paths) > 1
        return [
            Entry(
                where=f"{where} image {n}" if suffix else where,
                image=image,
                label=label,
                category=category,
                original={**record, "image_index": n} if suffix else record,
            )
            for n, (image, label) in enumerate(zip(paths, labels, strict=True))
        ]

    def _labels(self, record: Mapping[str, Any], count: int, where: str) -> list[str]:
        """The label of each image, from the answer and (for option letters) the question text."""
        answer = str(record["answer"]).strip().rstrip(".").strip()
        word = _label_word(answer)
        if count == 1 and word and len(answer) > 1:
            return [word]
        letter = answer.upper()
        if letter not in ("A", "B"):
            raise RecordError("bad_label", f"{where}: answer {record['answer']!r} is neither real/fake nor A/B")
        question = str(record.get("question", ""))
        if count == 1:
            options = {k.upper(): _label_word(text) for k, text in _OPTION.findall(question)} | self.options
            if options.get(letter) not in _OPPOSITE:
                raise RecordError("bad_label", f"{where}: cannot tell whether option {letter} means real or fake")
            return [options[letter]]
        asked = _label_word(question) or self.pair_asks
        if asked not in _OPPOSITE:
            raise RecordError("bad_label", f"{where}: cannot tell whether the question asks for the real or the fake image")
        chosen = 0 if letter == "A" else 1
        return [asked if n == chosen else _OPPOSITE[asked] for n in range(2)]


def _label_word(text: str) -> str | None:
    """"real" or "fake" when the text speaks of exactly one of them, else None."""
    found = {label for label, words in _WORDS.items() if re.search(rf"\b(?:{words})\b", text, re.IGNORECASE)}
    return found.pop() if len(found) == 1 else None
