"""logs/<run>.log: the lines logged while a run is captured, those before its folder existed included."""

from __future__ import annotations

import logging

import pytest

from hftraining import run_log

log = logging.getLogger("hftraining")


@pytest.fixture
def quiet_loggers():
    """The package's loggers at INFO without the CLI's stderr handlers (an earlier test's stream may be closed)."""
    saved = [(logger, logger.handlers[:], logger.level, logger.propagate)
             for logger in map(logging.getLogger, run_log.LOGGERS)]
    for logger, _, _, _ in saved:
        logger.handlers[:] = []
        logger.setLevel(logging.INFO)
        logger.propagate = False
    yield
    for logger, handlers, level, propagate in saved:
        logger.handlers[:] = handlers
        logger.setLevel(level)
        logger.propagate = propagate


def test_lines_before_the_run_is_named_are_kept_and_the_first_run_names_the_file(tmp_path, quiet_loggers):
    with run_log.capture():
        log.warning("data AAA: 3 duplicated dates")                         # before the run id is known
        logging.getLogger("hftraining.data.bars").info("data AAA: loaded")  # a child logger
        logging.getLogger("py.warnings").warning("a library warning")      # Python warnings, once captured
        assert run_log.attach(tmp_path, "r1") == (tmp_path / "logs" / "r1.log").resolve()
        log.info("single AAA: trained")
        assert run_log.attach(tmp_path, "r1-scratch") == (tmp_path / "logs" / "r1.log").resolve()   # first wins
        with run_log.capture():                                              # a nested run has its own file
            run_log.attach(tmp_path, "inner")
            log.info("single BBB: inner line")
    log.info("after the capture")
    text = (tmp_path / "logs" / "r1.log").read_text()
    for line in ("WARNING hftraining: data AAA: 3 duplicated dates", "INFO hftraining.data.bars: data AAA: loaded",
                 "WARNING py.warnings: a library warning", "INFO hftraining: single AAA: trained",
                 "single BBB: inner line"):
        assert line in text, line
    assert "after the capture" not in text and not (tmp_path / "logs" / "r1-scratch.log").exists()
    assert (tmp_path / "logs" / "inner.log").read_text().count("\n") == 1
    assert run_log.log_path(tmp_path, "r1") == str((tmp_path / "logs" / "r1.log").resolve())
    assert run_log.log_path(tmp_path, "never") is None


def test_nothing_is_written_without_a_capture(tmp_path):
    assert run_log.attach(tmp_path, "r1") is None and not (tmp_path / "logs").exists()
