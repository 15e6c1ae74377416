"""A recording cluster: nodes sharing one PostgreSQL index and one bucket, cameras assigned by leases."""

from nvr.cluster.service import ClusterService, ClusterSettings

__all__ = ["ClusterService", "ClusterSettings"]
