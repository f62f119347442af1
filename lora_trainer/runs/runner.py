"""One training run at a time in its own process, for the UI: start, follow, stop, resume, publish.

The trainer runs as `python -m lora_trainer train --config <project>/<name>.json` in a child process,
so an out-of-memory error or a crash ends that process and never the WebUI. Its console output goes
to `<project>/log/trainer.log`; its progress is read from the run's `events.jsonl` (see
`runs/follow.py`), which the trainer writes line by line. Every LoRA the run saves is handed to
`host.publish_lora` so the WebUI lists it while training goes on; `project_loras` lists (and
publishes) every LoRA a project holds, from earlier runs and earlier WebUI sessions too.

The process is recorded in `<project>/log/trainer.pid.json` while it runs (`runs/trainer_record.py`):
a runner made after the WebUI restarted adopts it (follows it, can stop it, refuses a second start).
Start refuses an output name whose LoRA files exist (`runs/lora_files.py`): the WebUI would keep
showing the old files under their names. A run's file names come from `runs/layout.py`.

`status(project)` is what a page showing that project displays: the runner's run when it is in that
project, else the project's last run read from its files (`runs/follow.py` `last_run_status`), with a
word about a run going on in another project. `resumable_output_name` names a project's stopped run
that Resume can continue, so a page opened later (a reload, a restarted UI) offers its name again.

No torch and no gradio here: the UI (`lora_trainer/ui/`) calls these functions and shows the `RunStatus`.
"""

from __future__ import annotations

import contextlib
import json
import re
import subprocess
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from lora_trainer.config import ConfigError, TrainConfig
from lora_trainer.config.settings import check_paths
from lora_trainer.host import Host, subprocess_env
from lora_trainer.project import Project, list_projects, open_project
from lora_trainer.runs import layout
from lora_trainer.runs.follow import (
    EventFollower,
    RunStatus,
    SavedLora,
    fill_progress,
    find_new_run_dir,
    last_run_status,
    log_header,
    outcome,
    outside_run,
    read_events,
    read_log_tail,
)
from lora_trainer.runs.layout import RunFiles
from lora_trainer.runs.lora_files import files_using_output_name, next_free_output_name, project_lora_files
from lora_trainer.runs.resume import changed_dataset_message, changes_since_stop
from lora_trainer.runs.trainer_record import (
    RecordedProcess,
    TrainerRecord,
    live_trainer,
    process_start_time,
    remove_record,
    write_record,
)

# TrainConfig's own default output name (kohya's 'lora'): a project's saved settings with it get the project's name.
KOHYA_OUTPUT_NAME = TrainConfig.__dataclass_fields__["output_name"].default

__all__ = ["DatasetChanged", "OutputNameTaken", "RunnerError", "TrainRunner", "config_for_project",
           "load_project_settings", "resumable_output_name", "tensorboard_command"]


class RunnerError(RuntimeError):
    """What the user asked cannot be done now (a run is already going, nothing to resume, ...)."""


class OutputNameTaken(RunnerError):
    """Start with an output name whose LoRA files exist: names them and a free name to use instead."""

    def __init__(self, output_name: str, files: list[Path], suggestion: str):
        self.output_name, self.files, self.suggestion = output_name, files, suggestion
        listed = ", ".join(p.name for p in files)
        super().__init__(
            f"the output name {output_name!r} is taken by {len(files)} LoRA file(s) in {files[0].parent}: "
            f"{listed}. WebUIs know a LoRA by its file name and keep one they have loaded until they "
            f"restart, so a new run needs a new name: use {suggestion!r} (free). To continue a stopped "
            "run under its name, press Resume instead; or delete those files.")


class DatasetChanged(RunnerError):
    """Resume of a run whose training images or captions changed since it stopped; lists the changes."""

    def __init__(self, output_name: str, changes: list[str]):
        self.changes = changes
        super().__init__(f"{output_name}: " + changed_dataset_message(
            changes, "resume with the changes (they are then named in the run's warnings)"))


# --- settings for a project ------------------------------------------------------------------------

