"""Data sources. Each turns its input into train/test `Split`s and class names."""
