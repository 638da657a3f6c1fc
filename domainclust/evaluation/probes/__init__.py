"""Probes on frozen layers of a labelled store: k-NN, linear, the MLP, cluster/label agreement, held-out test stores."""
