"""The pipeline's report as Markdown (`report.md` on the pipeline run), for a person in the
MLflow UI: how it ended, each step with why it ran or was reused and a link to its run,
the verdicts of data validation and promotion, and the headline results."""

from __future__ import annotations

from cifar_pipeline.orchestrator.reporting.report import PipelineReport

Headlines = dict[str, tuple[dict[str, float], dict[str, str]]]  # step -> (metrics, tags)


def cell(text: str) -> str:
    """Text that stays in its table cell."""
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def run_link(experiment_id: str, run_id: str) -> str:
    """A link the MLflow UI follows within itself (its routes are after the `#`)."""
    return f"[`{run_id[:8]}`](#/experiments/{experiment_id}/runs/{run_id})"


def value(number: float) -> str:
    return f"{number:.4g}"


def render(report: PipelineReport, experiment_id: str, headlines: Headlines) -> str:
    lines = [f"# Pipeline {report.status}", ""]
    if report.error:
        lines += [f"**Why it stopped:** {report.error}", ""]
    lines += [
        "## Steps",
        "",
        "| step | run | status | action | seconds | why |",
        "| --- | --- | --- | --- | ---: | --- |",
    ]
    for result in report.results:
        why = "<br>".join(cell(reason) for reason in result.reasons)
        link = run_link(experiment_id, result.run_id)
        lines.append(
            f"| {result.step} | {link} | {result.status} | {result.action} | {result.seconds:.1f} | {why} |"
        )
    if report.left_out:
        lines += ["", f"Left out on purpose (until={report.until}): {', '.join(report.left_out)}."]
    for verdict in report.verdicts.values():
        lines += ["", f"## {verdict.label.capitalize()}", "", *[f"- {line}" for line in verdict.lines]]
    if any(metrics or tags for metrics, tags in headlines.values()):
        lines += ["", "## Headline results", "", "| result | value | step |", "| --- | --- | --- |"]
        for step, (metrics, tags) in headlines.items():
            lines += [f"| {name} | {value(number)} | {step} |" for name, number in metrics.items()]
            lines += [f"| {name} | {cell(text)} | {step} |" for name, text in tags.items()]
    return "\n".join(lines) + "\n"
