"""The real worker app for ``celery -A tests.support.service_worker worker``, with a fault injected by the test:

``ITVSAM_TEST_FAULT=crash``: every run of a job kills its worker process (SIGKILL, as the kernel's OOM killer would),
after the job was claimed. ``ITVSAM_TEST_FAULT=refuse``: the pipeline refuses every study as the reader refuses a bad
one (a ``StudyError``), after the job was claimed. ``ITVSAM_TEST_FAULT=slow``: the model hands each phase back
``SLOW_PHASE_S`` later than it has it, so that a job is still segmenting when a test acts (a tiny model on a small
phantom is done in seconds). Only the tests use this module; the service has no fault hooks of its own.
"""

from __future__ import annotations

import os
import signal

from workers import tasks
from workers.celery_app import celery_app

if os.environ.get("ITVSAM_TEST_FAULT") == "crash":
    def _crash(*_: object, **__: object) -> str:
        os.kill(os.getpid(), signal.SIGKILL)
        raise AssertionError("unreachable")

    tasks._run_claimed = _crash

if os.environ.get("ITVSAM_TEST_FAULT") == "refuse":
    from dicomrt.errors import PixelDecodeError
    from workers import pipeline

    def _refuse(*_: object, **__: object) -> None:
        raise PixelDecodeError("series 2 [abc123]: the pixel data of 1 image cannot be decoded (test)")

    pipeline.run_job = _refuse

if os.environ.get("ITVSAM_TEST_FAULT") == "slow":
    import time
    from dataclasses import replace

    from workers import pipeline

    SLOW_PHASE_S = 2.0
    _load_engine = pipeline.load_engine

    class _SlowPredictor:
        def __init__(self, predictor: object) -> None:
            self.predictor = predictor

        def predict_volumes(self, *args: object, **kwargs: object):
            for phase in self.predictor.predict_volumes(*args, **kwargs):
                time.sleep(SLOW_PHASE_S)
                yield phase

    def _slow_engine(*args: object, **kwargs: object) -> pipeline.Engine:
        engine = _load_engine(*args, **kwargs)
        return replace(engine, predictor=_SlowPredictor(engine.predictor))

    pipeline.load_engine = _slow_engine

app = celery_app
