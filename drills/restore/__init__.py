"""Bounded-memory restores of OpenStack Cinder chunked backups (bug 1865011's lesson).

format.py (Cinder's backup format, reader and test writer), store.py (ranged-read store
interface, POSIX/NFS), rados_store.py (RADOS, untested), budget.py (global byte budget,
FIFO admission), compression.py (streaming decoders), sinks.py (file/block device, RBD),
engine.py (concurrent restores), cli.py (`drill restore`), memory.py (allocator and thread
stack settings), chain.py (incremental chains), throttle.py (--max-rate, adaptive rate).
"""
