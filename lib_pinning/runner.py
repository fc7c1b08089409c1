"""Running a built job: in its run folder (prepared, or locked for a resume), with the progress bar, the report and
the signal guard attached. The command line and the Python API run every job here, whatever renders it."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from .engine import ResumeRefused, RunResult, run_pinning
from .interrupts import SignalGuard
from .job import Job, resume_differences
from .observer import Observer, ProgressBar
from .record import RunRecord
from .report import ReportRecorder
from .runfile import RunLock, prepare_run_dir


def execute(job: Job, out: str | Path | None = None, *, resume: RunRecord | None = None,
            observers: Sequence[Observer] = (), progress: bool = True, report: bool = True) -> RunResult:
    """Run `job`; with `resume` (the record in `out`), continue that run. Writes `out` with its report (unless
    `report` is False); raises an InputError (ResumeRefused) before anything is written."""
    if resume is not None:
        problems = resume_differences(resume, job.record)
        if problems:
            raise ResumeRefused("the run cannot be resumed with other inputs: " + "; ".join(problems))
    job.observers = [ProgressBar(progress), *observers]
    if out is None:
        with SignalGuard() as guard:
            job.observers.append(guard)
            return run_pinning(job)
    with (RunLock(out).acquire() if resume is not None else prepare_run_dir(out)):  # locked while written
        job.run_dir = Path(out)
        if report:
            job.observers.append(ReportRecorder(out, complete=resume is not None))
        with SignalGuard(job.observers) as guard:  # a second Ctrl-C hurries the report, never loses an image
            job.observers.append(guard)
            return run_pinning(job, resume)
