"""Config-driven jobs: ``keras-distill run JOB.yaml`` over your own teacher,
student and data (see docs/jobs.md).

* `keras_distill.jobs.config`: the job file's schema (`load_job`, `JobError`).
* `keras_distill.jobs.sources`: teachers, students and data from the job's sources.
* `keras_distill.jobs.stages`: what each stage does.
* `keras_distill.jobs.runner`: `run_job`, stage records and ``--resume``.
* `keras_distill.jobs.report`: ``results.json``, ``results.md`` and plots.

Example:
>>> from keras_distill import jobs
>>> jobs.load_job, jobs.run_job  # doctest: +ELLIPSIS
(<function load_job at ...>, <function run_job at ...>)
"""

from keras_distill.jobs.config import JobError, load_job, parse_job
from keras_distill.jobs.runner import run_job

__all__ = ["JobError", "load_job", "parse_job", "run_job"]
