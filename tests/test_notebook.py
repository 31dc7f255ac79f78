"""notebooks/error_analysis.ipynb, executed with nbclient in the tiny run's copy of the project."""

from __future__ import annotations

import json
import shutil
from html.parser import HTMLParser

import nbformat
import pandas as pd
import pytest
from ipykernel.kernelspec import install as install_kernelspec
from nbclient import NotebookClient

from .conftest import PROJECT_ROOT
from .tiny_project import project_environment, tiny_run

NO_REFERENCE = "(none: the annotators found no clue, the image counts for the verdict only)"

NOTEBOOK = PROJECT_ROOT / "notebooks" / "error_analysis.ipynb"
KERNEL = "fakevlm-test"


@pytest.fixture(scope="module")
def kernel(tmp_path_factory):
    """A kernelspec that starts this interpreter, found before any the user has installed."""
    prefix = tmp_path_factory.mktemp("kernelspec")
    install_kernelspec(kernel_name=KERNEL, prefix=str(prefix))
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("JUPYTER_PATH", str(prefix / "share" / "jupyter"))
        yield KERNEL


def execute_notebook(project, kernel: str) -> nbformat.NotebookNode:
    """The notebook executed in `project`'s notebooks/ folder, where a user runs it; nbclient
    raises CellExecutionError on the first cell that raises."""
    (project / "notebooks").mkdir(exist_ok=True)
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    client = NotebookClient(notebook, timeout=120, kernel_name=kernel,
                            resources={"metadata": {"path": str(project / "notebooks")}})
    client.execute(env=project_environment(project))
    return notebook


def tagged_cell(notebook, tag: str):
    [cell] = [cell for cell in notebook.cells if tag in cell.metadata.get("tags", [])]
    return cell


def html_outputs(cell) -> str:
    return "".join(output.get("data", {}).get("text/html", "") for output in cell.outputs)


class _TableRows(HTMLParser):
    """The text of each cell of each <tr>, in order."""

    def __init__(self):
        super().__init__()
        self.rows: list[list[str]] = []
        self._cell: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        if tag == "tr":
            self.rows.append([])
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self.rows[-1].append("".join(self._cell).strip())
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def table_records(html: str) -> list[dict[str, str]]:
    """The rows of the one HTML table in `html` as {column header: cell text}."""
    parser = _TableRows()
    parser.feed(html)
    header, *rows = parser.rows
    return [dict(zip(header, row, strict=True)) for row in rows]


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    return tiny_run(tmp_path_factory)


@pytest.mark.e2e
def test_notebook_shows_the_runs_own_outputs(project, kernel):
    notebook = execute_notebook(project, kernel)
    metrics = json.loads((project / "data/08_reporting/metrics.json").read_text())
    predictions = pd.read_parquet(project / "data/07_model_output/predictions.parquet").set_index("id")

    # the summary table is metrics.json's figures, every benchmark and category of them
    summary = table_records(html_outputs(tagged_cell(notebook, "summary")))
    expected_rows = {(b, "(all)") for b in metrics} | {(b, c) for b in metrics for c in metrics[b]["per_category"]}
    assert {(row["benchmark"], row["category"]) for row in summary} == expected_rows
    for row in summary:
        scores = metrics[row["benchmark"]]
        if row["category"] != "(all)":
            scores = scores["per_category"][row["category"]]
        assert int(row["n"]) == scores["n"]
        for key in ("accuracy", "f1", "rouge_l", "css"):  # shown with 3 decimals
            assert float(row[key]) == pytest.approx(scores[key], abs=5e-4, nan_ok=True), (row, key)

    plot = tagged_cell(notebook, "per-category-plot")
    assert any("image/png" in output.get("data", {}) for output in plot.outputs)

    # A model trained for two steps gets verdicts wrong: the list shows some of them, each with
    # its image and its own generated answer beside the reference.
    wrong = predictions[predictions["predicted_label"] != predictions["label"]]
    assert len(wrong) > 0
    mistakes_html = html_outputs(tagged_cell(notebook, "worst-mistakes"))
    shown = table_records(mistakes_html)
    assert shown and {row["id"] for row in shown} <= set(wrong.index)
    assert mistakes_html.count('<img src="data:image/png;base64,') == len(shown)
    for row in shown:
        assert row["generated"] == predictions.loc[row["id"], "prediction"].strip()
        reference = predictions.loc[row["id"], "reference"]
        assert row["reference"] == (reference.strip() if isinstance(reference, str) else NO_REFERENCE)


def run_with_mistakes(project, folder, mistakes: dict[str, tuple[float, str]]):
    """A copy of the run where every answer is right and sure, except `mistakes` (real images
    called fake): {id: (fake probability, generated answer)}."""
    shutil.copytree(project, folder, ignore=shutil.ignore_patterns("06_models", "mlruns", "notebooks"))
    path = folder / "data/07_model_output/predictions.parquet"
    predictions = pd.read_parquet(path).set_index("id")
    predictions["predicted_label"] = predictions["label"]
    predictions["fake_probability"] = (predictions["label"] == "fake").astype(float)
    predictions["prediction"] = predictions["reference"]
    for image_id, (fake_probability, answer) in mistakes.items():
        predictions.loc[image_id, ["predicted_label", "fake_probability", "prediction"]] = ["fake", fake_probability, answer]
    predictions.reset_index().to_parquet(path)
    return folder


@pytest.mark.e2e
def test_notebook_lists_the_most_confident_mistakes_first(project, kernel, tmp_path):
    predictions = pd.read_parquet(project / "data/07_model_output/predictions.parquet")
    sure, unsure_close, unsure_far = sorted(predictions.loc[predictions["label"] == "real", "id"])[:3]
    reference = predictions.set_index("id")["reference"]
    mistakes = {
        unsure_close: (0.6, reference[unsure_close].replace("real", "fake")),  # high ROUGE-L
        sure: (0.9, "This is a fake image."),
        unsure_far: (0.6, "This is a fake image."),  # as unsure, further from its reference
    }

    notebook = execute_notebook(run_with_mistakes(project, tmp_path / "run", mistakes), kernel)

    shown = table_records(html_outputs(tagged_cell(notebook, "worst-mistakes")))
    assert [row["id"] for row in shown] == [sure, unsure_far, unsure_close]
    assert [row["generated"] for row in shown] == [mistakes[row["id"]][1] for row in shown]


@pytest.mark.e2e
def test_notebook_says_so_when_the_run_made_no_mistakes(project, kernel, tmp_path):
    notebook = execute_notebook(run_with_mistakes(project, tmp_path / "run", {}), kernel)

    mistakes = tagged_cell(notebook, "worst-mistakes")
    assert "No wrong verdicts" in "".join(
        output.get("data", {}).get("text/markdown", "") for output in mistakes.outputs
    )
    assert "<table" not in html_outputs(mistakes)


def test_notebook_is_committed_without_outputs():
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(notebook)
    code_cells = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert code_cells and all(not cell.outputs and cell.execution_count is None for cell in code_cells)
