"""One module per outside system: embedder, scene store, couplings, sources, decoders."""
