"""How a run ended: one name for the report, the words of the closing line, and the exit code.

Every way a run can end is one member here, so the closing line, the JSON and JUnit reports, and the
exit code cannot disagree (the report once mapped the closing line's words back to its own name).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from ...common.errors import ExitCode
from .revoke import Revocation


class Ending(StrEnum):
    """The value is the reports' name for it (report.schema.json's `ended`)."""

    EXITED = "exited"  # the script ended by itself (its own exit code)
    OUT_OF_MEMORY = "out-of-memory"  # the memory limit killed it (entry point: ExitCode.OOM)
    TIMEOUT = "timeout"  # --timeout
    INTERRUPT = "interrupt"  # Ctrl-C, SIGINT
    TERMINATE = "terminate"  # SIGTERM
    HANGUP = "hangup"  # SIGHUP: the terminal went away
    ENGINE_LOST = "engine-lost"  # the engine stopped answering mid-run

    @property
    def aborted(self) -> bool:
        """Ended from outside the script (a signal, --timeout, the engine)."""
        return self not in (Ending.EXITED, Ending.OUT_OF_MEMORY)

    @property
    def said(self) -> str:
        """The words of the closing line, `exit N (...)`."""
        return "the engine went away mid-run" if self is Ending.ENGINE_LOST else self.value

    @property
    def exit_code(self) -> int | None:
        """The exit code this ending gives the run; None: the script's own."""
        return _EXIT.get(self)

    @classmethod
    def of_exit(cls, code: int) -> Ending:
        """A script that ended by itself with `code`."""
        return cls.OUT_OF_MEMORY if code == ExitCode.OOM else cls.EXITED


_EXIT = {
    Ending.TIMEOUT: int(ExitCode.TIMEOUT),
    Ending.INTERRUPT: int(ExitCode.SIGINT),
    Ending.TERMINATE: int(ExitCode.SIGTERM),
    Ending.HANGUP: int(ExitCode.SIGHUP),
    Ending.ENGINE_LOST: int(ExitCode.TOOL),
}


@dataclass
class RunResult:
    """One run's outcome: the closing line, the reports and the exit code are made from it."""

    run_id: str
    exit_code: int
    duration: float
    leftovers: list[str] = field(default_factory=list)
    ending: Ending = Ending.EXITED
    revocation: Revocation | None = None  # --revoke-after's outcome, when it ran
    egress_refused: str = ""  # what the relay refused, "host:port xN, ..." (redacted)
    egress_unreachable: str = ""  # allowed hosts this machine could not connect to, the same way
    started_at: datetime | None = None  # when the run began (UTC), for reports
    image_id: str | None = None  # the image the sandbox ran, as the engine names it (sha256:...)

    @property
    def aborted(self) -> str | None:
        """What ended the run from outside the script (the closing line's words), if anything did."""
        return self.ending.said if self.ending.aborted else None

    def summary(self) -> str:
        state = (
            "container and secret destroyed (engine confirms)"
            if not self.leftovers
            else "LEFT BEHIND: " + ", ".join(self.leftovers) + " (run `qsandbox sweep`)"
        )
        why = f" ({self.aborted})" if self.aborted else ""
        refused = f"; egress refused: {self.egress_refused} (allow with --allow-host)" if self.egress_refused else ""
        if self.egress_unreachable:
            refused += f"; unreachable from this machine: {self.egress_unreachable}"
        return f"qsandbox: run {self.run_id} exit {self.exit_code}{why} in {self.duration:.2f}s; {state}{refused}"
