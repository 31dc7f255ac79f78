"""report.html as a reader sees it: one offline file, opened in headless Chromium, whose example
rows show each image and the verdict the model gave it."""

import pandas as pd
from selenium.webdriver.common.by import By

from fakevlm.pipelines.evaluation.nodes import compute_metrics, report_evaluation

from ...conftest import chromium


def test_report_shows_each_examples_image_and_verdict_in_a_browser(labelled_images, tmp_path):
    rows = []
    for index, (image_id, image, label, answer) in enumerate(labelled_images[:8]):
        image.save(tmp_path / f"{image_id}.png")
        wrong = index in (1, 2)
        verdict = {"real": "fake", "fake": "real"}[label] if wrong else label
        rows.append({"benchmark": "mini", "id": image_id, "image_path": str(tmp_path / f"{image_id}.png"),
                     "category": "doc", "label": label, "artifact_family": "checkerboard" if label == "fake" else None,
                     "artifact_region": None, "reference": answer, "predicted_label": verdict,
                     "prediction": f"This is a {verdict} image. {answer.split('. ', 1)[-1]}",
                     "fake_probability": 0.9 if verdict == "fake" else 0.1})
    predictions = pd.DataFrame(rows)
    page, _, _ = report_evaluation(predictions, compute_metrics(predictions), {"calibration_bins": 10, "report_samples": 3})
    (tmp_path / "report.html").write_text(page)

    driver = chromium(tmp_path / "profile")
    try:
        driver.get((tmp_path / "report.html").as_uri())
        shown = driver.find_elements(By.CSS_SELECTOR, "tr.right, tr.wrong")
        assert shown, "no example rows on the page"
        truth = predictions.set_index("id")
        for row in shown:
            image = row.find_element(By.TAG_NAME, "img")
            image_id = image.get_attribute("alt")
            assert image.get_property("naturalWidth") > 0, f"{image_id}: its image did not load offline"
            verdict = row.find_element(By.CSS_SELECTOR, "td.verdict").get_property("textContent")
            assert verdict == truth.loc[image_id, "predicted_label"]
            assert row.get_attribute("class") == ("wrong" if verdict != truth.loc[image_id, "label"] else "right")
        # per group the most confident mistake comes first: both groups here have one
        assert [row.get_attribute("class") for row in shown].count("wrong") == 2
    finally:
        driver.quit()
