"""The driver's background thread (``selfplay.loop.background.Latest``): the newest job runs, a waiting one is
replaced, close waits for the last, a failing job does not stop the thread."""

from __future__ import annotations

import logging
import threading
import time

import pytest

from selfplay.loop.background import Latest


def test_a_job_submitted_while_one_waits_replaces_it_and_close_runs_the_last():
    ran, running, release = [], threading.Event(), threading.Event()

    def first():
        running.set()
        release.wait(10)
        ran.append("first")

    worker = Latest("test")
    worker.submit(first)
    assert running.wait(10)  # first is running: the next two wait, the second replacing the first of them
    worker.submit(lambda: ran.append("second"))
    worker.submit(lambda: ran.append("third"))
    release.set()
    assert worker.close(10)
    assert ran == ["first", "third"]


def test_close_waits_for_the_job_in_progress():
    done = []
    worker = Latest("test")
    started = threading.Event()

    def slow():
        started.set()
        threading.Event().wait(0.3)
        done.append(True)

    worker.submit(slow)
    assert started.wait(10)
    assert worker.close(10) and done == [True]


def test_a_failing_job_is_logged_and_the_next_one_runs(caplog):
    ran, failing = [], threading.Event()

    def bad():
        failing.set()
        raise ZeroDivisionError("no plot")

    worker = Latest("drawing")
    with caplog.at_level(logging.ERROR, logger="selfplay.loop.background"):
        worker.submit(bad)
        assert failing.wait(10)  # bad has started: the next job runs after it, on the same thread
        worker.submit(lambda: ran.append(threading.current_thread().name))
        assert worker.close(10)
    assert "drawing: a background job failed" in caplog.text and "ZeroDivisionError: no plot" in caplog.text
    assert ran == ["drawing"]


def test_submit_after_close_is_refused_naming_the_worker():
    worker = Latest("plots and report")
    assert worker.close(10)
    with pytest.raises(RuntimeError, match="plots and report: submit after close"):
        worker.submit(lambda: None)


def test_with_a_share_the_next_job_waits_so_the_jobs_take_at_most_that_share_of_the_time():
    began, done = [], threading.Event()

    def job():
        began.append(time.monotonic())
        time.sleep(0.1)
        done.set()

    worker = Latest("test", share=0.25)
    worker.submit(job)
    assert done.wait(10)
    worker.submit(lambda: began.append(time.monotonic()))  # waits until 0.1 / 0.25 = 0.4 s after the first began
    time.sleep(0.6)
    assert worker.close(10)
    assert len(began) == 2 and began[1] - began[0] >= 0.4 - 1e-3


def test_close_runs_the_waiting_job_at_once_whatever_the_share():
    ran, done = [], threading.Event()
    worker = Latest("test", share=0.001)
    worker.submit(lambda: (time.sleep(0.05), done.set()))  # rests 50 s after it
    assert done.wait(10)
    worker.submit(lambda: ran.append(1))
    start = time.monotonic()
    assert worker.close(10) and ran == [1] and time.monotonic() - start < 5


def test_a_share_outside_zero_to_one_is_refused():
    with pytest.raises(ValueError, match=r"report: the share of the wall time its jobs may take is in \(0, 1\], got 0"):
        Latest("report", share=0)
