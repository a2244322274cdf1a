"""Rich progress bars for long jobs, shown only when attached to a terminal."""

from __future__ import annotations

from types import TracebackType

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from candlekeep.jobs.base import NullProgress, ProgressSink


class RichProgress:
    def __init__(self, console: Console) -> None:
        self._progress = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TimeElapsedColumn(), TimeRemainingColumn(), console=console, transient=False,
        )
        self._tasks: dict[str, TaskID] = {}

    def __enter__(self) -> RichProgress:
        self._progress.start()
        return self

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._progress.stop()

    def start(self, key: str, total: int, description: str) -> None:
        self._tasks[key] = self._progress.add_task(description, total=max(total, 1))

    def advance(self, key: str, amount: int) -> None:
        if key in self._tasks:
            self._progress.advance(self._tasks[key], amount)

    def finish(self, key: str) -> None:
        if key in self._tasks:
            task = self._tasks[key]
            total = self._progress.tasks[self._index(task)].total or 0
            self._progress.update(task, completed=total)

    def _index(self, task: TaskID) -> int:
        return next(i for i, t in enumerate(self._progress.tasks) if t.id == task)


class _NullContext(NullProgress):
    def __enter__(self) -> _NullContext:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


def progress_for(console: Console, enabled: bool = True) -> RichProgress | _NullContext:
    if enabled and console.is_terminal:
        return RichProgress(console)
    return _NullContext()


__all__ = ["ProgressSink", "RichProgress", "progress_for"]
