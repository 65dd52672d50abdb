"""Champion/challenger promotion: compare a tested candidate with the registry's champion
on the same images (comparison.py), decide by the configured policy (policy.py), and
register the candidate and move the alias (registry.py). `python -m
cifar_pipeline.promotion.rollback` points the alias back at the previous champion."""
