"""``lifecycle bench``: the pipeline, the replay, the pure fold and the codec measured on the
real broker, each beside a baseline of the same run."""
