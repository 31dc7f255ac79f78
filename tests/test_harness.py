"""The test harness itself: what once crashed pytest mid-run and lost the rest of CI's output."""

import logging.config


def test_a_capsys_test_survives_logging_being_configured_in_process(capsys):
    # Kedro configures logging in-process (fakevlm.deploy); dictConfig closes every handler ever
    # made, absl's (tests/conftest.py) among them. Before the fix this closed pytest's own capture
    # file and pytest crashed at the next test ("lost sys.stderr").
    logging.config.dictConfig({"version": 1, "disable_existing_loggers": False})
    with capsys.disabled():
        pass
    print("captured again")
    assert capsys.readouterr().out == "captured again\n"


def test_capture_still_works_in_the_next_test(capsys):
    print("next")
    assert capsys.readouterr().out == "next\n"
