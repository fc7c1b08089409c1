"""Prompt evolution runs driven from elsewhere (HTTP, a browser tab): each run works in a thread of its own, and
its chooser waits for a choice to be handed in for the generation it shows.

`EvolutionService` starts, lists, resumes and stops runs in one folder (a numbered run folder each, never reused);
`WaitingChooser` is the chooser of such a run: `choose` publishes the generation and waits, `submit` hands a
choice in (checked against the generation it was made for), `stop` ends the run keeping finished generations.
What a run has chosen is in its run.json after every generation, so a closed tab or a restart loses no finished
choice: the service resumes a run from its folder and shows the generation again (the same seeds render the same
candidates). Nothing here knows the WebUI: the service is given a function that builds a run's job.
"""

from __future__ import annotations

import base64
import re
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from . import breeding
from .chooser import Choice, Chooser
from .engine import RunResult
from .errors import InputError
from .job import Job
from .record import RUN_FILE, RecordError, RunRecord, read_record
from .rendering import Rendered, RunStopped
from .report.images import png_bytes, to_pixels
from .runner import execute
from .winners import WordStatistic, word_statistics

RUN_NAME = re.compile(r"\d{5}")  # the service's run folders: 00001, 00002, ...
MakeJob = Callable[[str, str, dict, Chooser], Job]  # (prompt, negative prompt, options by name, chooser) -> job
ResumeJob = Callable[..., tuple[Job, RunRecord]]  # (folder, chooser=, **options) -> job, its record


class ChoiceConflict(InputError):
    """A choice for a generation that is not (or no longer) waiting for one."""


@dataclass
class Shown:
    """The generation a run waits on: its candidates' prompts, their images as PNG and (where the renderer made
    them, as the WebUI does) each image's infotext, else empty lists."""

    generation: int
    prompts: list[tuple[str, str]]
    images: list[list[bytes]]
    infotexts: list[list[str]]


class WaitingChooser:
    def __init__(self):
        self._changed = threading.Condition()
        self._shown: Shown | None = None
        self._choice: Choice | None = None
        self._stopped = False

    def choose(self, generation: int, prompts: Sequence[tuple[str, str]], batches: Sequence[Rendered]) -> Choice:
        images = [[png_bytes(pixels) for pixels in to_pixels(batch.images)] for batch in batches]
        infotexts = [list(batch.infotexts) for batch in batches]
        with self._changed:
            self._shown, self._choice = Shown(generation, list(prompts), images, infotexts), None
            self._changed.notify_all()
            while self._choice is None and not self._stopped:
                self._changed.wait()
            choice, self._shown = self._choice, None
            if choice is None:
                raise RunStopped()
            return choice

    @property
    def shown(self) -> Shown | None:
        with self._changed:
            return self._shown

    def wait_shown(self, timeout: float) -> Shown | None:
        """The generation shown, waiting up to `timeout` seconds for one."""
        with self._changed:
            self._changed.wait_for(lambda: self._shown is not None or self._stopped, timeout)
            return self._shown

    def submit(self, generation: int, choice: Choice) -> None:
        with self._changed:
            shown = self._shown
            if shown is None or shown.generation != generation:
                now = "no generation" if shown is None else f"generation {shown.generation}"
                raise ChoiceConflict(f"the run waits for a choice in {now}, not in generation {generation}")
            choice.check(len(shown.prompts))
            self._choice, self._shown = choice, None  # taken: nothing waits until the next generation is shown
            self._changed.notify_all()

    def stop(self) -> None:
        with self._changed:
            self._stopped = True
            self._changed.notify_all()


@dataclass
class EvolutionRun:
    name: str
    folder: Path
    chooser: WaitingChooser
    thread: threading.Thread | None = None
    result: RunResult | None = None
    error: str = ""                              # a fault outside the engine's own handling
    done: threading.Event = field(default_factory=threading.Event)

    def record(self) -> RunRecord | None:
        if self.result is not None:
            return self.result.record
        try:
            return read_record(self.folder)
        except RecordError:
            return None  # not written yet

    def summary(self) -> dict:
        """Its name, whether it runs, its status and how many generations it finished."""
        running = not self.done.is_set()  # first: a record read after it belongs to that moment or later
        record = self.record()
        status = record.status if record else "starting"
        if status == "running" and not running:  # its process ended without a word (a WebUI killed mid-run)
            status = "interrupted"
        return {"name": self.name, "running": running, "status": status,
                "generations": len(record.generations) if record else 0}

    def state(self) -> dict:
        """What a client shows: the summary, the run's folder, ending and best, and the generation waiting for a
        choice."""
        state = self.summary()
        record, shown = self.record(), self.chooser.shown
        state.update(folder=str(self.folder.resolve()), error=self.error,
                     ending=vars(record.ending) if record and record.ending else None,
                     best=vars(record.best) if record and record.best else None, waiting=None)
        if shown is not None:
            state["waiting"] = {"generation": shown.generation, "candidates": [
                {"index": index, "prompt": prompt, "negative_prompt": negative, "parents": parents,
                 "infotexts": infotexts, "images": [base64.b64encode(png).decode("ascii") for png in images]}
                for index, ((prompt, negative), images, infotexts, parents)
                in enumerate(zip(shown.prompts, shown.images, shown.infotexts, self.lineage(shown, record)))]}
        return state

    def lineage(self, shown: Shown, record: RunRecord | None = None) -> list[list[str]]:
        """Each shown candidate's parents (ids of the run's individuals), as the engine drew them."""
        record = record or self.record()
        engine = (record.state or {}).get("engine", {}) if record else {}  # saved with the generation before
        return breeding.lineage(len(shown.prompts), engine.get("parents", []), engine.get("bred"))


