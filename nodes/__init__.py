"""One file per node; each a small function (state, runtime) -> partial update."""
