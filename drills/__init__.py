"""ceph-drills: chaos drills for Ceph clusters, driven by pytest."""

__version__ = "0.1.0"