def config_for_project(project: Project, settings: dict[str, Any], model: str) -> TrainConfig:
    """`settings` (TrainConfig field names) with the project's folders and the base model filled in;
    validated, so a wrong value raises ConfigError naming its key."""
    model = (model or "").strip()
    if not model:
        raise ConfigError("pretrained_model_name_or_path is empty: choose a base model "
                          "(an SDXL .safetensors checkpoint)")
    if Path(model).exists():
        model = str(Path(model).resolve())
    root = project.root.resolve()
    project = Project(root, project.name, project.repeats)
    return TrainConfig.from_dict({**settings, "pretrained_model_name_or_path": model,
                                  "train_data_dir": str(project.img), "output_dir": str(project.model),
                                  "logging_dir": str(project.log)})


def load_project_settings(project: Project) -> dict[str, Any]:
    """The project's saved settings (validated); ConfigError if the file is missing or wrong."""
    return TrainConfig.from_json(project.config_file).to_dict()


def resumable_output_name(project: Project) -> str | None:
    """The output name of the project's run that Resume can continue (the newest if several): it saved
    its state (`<output_name>-state/` with progress, in model/) and did not finish. None if there is
    none. A stopped run always saved a LoRA file too, so the names are taken from those files."""
    model = project.model
    found = []
    for name in dict.fromkeys(f.output_name for f in project_lora_files(model)):
        files = RunFiles(model, name)
        try:
            progress = json.loads(files.progress.read_text(encoding="utf-8"))
            saved_at, step, run_name = files.progress.stat().st_mtime, int(progress["global_step"]), progress["run_name"]
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if step < 1 or files.final_lora.exists():
            continue
        events = read_events(layout.events_file(project.log / str(run_name)))
        if any(e.get("event") == layout.FINISHED for e in events):
            continue
        found.append((saved_at, name))
    return max(found)[1] if found else None


def tensorboard_command(project: Project) -> str:
    folder = str(project.log.resolve())
    return f'tensorboard --logdir "{folder}"' if re.search(r"[\s'\"]", folder) else f"tensorboard --logdir {folder}"


# --- the runner ------------------------------------------------------------------------------------

@dataclass
class _Run:
    project: Project
    config: TrainConfig
    process: subprocess.Popen | RecordedProcess  # RecordedProcess: started by an earlier UI process
    launched_at: float
    log_offset: int
    run_dir: Path | None = None  # known at once on resume; found when the trainer creates it otherwise
    follower: EventFollower | None = None
    returncode: int | None = None
    ended_at: float | None = None
    stop_requested: bool = False
    saved: list[SavedLora] = field(default_factory=list)
    handled: set[Path] = field(default_factory=set)  # saved files already handed to the host
    publish_problems: list[str] = field(default_factory=list)