class EvolutionService:
    """The prompt evolution runs of one folder. `make_job` builds a new run's job (raising an InputError for bad
    input); `resume_job` builds the job that continues the run in a folder."""

    def __init__(self, folder: str | Path, make_job: MakeJob, resume_job: ResumeJob, report: bool = True):
        """`report`: each run writes its report (index.html, plots) beside its images, as pinning runs do."""
        self.folder = Path(folder)
        self.make_job, self.resume_job, self.report = make_job, resume_job, report
        self.runs: dict[str, EvolutionRun] = {}
        self._lock = threading.RLock()  # start() names a run while holding it

    def start(self, prompt: str, negative_prompt: str = "", options: dict | None = None) -> EvolutionRun:
        chooser = WaitingChooser()
        job = self.make_job(prompt, negative_prompt, dict(options or {}), chooser)  # refuses before a folder exists
        with self._lock:
            name = self._next_name()
            run = EvolutionRun(name, self.folder / name, chooser)
            self.runs[name] = run
        self._launch(run, job, None)
        return run

    def resume(self, name: str, options: dict | None = None) -> EvolutionRun:
        with self._lock:  # checked and taken at once: a second resume (a double click) is refused
            ended = self.get(name)
            if not ended.done.is_set():
                raise ChoiceConflict(f"run {name} is still running")
            run = self.runs[name] = EvolutionRun(name, ended.folder, WaitingChooser())
        try:
            job, record = self.resume_job(run.folder, chooser=run.chooser, **(options or {}))
        except BaseException:
            with self._lock:
                self.runs[name] = ended
            raise
        self._launch(run, job, record)
        return run

    def get(self, name: str) -> EvolutionRun:
        """A run of this service, or one a previous process left in the folder (not running)."""
        with self._lock:
            if name in self.runs:
                return self.runs[name]
            folder = self.folder / name
            if not RUN_NAME.fullmatch(name) or not (folder / RUN_FILE).is_file():
                raise KeyError(name)
            run = EvolutionRun(name, folder, WaitingChooser())
            run.done.set()
            self.runs[name] = run
            return run

    def names(self) -> list[str]:
        """This service's runs and the runs earlier processes left in the folder (those with a run.json)."""
        found = {name for name in self._numbered() if (self.folder / name / RUN_FILE).is_file()}
        with self._lock:
            return sorted(found | set(self.runs))

    def _numbered(self) -> set[str]:
        """Every numbered entry of the folder, run or not: a new run never takes one of their numbers."""
        return {entry.name for entry in self.folder.iterdir() if RUN_NAME.fullmatch(entry.name)} \
            if self.folder.is_dir() else set()

    def statistics(self, names: Sequence[str]) -> list[WordStatistic]:
        records = [self.get(name).record() for name in names]
        return word_statistics([record for record in records if record is not None])

    def ancestry(self, name: str, individual: str) -> list[dict]:
        """The individual and its ancestors, generation by generation back to the first: id, prompt, parents."""
        record = self.get(name).record()
        found = {i.id: i for generation in (record.generations if record else []) for i in generation.individuals}
        if individual not in found:
            raise KeyError(individual)
        tree, wanted = [], [individual]
        while wanted:
            members = [found[id] for id in wanted if id in found]
            tree.append([{"id": i.id, "prompt": i.prompt, "negative_prompt": i.negative_prompt, "chosen": i.chosen,
                          "place": i.place, "parents": i.parents, "folder": i.folder} for i in members])
            wanted = sorted({parent for i in members for parent in i.parents})
        return tree

    def stop(self, name: str) -> None:
        self.get(name).chooser.stop()

    def shutdown(self, timeout: float = 10.0) -> None:
        for run in list(self.runs.values()):
            run.chooser.stop()
        for run in list(self.runs.values()):
            if run.thread is not None:
                run.thread.join(timeout)

    def _next_name(self) -> str:
        taken = [int(name) for name in self._numbered() | set(self.runs)]
        return f"{max(taken, default=0) + 1:05d}"

    def _launch(self, run: EvolutionRun, job: Job, record: RunRecord | None) -> None:
        def work() -> None:
            try:
                run.result = execute(job, run.folder, resume=record, progress=False, report=self.report)
            except Exception as error:  # noqa: BLE001 - the service keeps serving; the run says what happened
                run.error = f"{type(error).__name__}: {error}"
            finally:
                run.done.set()

        run.thread = threading.Thread(target=work, name=f"evolution {run.name}", daemon=True)
        run.thread.start()
