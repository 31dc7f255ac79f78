"""The grounded annotator: no measurement, no claim.

Every clue it writes comes either from the record's own facts (FakeClue-mini's simulator records
the artifact family, region and strength it applied) or from a measurement on the image that
crossed its bound (measurements.py): a periodic spectral peak, lost fine detail, grain that
differs between regions, a block grid, a colour shift. Each measured clue is worded in the
category's aspect that the prompt library ties to that measurement, and placed in the grid cell
where it was measured. Real images get the clean side of the same measurements.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np

from fakevlm.annotators import Done, Request
from fakevlm.annotators.measurements import load_stack, measure
from fakevlm.annotators.prompts import prompt_hash
from fakevlm.formats.common import UNREADABLE_IMAGE, open_image

MEASURED = ("spectral", "detail", "noise", "blockiness", "colour")
# measurements whose `fake` side is a low value
LOW_IS_FAKE = frozenset({"detail"})


class GroundedAnnotator:
    def __init__(self, name: str, spec: dict[str, Any], params: dict[str, Any], prompts: dict[str, Any]):
        self.name = name
        self.spec = spec
        self.params = params
        self.prompts = prompts
        self.template = spec["template"]
        # the wording and bounds are this annotator's "model": editing them re-runs it alone
        self.model = "grounded-" + prompt_hash(spec, params["families"], params["strength_words"],
                                               params["places"], params["verdict"])

    def annotate(self, requests: Sequence[Request], done: Done) -> dict[str, str]:
        """Measure the images in same-size stacks of `batch_size` and write each answer."""
        errors: dict[str, str] = {}
        size = self.spec["batch_size"]
        for start in range(0, len(requests), size):
            # decoded `batch_size` at a time: a whole data set of pictures does not fit in memory
            by_size: dict[tuple[int, int], list[tuple[Request, Any]]] = defaultdict(list)
            for request in requests[start : start + size]:
                try:
                    image = open_image(request.image_path).convert("RGB")
                except UNREADABLE_IMAGE as error:  # missing, undecodable or a bomb: that record, not the run
                    errors[request.id] = f"{type(error).__name__}: {error}"
                    continue
                by_size[image.size].append((request, image))
            for group in by_size.values():
                values = measure(load_stack([image for _, image in group]), self.spec["block_size"])
                for row, (request, _) in enumerate(group):
                    done(request, self.answer(request, {k: v[row] for k, v in values.items()}))
        return errors

    def answer(self, request: Request, values: dict[str, Any]) -> str:
        """The verdict, the record's fact (fakes), then the strongest measured clues."""
        sentences = [self.params["verdict"][request.label]]
        if request.label == "fake" and request.family in self.params["families"]:
            sentences.append(self.record_fact(request))
        findings = sorted(
            ((margin, kind) for kind in MEASURED if (margin := self.margin(kind, request.label, values)) >= 1.0),
            key=lambda finding: (-finding[0], MEASURED.index(finding[1])),
        )
        for _, kind in findings[: self.spec["clues_per_answer"][request.label]]:
            sentences.append(self.clue(kind, request, values))
        return " ".join(sentences)

    def record_fact(self, request: Request) -> str:
        region = request.region or "the whole image"
        return self.params["families"][request.family].format(
            region=region, Region=_capital(region), strength=strength_word(request.strength, self.params["strength_words"])
        )

    def margin(self, kind: str, label: str, values: dict[str, Any]) -> float:
        """How far past its bound a measurement is on the label's side (>= 1: a claim); 0 if not."""
        value = float(values[kind])
        bound = self.spec["bounds"][kind][label]
        if math.isnan(value):
            return 0.0
        high_side = (label == "fake") != (kind in LOW_IS_FAKE)
        value, bound = max(value, 1e-9), max(bound, 1e-9)
        return value / bound if high_side else bound / value

    def clue(self, kind: str, request: Request, values: dict[str, Any]) -> str:
        """The clue sentence for one measurement, in the category aspect it belongs to."""
        subject = self.subject(request.category, kind)
        cell = _cell_of(kind, request.label)
        place = self.params["places"][int(values[cell])] if cell else ""
        sign = int(values["noise_sign"])
        return self.spec["clues"][kind][request.label].format(
            subject=subject, place=place, Place=_capital(place),
            period=f"{float(values['spectral_period']):g}", factor=f"{2 ** float(values['noise']):.1f}",
            direction=self.spec["directions"]["smoother" if sign < 0 else "noisier"],
            hue=self.spec["hues"][int(values["colour_hue"])],
        )  # fmt: skip

    def subject(self, category: str, kind: str) -> str:
        for aspect in self.prompts["categories"][category]["aspects"]:
            if kind in aspect["evidence"]:
                return aspect["subject"]
        raise ValueError(f"no aspect of category {category!r} lists the evidence {kind!r}")


def _cell_of(kind: str, label: str) -> str | None:
    """Which measurement locates a clue of `kind`: the cell it was extreme in."""
    if kind == "detail":
        return "detail_cell_low" if label == "fake" else "detail_cell_high"
    return {"noise": "noise_cell", "blockiness": "block_cell", "colour": "colour_cell"}.get(kind)


def _capital(text: str) -> str:
    return text[:1].upper() + text[1:]


def strength_word(strength: float | None, words: list[dict[str, Any]]) -> str:
    """The adjective for a relative strength: the word of the highest `from` not above it."""
    if strength is None or math.isnan(strength):
        return words[0]["word"]
    bounds = sorted(words, key=lambda entry: entry["from"])
    index = int(np.searchsorted([entry["from"] for entry in bounds], strength, side="right")) - 1
    return bounds[max(index, 0)]["word"]