class TrainRunner:
    """Starts and follows one training process at a time. Thread-safe: UI callbacks and the watcher
    thread (which publishes saved LoRAs even when no page is open) share it. A new runner adopts a
    trainer an earlier UI process left running in one of the workspace's projects."""

    def __init__(self, host: Host, poll_interval: float = 1.0):
        self.host = host
        self.poll_interval = poll_interval
        self._lock = threading.RLock()
        self._run: _Run | None = None
        self._starting: str | None = None  # "project: output name" while the host frees its memory
        self._starting_root: Path | None = None  # that project's folder
        # saved file -> (its version, the host's name for it or None, why the host refused it)
        self._published: dict[Path, tuple[tuple | None, str | None, str]] = {}
        self.adopt()

    # --- commands ---
    def start(self, project: Project, config: TrainConfig, *, resume: bool = False,
              resume_changed: bool = False) -> RunStatus:
        """Write the config into the project, free the host's GPU memory, and launch the trainer;
        RunnerError if a run is going or starting, if another process holds the output's lock, or if
        the output name is too long for its folder; OutputNameTaken if a new run's name has files.
        `resume_changed`: resume although the training images or captions changed (else refused)."""
        with self._lock:
            others = self._workspace_projects()
            self._adopt([project, *others])  # one an earlier UI left running
            self._check_not_busy()
            self._check_no_outside_run([project, *others])
            problems = check_paths(config)
            if problems:
                raise ConfigError("; ".join(problems))
            self._check_output_free(config)
            if not resume:
                self._check_output_name(config)
            run_dir = self._resume_run_dir(config) if resume else None
            if resume and not resume_changed:
                self._check_dataset_unchanged(config)
            project.create()
            config.save_json(project.config_file)
            self._starting = f"{project.name}: {config.output_name}"
            self._starting_root = project.root.resolve()
        try:
            # Outside the lock: the host may wait for its own work (Forge: a generation in progress),
            # and status() must keep answering meanwhile.
            self._free_host_memory()
            with self._lock:
                self._starting = None
                self._begin(project, config, resume, run_dir, resume_changed)
                return self._status()
        finally:
            self._starting = None

    def _busy(self) -> bool:
        return bool(self._starting) or (self._run is not None and self._run.returncode is None)

    def _check_not_busy(self) -> None:
        if self._busy():
            busy = self._starting or f"{self._run.project.name}: {self._run.config.output_name}"
            raise RunnerError(f"a training run is already in progress ({busy}); stop it or wait until it ends")

    @staticmethod
    def _check_dataset_unchanged(config: TrainConfig) -> None:
        state_dir = RunFiles(config.output_dir, config.output_name).state_dir
        changes = changes_since_stop(state_dir, config.train_data_dir, config.caption_extension)
        if changes:
            raise DatasetChanged(config.output_name, changes)

    @staticmethod
    def _check_no_outside_run(projects: list[Project]) -> None:
        """A trainer started from the command line (or by another UI) holds the GPU too."""
        for project in projects:
            launch = outside_run(project)
            if launch:
                raise RunnerError(
                    f"a training started outside this UI is running in project {project.name} "
                    f"({launch['output_name']}, process {launch['pid']}); wait until it ends, or stop it "
                    "(Stop on that project, Ctrl-C in its terminal, or `python -m lora_trainer stop`)")

    @staticmethod
    def _check_output_free(config: TrainConfig) -> None:
        """The trainer takes the output's lock itself (and refuses there too, with no window between a
        check and the lock); this answers at once instead of after a launch."""
        too_long = layout.check_name_lengths(config.output_dir, config.output_name, config.logging_dir)
        if too_long:
            raise RunnerError(too_long)
        owner = layout.output_lock_owner(config.output_dir, config.output_name)
        if owner is not None:
            raise RunnerError(layout.lock_refusal(config.output_dir, config.output_name, owner))

    @staticmethod
    def _check_output_name(config: TrainConfig) -> None:
        model_dir = Path(config.output_dir)
        files = files_using_output_name(model_dir, config.output_name)
        if files:
            raise OutputNameTaken(config.output_name, files, next_free_output_name(model_dir, config.output_name))

    def _free_host_memory(self) -> None:
        try:
            self.host.free_memory()
        except Exception as e:  # noqa: BLE001 - whatever the host raises, the user gets a message
            raise RunnerError(f"could not free {self.host.name}'s GPU memory before training: {e}") from e

    def _begin(self, project: Project, config: TrainConfig, resume: bool, run_dir: Path | None,
               resume_changed: bool = False) -> None:
        previous, self._run = self._run, self._launch(project, config, resume, run_dir, resume_changed)
        if resume and previous and (previous.project.root, previous.config.output_name) == \
                (project.root, config.output_name):
            # A resumed run's saved files go on from the stopped one's.
            self._run.saved, self._run.handled = list(previous.saved), set(previous.handled)
            self._run.publish_problems = list(previous.publish_problems)
        self._watch_in_background(self._run)

    def stop(self, project: Project | None = None) -> RunStatus:
        """Ask the run to finish its step, save the LoRA and its state, and exit; with `project`, also
        a run that trains there without this runner (started from the command line)."""
        with self._lock:
            self._refresh()
            run = self._run
            if self._starting:
                raise RunnerError("the trainer is still starting; press Stop again in a moment")
            if run and project and not _same_folder(run.project.root, project.root):
                run = None  # the page shows another project: stop what trains there, not this
            if not run or run.returncode is not None:
                launch = outside_run(project) if project else None
                if launch is None:
                    raise RunnerError("no training is running")
                layout.request_stop(launch["output_dir"], launch["output_name"])
                return last_run_status(project)
            _request_stop(run.config)
            run.stop_requested = True
            return self._status()

    def status(self, project: Project | None = None) -> RunStatus:
        """The run this runner follows; with `project`, what a page showing that project displays:
        the runner's run when it is in that project, else the project's last run read from its files
        (idle when it has none), with `elsewhere` describing a run going on in another project."""
        with self._lock:
            self._refresh()
            current = self._status()
            root = self._starting_root if self._starting else (self._run.project.root if self._run else None)
        if project is None or (root is not None and _same_folder(root, project.root)):
            return current
        shown = last_run_status(project)
        if current.active:
            shown.elsewhere = f"training in project {current.project}" + \
                (f" ({current.output_name})" if current.output_name else "") + f": {current.message}"
        return shown

    def current_output_name(self, project: Project) -> str | None:
        """The output name of the run going on in `project`, if one is."""
        with self._lock:
            self._refresh()
            run = self._run
            if run and run.returncode is None and _same_folder(run.project.root, project.root):
                return run.config.output_name
            return None

    def opening_output_name(self, project: Project, saved: str | None = None) -> str:
        """The output name a project opens with (the Train tab and the HTTP routes' start): the name of
        a run going on in it or of a stopped run Resume can continue; else the saved settings' name (the
        project's name when they have kohya's default 'lora' or none) or, when earlier runs used it, the
        next free `<name>_v2` (`_v3`, ...)."""
        going_on = self.current_output_name(project) or resumable_output_name(project)
        if going_on:
            return going_on
        wanted = saved.strip() if saved and saved.strip() != KOHYA_OUTPUT_NAME else project.name
        return next_free_output_name(project.model, wanted)

    def adopt(self, projects: Iterable[Project] = ()) -> RunStatus:
        """Follow a trainer that an earlier UI process started and that still runs (the UI restarted
        while it trained): the one recorded in `projects`, or in any of the workspace's projects when
        none is given. A runner that follows a live run keeps following it."""
        with self._lock:
            self._adopt(list(projects) or self._workspace_projects())
            return self._status()

    def project_loras(self, project: Project, *, recheck: bool = False) -> tuple[list[SavedLora], list[str]]:
        """Every LoRA file in the project's model folder, newest output name first (earlier runs and
        earlier WebUI sessions included), each published to the host; and a line for each file the
        host could not take. `recheck` asks the host again about files it refused or already has
        (the user may have removed the file in the way, or the published copy)."""
        with self._lock:
            files = project_lora_files(project.model.resolve())
            saved, problems = [], []
            for lora in files:
                if recheck:
                    self._published.pop(lora.path, None)
                name, problem = self._publish(lora.path, project)
                if problem:
                    problems.append(problem)
                else:
                    saved.append(SavedLora(path=lora.path, name=name, kind=lora.kind, epoch=lora.epoch,
                                           step=lora.step, output_name=lora.output_name))
            return saved, problems

    def kill(self) -> None:
        """End the process at once, without saving (for shutdown and tests; Stop is the user's way)."""
        with self._lock:
            run = self._run
            if run and run.process.poll() is None:
                run.process.kill()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    run.process.wait(timeout=30)
                self._refresh()

    def command(self, config_file: Path, resume: bool, resume_changed: bool = False) -> list[str]:
        command = self.host.trainer_command() + ["train", "--config", str(config_file)]
        if resume:
            command.append("--resume")
            if resume_changed:
                command.append("--resume-changed")
        config_dir = self.host.sdxl_config_dir()
        if config_dir:
            command += ["--model-config-dir", str(config_dir)]
        return command

    # --- launching ---
    def _launch(self, project: Project, config: TrainConfig, resume: bool, run_dir: Path | None,
                resume_changed: bool = False) -> _Run:
        command = self.command(project.config_file.resolve(), resume, resume_changed)
        project.trainer_log.parent.mkdir(parents=True, exist_ok=True)
        with open(project.trainer_log, "ab") as log:
            offset = log.tell()
            log.write(log_header(resume, command).encode())
            log.flush()
            launched_at = time.time()
            try:
                process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                           stdin=subprocess.DEVNULL, env=subprocess_env())
            except OSError as e:
                raise RunnerError(f"cannot start the trainer ({command[0]}): {e.strerror or e}") from e
        run = _Run(project=project, config=config, process=process, launched_at=launched_at,
                   log_offset=offset, run_dir=run_dir)
        if run_dir:
            run.follower = EventFollower(layout.events_file(run_dir))
        self._record(run)
        return run

    @staticmethod
    def _record(run: _Run) -> None:
        """Write the run into its project, for a UI that restarts while it trains."""
        started = process_start_time(run.process.pid)
        if started is None:
            return  # it has already ended
        record = TrainerRecord(
            pid=run.process.pid, started=started, project_root=str(run.project.root.resolve()),
            project_name=run.project.name, repeats=run.project.repeats,
            config_file=str(run.project.config_file.resolve()), config=run.config.to_dict(),
            launched_at=run.launched_at, log_offset=run.log_offset,
            run_dir=str(run.run_dir) if run.run_dir else None)
        with contextlib.suppress(OSError):  # without it the run trains all the same
            write_record(run.project.trainer_record, record)

    @staticmethod
    def _resume_run_dir(config: TrainConfig) -> Path:
        """The log folder of the stopped run (its curves continue there); RunnerError if none."""
        files = RunFiles(config.output_dir, config.output_name)
        try:
            progress = json.loads(files.progress.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as e:
            raise RunnerError(f"nothing to resume for {config.output_name!r}: {files.state_dir} holds no saved "
                              "state (a run writes it when it stops or saves an epoch); press Start") from e
        return Path(config.logging_dir) / progress["run_name"]

    def _watch_in_background(self, run: _Run) -> None:
        threading.Thread(target=self._watch, args=(run,), daemon=True, name="lora-trainer-run-watch").start()

    def _watch(self, run: _Run) -> None:
        while True:
            with self._lock:
                if self._run is not run:
                    return
                self._refresh()
                if run.returncode is not None:
                    return
            try:
                run.process.wait(timeout=self.poll_interval)
            except subprocess.TimeoutExpired:
                pass

    # --- adopting a run an earlier UI process started ---
    def _adopt(self, projects: Iterable[Project]) -> None:
        self._refresh()
        if self._busy():
            return
        for project in projects:
            found = live_trainer(project.trainer_record)
            if found and self._follow_recorded(project, *found):
                return

    def _follow_recorded(self, found_in: Project, record: TrainerRecord, process: RecordedProcess) -> bool:
        """Follow the recorded run, if the record describes a run of the project it was found in: every
        path in it must lie inside that project (Stop writes into its output folder; a record is a
        file anyone who can write the workspace could plant)."""
        try:
            project = Project(Path(record.project_root), record.project_name, record.repeats)
            config = TrainConfig.from_dict(record.config)
        except ValueError:  # a record from another version of the package; its run is not ours to show
            return False
        run_dir = Path(record.run_dir) if record.run_dir else None
        root = found_in.root.resolve()
        paths = [project.root, Path(config.output_dir), Path(config.logging_dir), Path(config.train_data_dir),
                 *([run_dir] if run_dir else [])]
        if not all(_inside(path, root) for path in paths):
            return False
        self._run = _Run(project=project, config=config, process=process, launched_at=record.launched_at,
                         log_offset=record.log_offset, run_dir=run_dir,
                         follower=EventFollower(layout.events_file(run_dir)) if run_dir else None)
        self._watch_in_background(self._run)
        return True

    def _workspace_projects(self) -> list[Project]:
        workspace = self.host.workspace()
        return [open_project(workspace, name) for name in list_projects(workspace)]

    # --- following ---
    def _refresh(self) -> None:
        run = self._run
        if run is None or (run.returncode is not None and run.ended_at is not None):
            return
        returncode = run.process.poll()  # before reading events: an ended process has written them all
        if run.follower is None:
            found = find_new_run_dir(Path(run.config.logging_dir), run.config.output_name, run.launched_at)
            if found and not _launched_by(found, run.process.pid):
                found = None  # another trainer's run (ours was refused, or has not begun its own yet)
            if found:
                run.run_dir, run.follower = found, EventFollower(layout.events_file(found))
        if run.follower:
            run.follower.poll()
        self._publish_new(run)
        if returncode is None:
            if run.stop_requested and not self._has_event(run, layout.STOPPED):
                # The trainer clears a stale flag as it starts: a Stop pressed while it was still
                # loading must be asked again, or it would be lost.
                if not RunFiles(run.config.output_dir, run.config.output_name).stop_flag.exists():
                    _request_stop(run.config)
            return
        run.returncode, run.ended_at = returncode, time.time()
        RunFiles(run.config.output_dir, run.config.output_name).stop_flag.unlink(missing_ok=True)
        remove_record(run.project.trainer_record, run.process.pid)

    def _events_since_launch(self, run: _Run) -> list[dict[str, Any]]:
        if not run.follower:
            return []
        return [e for e in run.follower.events if e.get("time", 0) >= run.launched_at]

    def _has_event(self, run: _Run, kind: str) -> bool:
        return any(e["event"] == kind for e in self._events_since_launch(run))

    def _publish_new(self, run: _Run) -> None:
        for event in self._events_since_launch(run):
            if event["event"] not in (layout.SAVED, layout.FINISHED) or Path(event["path"]) in run.handled:
                continue
            path = Path(event["path"])
            run.handled.add(path)
            name, problem = self._publish(path, run.project)
            if problem:
                run.publish_problems.append(problem)
                continue
            kind = event["kind"] if event["event"] == layout.SAVED else layout.FINAL
            run.saved.append(SavedLora(path=path, name=name, kind=kind, epoch=event["epoch"], step=event["step"],
                                       output_name=run.config.output_name))

    def _publish(self, path: Path, project: Project) -> tuple[str | None, str]:
        """(the host's name for a saved LoRA, "") or (None, why the host refused it). Each version of
        a file goes to the host once: the UI lists the project's files every second."""
        try:
            stat = path.stat()
            version = (stat.st_ino, stat.st_size, stat.st_mtime_ns)
        except OSError:
            version = None
        known = self._published.get(path)
        if known is None or known[0] != version:
            try:
                known = (version, self.host.publish_lora(path, project.name), "")
            except Exception as e:  # noqa: BLE001 - a host problem must not stop following the run
                known = (version, None, f"{path}: could not make it available to {self.host.name}: {e}")
            self._published[path] = known
        return known[1], known[2]

    # --- the status ---
    def _status(self) -> RunStatus:
        run = self._run
        if self._starting:
            return RunStatus(state="starting", project=self._starting.split(": ", 1)[0],
                             message=f"freeing {self.host.name}'s GPU memory before the trainer starts "
                             "(waits for a generation in progress)")
        if run is None:
            return RunStatus()
        events = self._events_since_launch(run)
        status = RunStatus(project=run.project.name, output_name=run.config.output_name,
                           saved=list(run.saved), log_file=run.project.trainer_log, run_dir=run.run_dir,
                           warnings=[e["message"] for e in events if e["event"] == layout.WARNING],
                           publish_problems=list(run.publish_problems))
        fill_progress(status, events, run.follower.events if run.follower else [])
        status.elapsed_s = (run.ended_at or time.time()) - run.launched_at
        tail = read_log_tail(run.project.trainer_log, run.log_offset)
        status.log_tail = "\n".join(tail)
        status.state, status.message, status.error = outcome(
            status, events, tail, returncode=run.returncode, stop_requested=run.stop_requested,
            output_dir=run.config.output_dir)
        if not status.active:
            status.eta_s = None
        return status


def _launched_by(run_dir: Path, pid: int) -> bool:
    """Whether the run folder's trainer is process `pid` or one it started (a launcher, as Windows venvs
    have); a folder with no "launch" event yet is not taken. A trainer that has already ended cannot be
    told apart: its folder is taken."""
    launch = next((e for e in read_events(layout.events_file(run_dir)) if e.get("event") == layout.LAUNCH), None)
    if launch is None:
        return False
    if launch.get("pid") == pid:
        return True
    try:
        return pid in {p.pid for p in psutil.Process(launch["pid"]).parents()}
    except (psutil.Error, KeyError, TypeError, ValueError):
        return True


def _inside(path: Path, root: Path) -> bool:
    try:
        return path.resolve().is_relative_to(root)
    except (OSError, ValueError):
        return False


def _request_stop(config: TrainConfig) -> None:
    # A run this runner follows is live, so its output folder is the right place even before the
    # trainer has made it (it may still be loading the model).
    Path(config.output_dir).mkdir(parents=True, exist_ok=True)
    layout.request_stop(config.output_dir, config.output_name)


def _same_folder(a: Path, b: Path) -> bool:
    return Path(a).resolve() == Path(b).resolve()
