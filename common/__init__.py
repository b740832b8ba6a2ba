"""Floor 0, shared by every layer: user errors, atomic writes, registries, strict config IO, the command line,
stop signals, free ports."""
