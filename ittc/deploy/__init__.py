"""Making and running clusters: the key ceremony's output folder, and every node of a
cluster folder as local processes (for trials, the demo, benchmarks and tests)."""
