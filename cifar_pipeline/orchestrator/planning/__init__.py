"""Planning: which steps run, from which runs, with which parameters, and whether an
earlier run can be reused. Everything here decides; nothing starts a container."""
