"""Clustering of embeddings."""

from curation.cluster.faiss_kmeans import FaissKMeans

__all__ = ["FaissKMeans"]
