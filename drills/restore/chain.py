"""Incremental backup chains: a full backup and its incrementals, oldest first.

Cinder keeps the parent of an incremental in its database (`parent_id` is also in the
metadata); the parent's container is not.  A chain is therefore given explicitly (every
link's container/prefix, full first) or discovered: every ``*_metadata`` under one
directory tree (Cinder's posix layout puts each backup in ``<root>/<id[0:2]>/<id[2:4]>/<id>``)
is indexed by backup_id and the parents of the wanted backup are followed to a full one.

`check_chain` verifies the links fit together before anything is written: the first is a
full backup, each next one names the previous one as its parent, and all describe the same
volume.  The block-level checks (each link's data against its own sha256 file; blocks an
increment did not store unchanged from its parent's sha256 file) run in the engine.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from drills.restore.errors import BackupFormatError, RestoreError
from drills.restore.format import METADATA_SUFFIX, BackupManifest
from drills.restore.store import BackupStore, PosixBackupStore

# Metadata files larger than this are not scanned during discovery (not Cinder metadata).
DISCOVERY_METADATA_LIMIT_BYTES = 64 * 1024 * 1024


class ChainError(RestoreError):
    """The links do not form one chain: wrong order, a missing or foreign link."""


@dataclass(frozen=True)
class ChainLink:
    """One backup of a chain: where it is."""

    store: BackupStore
    prefix: str


def check_chain(manifests: Sequence[BackupManifest]) -> None:
    """ChainError unless manifests[0] is full and each next one's parent is the previous one."""
    if not manifests:
        raise ChainError("an empty chain")
    first = manifests[0]
    if first.is_incremental:
        raise ChainError(f"the chain starts with an incremental backup (parent_id {first.parent_id}); "
                         "give the full backup first", backup=first.prefix)
    for parent, child in zip(manifests, manifests[1:]):
        if not child.is_incremental:
            raise ChainError("a full backup in the middle of the chain: restore it on its own",
                             backup=child.prefix)
        if child.parent_id != parent.backup_id:
            raise ChainError(f"parent_id {child.parent_id} is not the previous link's backup_id "
                             f"{parent.backup_id} ({parent.prefix}): a link is missing or out of order",
                             backup=child.prefix)
        if child.volume_id != first.volume_id:
            raise ChainError(f"volume_id {child.volume_id} differs from the full backup's {first.volume_id}",
                             backup=child.prefix)
        if child.volume_size > first.volume_size:
            raise ChainError(f"extends to {child.volume_size} bytes, beyond the full backup's volume of "
                             f"{first.volume_size}", backup=child.prefix)


@dataclass(frozen=True)
class _Found:
    directory: Path
    prefix: str
    parent_id: str | None


def discover_chain(tree: str | os.PathLike[str], leaf: ChainLink | str) -> list[ChainLink]:
    """The chain ending at `leaf` (a link or a backup_id), parents found under `tree`, full first."""
    root = Path(tree)
    if not root.is_dir():
        raise ChainError(f"backup tree {root} is not a directory")
    found: dict[str, _Found] = {}
    for path in sorted(root.rglob(f"*{METADATA_SUFFIX}")):
        try:
            if not path.is_file() or path.stat().st_size > DISCOVERY_METADATA_LIMIT_BYTES:
                continue
            meta = json.loads(path.read_bytes())
        except (OSError, ValueError):
            continue  # not a backup's metadata: discovery skips it; a chain link would be checked later
        if not isinstance(meta, dict) or not isinstance(meta.get("backup_id"), str):
            continue
        prefix = path.name[:-len(METADATA_SUFFIX)]
        backup_id = meta["backup_id"]
        if backup_id in found:
            raise ChainError(f"backup_id {backup_id} appears twice under {root}: {found[backup_id].directory} "
                             f"and {path.parent}")
        found[backup_id] = _Found(path.parent, prefix, meta.get("parent_id") or None)
    if isinstance(leaf, str):
        if leaf not in found:
            raise ChainError(f"no backup with backup_id {leaf} under {root}")
        current = leaf
    else:
        current = _backup_id_of(leaf)
        if current not in found:
            raise ChainError(f"backup {leaf.prefix} (backup_id {current}) is not under {root}", backup=leaf.prefix)
    chain: list[ChainLink] = []
    seen: set[str] = set()
    while True:
        if current in seen:
            raise ChainError(f"parent loop at backup_id {current} under {root}")
        seen.add(current)
        entry = found[current]
        chain.append(ChainLink(PosixBackupStore(entry.directory), entry.prefix))
        if entry.parent_id is None:
            break
        if entry.parent_id not in found:
            raise ChainError(f"broken chain: parent {entry.parent_id} is not under {root}", backup=entry.prefix)
        current = entry.parent_id
    chain.reverse()
    return chain


def _backup_id_of(link: ChainLink) -> str:
    try:
        meta = json.loads(link.store.get_small(f"{link.prefix}{METADATA_SUFFIX}"))
    except ValueError as e:
        raise BackupFormatError(f"metadata is not JSON: {e}", backup=link.prefix) from None
    backup_id = meta.get("backup_id") if isinstance(meta, dict) else None
    if not isinstance(backup_id, str):
        raise BackupFormatError("metadata has no backup_id", backup=link.prefix)
    return backup_id
