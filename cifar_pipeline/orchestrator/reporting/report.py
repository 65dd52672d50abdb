"""What a pipeline run reports: each step's result and why it ran or was reused, the
verdicts of the steps that judge (data validation, promotion), the steps left out on
purpose, and how it ended. The loop fills it; summary.py logs it on the pipeline run.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from cifar_pipeline import names


@dataclass
class StepResult:
    step: str
    run_id: str  # the run whose output the pipeline used
    status: str  # FINISHED, FAILED, KILLED, ... or REUSED for a resumed-from run
    seconds: float
    action: str = "ran"  # ran | reused (cache hit) | given (a resume run ID)
    reasons: list[str] = field(default_factory=list)


@dataclass
class Verdict:
    """A judging step's verdict: lines for the summary, the first also a pipeline run tag."""

    label: str  # how the summary introduces each line, e.g. "data validation"
    lines: list[str]
    tag: str  # the pipeline run's tag that carries the first line
    one_line: bool = False  # summary.json holds the line itself, not a list

    def as_json(self) -> str | list[str]:
        return (self.lines[0] if self.lines else "") if self.one_line else self.lines


@dataclass
class PipelineReport:
    status: str = names.RUNNING
    error: str = ""
    results: list[StepResult] = field(default_factory=list)
    verdicts: dict[str, Verdict] = field(default_factory=dict)  # by name, e.g. "promotion"
    left_out: list[str] = field(default_factory=list)  # steps after `until`, not run on purpose
    until: str = ""
    exit_code: int = 0  # the pipeline's: 0, 1 (failed), 128 + a signal's number (cancelled)

    def end(self, status: str, error: str, exit_code: int) -> None:
        self.status, self.error, self.exit_code = status, error, exit_code

    def result(self, step: str) -> StepResult | None:
        return next((r for r in reversed(self.results) if r.step == step), None)

    def table(self) -> str:
        lines = [f"{'step':<11}{'run id':<34}{'status':<10}{'action':<8}{'seconds':>8}"]
        for r in self.results:
            lines.append(f"{r.step:<11}{r.run_id:<34}{r.status:<10}{r.action:<8}{r.seconds:>8.1f}")
            lines += [f"{'':<11}why: {reason}" for reason in r.reasons]
        if self.left_out:
            lines.append(f"left out on purpose (until={self.until}): {', '.join(self.left_out)}")
        for verdict in self.verdicts.values():
            lines += [f"{verdict.label}: {line}" for line in verdict.lines]
        return "\n".join(lines)

    def as_dict(self) -> dict[str, object]:
        return {
            "status": self.status,
            "error": self.error,
            "steps": [asdict(r) for r in self.results],
            "left_out": self.left_out,
            **{name: verdict.as_json() for name, verdict in self.verdicts.items()},
        }
