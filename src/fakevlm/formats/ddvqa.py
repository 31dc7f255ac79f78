"""DD-VQA (ECCV 2024): FaceForensics++ faces with human-written questions and answers.

`Reality-Defender/Research-DD-VQA` ships `DQ_FF++/{train_set,test_set}/<Name>/<Name>.json`, each
keyed `"<manipulation id>_<FF++ video>" -> {"<qid>": {"question": ..., "answer": [...]}}`;
`annotations` is one of them or a folder of them (`test_set`). `split/*.json` lists FF++ video
pairs, not questions, and is refused with what to pass instead.

The frames are not shipped: the n-th question of a video (in qid order) goes with its n-th
extracted frame. `images` is the FaceForensics++ root and `frames` the pattern of a frame below it,
with the fields {sequences} (`manipulated_sequences/<Method>` or `original_sequences/youtube`, as
FF++'s extraction script writes them), {manipulation} (FF++'s method name: id 6, DD-VQA's
"Neuraltexture", is NeuralTextures), {manipulation_id}, {compression} (c23, c40 or raw), {video},
{index} (n + `first_frame`: 0 for OpenCV's numbering, 1 for ffmpeg's) and {qid}.

A question's human answer becomes the frame's reference explanation in FakeClue's form: the
source's `verdict` sentence for the frame's label, then the answer.
"""

from __future__ import annotations

import functools
import itertools
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from fakevlm.explanations import contradicts, word_count
from fakevlm.formats.common import (
    Entry,
    Ingested,
    RecordError,
    UnreadableFile,
    annotation_files,
    explained,
    finish,
    load_json,
    open_root,
    parse_records,
    reject,
    require,
    safe_relative,
    unreadable,
    verdicts_of,
    workers_of,
)

REQUIRED_KEYS = ("images", "annotations", "split", "frames", "compression", "first_frame", "verdict")
# DD-VQA's manipulation ids (its README) -> FaceForensics++'s folder names
MANIPULATIONS = {0: "Deepfakes", 1: "Face2Face", 2: "FaceShifter", 3: "FaceSwap", 5: "Original", 6: "NeuralTextures"}
# An answer is kept as the reference explanation only when it explains: a bare "Yes."/"Fake" is not.
MIN_EXPLANATION_WORDS = 4
_KEY = re.compile(r"^(?P<id>\d+)_(?P<video>[^/\\]+)$")


def read_ddvqa(source: Mapping[str, Any]) -> Ingested:
    """Manifest rows and rejects of DD-VQA files: one row per question, mapped to its frame.

    A file that cannot be read (or is a split list) is one reject; the other files are still read.
    """
    name = str(source["name"])
    fields = {"compression": str(source["compression"])}
    pattern, first, verdicts = str(source["frames"]), int(source["first_frame"]), verdicts_of(source)
    entries, rejects = [], []
    for path in annotation_files(source["annotations"]):
        try:
            data = _load(path)
        except UnreadableFile as err:
            rejects.append(unreadable(name, err))
            continue
        for key, questions in sorted(data.items()):
            where = f"{path}: key {key!r}"
            try:
                video = _video(key, questions, where) | fields
            except RecordError as err:
                rejects.append(reject(name, where, "", err))  # the whole video: no question is usable
                continue
            parse = functools.partial(_entry, video=video, pattern=pattern, frames=itertools.count(first),
                                      verdicts=verdicts)
            parsed, bad = parse_records(_questions(path, key, questions), parse, name)
            entries += parsed
            rejects += bad
    return finish(entries, rejects, open_root(source["images"]), source=name, split=str(source["split"]),
                  workers=workers_of(source))


def _load(path: Path) -> Mapping[str, Any]:
    """One DD-VQA question file; UnreadableFile for anything but its keyed object."""
    data = load_json(path)
    if isinstance(data, list):
        raise UnreadableFile(path, f"a list of {len(data)} items, not DD-VQA questions: DQ_FF++/split/*.json lists "
                                   "FF++ video pairs; pass DQ_FF++/test_set (or train_set), or one of its "
                                   "<Name>/<Name>.json files, as `annotations`")
    if not isinstance(data, Mapping):
        raise UnreadableFile(path, f"expected a JSON object keyed '<manipulation id>_<video>', got {type(data).__name__}")
    return data


def _video(key: str, questions: Any, where: str) -> dict[str, Any]:
    """The manipulation and video of a key, checked; RecordError for a key or value DD-VQA never has."""
    match = _KEY.match(key)
    if match is None:
        raise RecordError("bad_key", f"{where}: expected '<manipulation id>_<video>'")
    manipulation_id = int(match["id"])
    if manipulation_id not in MANIPULATIONS:
        raise RecordError("bad_label", f"{where}: unknown manipulation id {manipulation_id}; known: {MANIPULATIONS}")
    if not isinstance(questions, Mapping):
        raise RecordError("not_an_object", f"{where}: expected an object of questions, got {type(questions).__name__}")
    manipulation = MANIPULATIONS[manipulation_id]
    sequences = "original_sequences/youtube" if manipulation == "Original" else f"manipulated_sequences/{manipulation}"
    return {"manipulation_id": manipulation_id, "manipulation": manipulation, "sequences": sequences,
            "video": match["video"]}


def _questions(path: Path, key: str, questions: Mapping[str, Any]) -> Iterator[tuple[str, Any]]:
    """(where, question) in qid order: numeric ids numerically ("10" after "9"), others after."""
    order = sorted(questions, key=lambda q: (0, int(q), q) if q.isdigit() else (1, 0, q))
    for qid in order:
        yield f"{path}: key {key!r} question {qid!r}", {"qid": qid, **_as_dict(questions[qid])}


def _as_dict(value: Any) -> dict[str, Any]:
    """A question as a dict; a non-object is wrapped so `require` reports it."""
    return dict(value) if isinstance(value, Mapping) else {"value": value}


def _entry(
    where: str, question: dict[str, Any], *, video: dict[str, Any], pattern: str, frames: Iterator[int],
    verdicts: Mapping[str, str],
) -> list[Entry]:
    """The frame of the n-th question; `frames` advances even for a bad question (one frame each)."""
    index = next(frames)
    require(question, ("question", "answer"), where)
    answers = question["answer"]
    if not isinstance(answers, list) or not all(isinstance(a, str) for a in answers):
        raise RecordError("bad_field", f"{where}: 'answer' must be a list of strings, got {answers!r}")
    try:
        frame = pattern.format(**video, index=index, qid=question["qid"])
    except (KeyError, ValueError, IndexError) as err:
        raise RecordError("bad_path", f"{where}: frame pattern {pattern!r} failed: {err}") from err
    label = "real" if video["manipulation"] == "Original" else "fake"
    # A question has 1-4 answers from different annotators, mostly one observation in other words.
    # FakeClue's reference is one explanation, and joined they would repeat it, so one is used: the
    # longest (the most clues; the first of equals) of those that explain and do not state the
    # other verdict ("The eyes look real." about a fake frame), which would then follow a verdict
    # sentence it contradicts. All answers stay in `original`.
    explanations = [a for a in answers if word_count(a) >= MIN_EXPLANATION_WORDS and not contradicts(a, label)]
    return [Entry(
        where=where,
        image=safe_relative(frame, where, "frame"),
        label=label,
        category="deepfake",
        original={**video, **question},
        reference_answer=explained(verdicts, label, max(explanations, key=word_count, default=None)),
    )]
