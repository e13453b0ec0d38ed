"""Clustering of embeddings."""

from curation.cluster.faiss_kmeans import FaissKMeans
from curation.cluster.silhouette import choose_k, silhouette

__all__ = ["FaissKMeans", "choose_k", "silhouette"]
