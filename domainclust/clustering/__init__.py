"""Clustering the descriptors: k-means and power-iteration clustering, on the backend the machine has (faiss, cuVS, torch)."""
