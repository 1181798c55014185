"""Point-in-time recovery's results for people (JSON needs none)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from moviectl.cli.output import fmt_bytes, fmt_duration, table

if TYPE_CHECKING:
    from rich.console import Console

    from moviectl.core.pitr.basebackup import PhysicalBackupResult
    from moviectl.core.pitr.drill import DrillResult, PruneResult
    from moviectl.core.pitr.enable import EnableResult
    from moviectl.core.pitr.promote_common import PromoteResult
    from moviectl.core.pitr.restore import RestoreResult
    from moviectl.core.pitr.status import PitrStatus
    from moviectl.core.restore_points import Mark


def render_enable(c: Console, r: EnableResult) -> None:
    if r.instructions:
        c.print(f"moviectl does not configure the {r.backend} server; apply this there:")
        for i, step in enumerate(r.instructions, 1):
            c.print(f"  {i}. {step}", soft_wrap=True)
        return
    what = "restarted" if r.restarted else "reloaded" if r.reloaded else "unchanged"
    c.print(f"[green]✓[/] WAL archiving on ({r.backend} server {what}) into {r.repository}/wal")
    c.print("  next: a base backup — moviectl backup --physical")


def render_status(c: Console, r: PitrStatus) -> None:
    a = r.archiver
    if a is None:
        c.print(f"server: not answering ({r.server_error})")
    else:
        age = fmt_duration(a.last_archived_age_seconds) + " ago" if a.last_archived_time else ""
        c.print(f"archiving: {'on' if a.on else 'off'} (wal_level {a.wal_level})")
        c.print(f"  archived {a.archived_count}, last {a.last_archived_wal or '-'} {age}")
        c.print(f"  failed {a.failed_count}, last {a.last_failed_wal or '-'}")
    c.print(f"repository: {r.repository} ({r.archive.segments} WAL segments)")
    if r.recoverable_from:
        c.print(f"recoverable: {r.recoverable_from} .. {r.recoverable_to}")
    rows = [
        (
            b.id,
            b.finished_at,
            fmt_bytes(b.size_bytes),
            b.end_lsn,
            ("ok" if b.drill["ok"] else "FAILED") if b.drill else "-",
            f"incremental to {b.parent}" if b.parent else "full",
        )
        for b in r.base_backups
    ]
    heads = ["id", "consistent at", "size", "end LSN", "drill", "kind"]
    if rows:
        c.print(table("base backups", heads, rows))
    for x in r.restores:
        state = "running" if x["running"] else "stopped"
        c.print(f"restored: {x['name']} on port {x['port']} ({state}), {x['target']}")
    for w in r.warnings:
        c.print(f"[yellow]![/] {w}")


def render_physical(c: Console, r: PhysicalBackupResult) -> None:
    b = r.base
    kind = f"incremental to {b.parent}" if b.parent else "full"
    c.print(f"[green]✓[/] base backup {b.id} ({kind}) taken and verified (pg_verifybackup)")
    c.print(
        f"  {fmt_bytes(b.size_bytes)}, WAL {b.start_lsn} .. {b.end_lsn}, timeline "
        f"{b.timeline}, {fmt_duration(r.seconds)}; {b.path}"
    )
    for n in r.notes:
        c.print(f"  [yellow]note:[/] {n}")


def render_restore(c: Console, r: RestoreResult) -> None:
    c.print(f"[green]✓[/] restored {r.name} from {r.base_backup} to {r.target}")
    c.print(f"  last transaction replayed: {r.recovered_to or '-'}; timeline {r.timeline}")
    rows = sum(r.row_counts.values())
    c.print(f"  {rows:,} rows in {len(r.row_counts)} tables, {fmt_duration(r.seconds)}")
    c.print(f"  running on {r.host}:{r.port} (the running server was not touched)")
    for line in r.connect:
        c.print(f"  {line}", soft_wrap=True)
    for w in r.warnings:
        c.print(f"  [yellow]warning:[/] {w}", soft_wrap=True)


def render_promote(c: Console, r: PromoteResult) -> None:
    c.print(f"[green]✓[/] {r.name} is now the server's cluster ({r.pgdata}, timeline {r.timeline})")
    if r.snapshot:
        c.print(f"  the old cluster is kept whole in {r.snapshot} (move it back to undo)")
    c.print(f"  {r.next_step}")


def render_drill(c: Console, r: DrillResult) -> None:
    mark = "[green]✓[/]" if r.ok else "[red]✗[/]"
    c.print(f"{mark} restore drill of {r.base_backup}: {fmt_duration(r.recovery_seconds)}")
    c.print(f"  recovered to {r.recovered_to or '-'}, {sum(r.row_counts.values()):,} rows")
    for p in r.problems:
        c.print(f"  [red]{p}[/]")


def render_mark(c: Console, r: Mark) -> None:
    c.print(f"[green]✓[/] restore point {r.name!r} at {r.lsn} ({r.time})")
    c.print(f'  later: moviectl restore --physical --to-name "{r.name}"')


def render_prune(c: Console, r: PruneResult) -> None:
    for b in r.deleted_base_backups:
        c.print(f"  deleted base backup {b}")
    c.print(f"  deleted {r.deleted_wal} WAL files older than {r.oldest_needed_segment or '-'}")
    c.print(f"  kept: {', '.join(r.kept) or 'nothing'}")
    for u in r.deleted_unfinished:
        c.print(f"  deleted the objects of {u}, an upload never finished")


@dataclass
class RestoredAndPromoted:
    restore: RestoreResult
    promote: PromoteResult


def render_both(c: Console, r: RestoredAndPromoted) -> None:
    render_restore(c, r.restore)
    render_promote(c, r.promote)
