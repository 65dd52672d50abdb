"""Reporting: the pipeline's report, its summary and headline results on the pipeline run,
and the names runs get."""
