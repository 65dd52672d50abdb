"""Data validation in the fetch step, after TFX's StatisticsGen, SchemaGen and ExampleValidator:
statistics of every data set version, a schema, anomalies against a reference, and a gate
that stops a broken or leaking data set before it costs a training run. README: "Data validation".
"""
