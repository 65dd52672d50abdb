"""Fault handling: what dead orchestrators left running, and a cancelled run kept KILLED."""
