"""Tools over a compiled network: graphviz pictures, the paper's feature figures, speed benchmarks."""
