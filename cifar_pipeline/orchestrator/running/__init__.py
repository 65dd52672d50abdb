"""Running: the seam that runs a step (runner.py) and the engine behind it today: step
images, step containers, their Docker flags, the wheelhouse, a local store's tracking server."""
