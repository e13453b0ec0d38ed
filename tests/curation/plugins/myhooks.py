"""User hooks used by the tests: a quality scorer and a feedback, importable as module:function."""




def id_number(pool, indices):
    """Quality = the numeric id (so the highest ids win)."""
    return pool.ids[indices].astype(float)


def prefer_cluster_zero(pool, selected, rng):
    """Feedback: items of cluster 0 have everything left to learn."""
    return (pool.clusters[selected] == 0).astype(float) * 5.0


SCORED_POOL_SIZES: list[int] = []


def record_pool_size(pool, indices):
    """Quality = 0, remembering the size of the pool the scorer was handed."""
    SCORED_POOL_SIZES.append(len(pool))
    return [0.0] * len(indices)
