"""Renderers for people: one function per result type. JSON needs none (see output.py)."""

from __future__ import annotations

import shlex
from typing import Any

from rich.console import Console

from moviectl.cli.output import fmt_duration, table


def render_settings(c: Console, r: dict[str, Any]) -> None:
    c.print(f"database: [bold]{r['database_url']}[/]   (env file: {r['env_file']})")
    rows = [(s.key, s.value, s.source) for s in r["settings"]]
    c.print(table(None, ["setting", "value", "source"], rows))


def render_migrate(c: Console, r: Any) -> None:
    if r.direction == "none":
        c.print(f"[green]✓[/] {r.database} is already at {r.to_revision or 'base'}; nothing to do")
        return
    verb = "upgraded" if r.direction == "upgrade" else "downgraded"
    for step in r.steps:
        arrow = "↑" if r.direction == "upgrade" else "↓"
        c.print(f"  {arrow} {step.revision}  {step.message}")
    c.print(
        f"[green]✓[/] {verb} {r.database} from {r.from_revision or 'base'} to "
        f"{r.to_revision or 'base'} ({len(r.steps)} step(s), {fmt_duration(r.seconds)})"
    )


def render_status(c: Console, r: Any) -> None:
    c.print(f"database: {r.url}")
    c.print(f"current:  {r.current or 'base (empty)'}")
    c.print(f"head:     {r.head}")
    if r.up_to_date:
        c.print("[green]✓ up to date[/]")
    else:
        c.print(f"[yellow]{len(r.pending)} pending:[/]")
        for p in r.pending:
            c.print(f"  {p.revision}  {p.message}")
        c.print("run [bold]moviectl migrate[/] to apply")


def render_history(c: Console, r: dict[str, Any]) -> None:
    rows = []
    for rev in r["revisions"]:
        marks = ", ".join(m for m, on in (("head", rev.is_head), ("current", rev.is_current)) if on)
        rows.append((rev.revision, rev.down_revision or "base", rev.message, marks))
    c.print(table(None, ["revision", "parent", "message", ""], rows))


def render_drift(c: Console, r: Any) -> None:
    if r.clean:
        c.print(f"[green]✓[/] models and database {r.database} agree (revision {r.current})")
        return
    c.print(f"[red]✗ {len(r.differences)} difference(s)[/] between models and {r.database}:")
    for d in r.differences:
        c.print(f"  - {d}")
    if r.current != r.head:
        c.print(f"(database at {r.current or 'base'}, head is {r.head}: run `moviectl migrate`)")


def render_testdb(c: Console, db: Any) -> None:
    c.print(f"[green]✓[/] created [bold]{db.name}[/] from {db.template}")
    c.print(f"  url:     {db.url}")
    if db.expires_at:
        c.print(f"  expires: {db.expires_at:%Y-%m-%d %H:%M:%S %Z}")
    c.print(f"  drop it: moviectl testdb drop {db.name}")


def render_testdbs(c: Console, r: dict[str, Any]) -> None:
    from moviectl.cli.output import fmt_bytes

    dbs = r["databases"]
    if not dbs:
        c.print("no test databases")
        return
    rows = [
        (
            d.name,
            fmt_duration(d.age_seconds),
            fmt_bytes(d.size_bytes),
            f"{d.expires_at:%Y-%m-%d %H:%M}" if d.expires_at else "never",
            d.template,
            d.owner,
        )
        for d in dbs
    ]
    c.print(table(None, ["name", "age", "size", "expires", "template", "owner"], rows))


def render_prune(c: Console, r: Any) -> None:
    for name in r.dropped:
        c.print(f"  dropped {name}")
    c.print(f"[green]✓[/] dropped {len(r.dropped)}, kept {len(r.kept)}")


def render_up(c: Console, r: Any) -> None:
    verb = "already running" if r.already_running else "started"
    c.print(f"[green]✓[/] PostgreSQL {r.version or ''} {verb} ({r.backend} backend)")
    c.print(f"  address:  {r.host}:{r.port}")
    c.print(f"  database: {r.database}")
    c.print(f"  url:      {r.url}")
    c.print(f"  took:     {fmt_duration(r.seconds)}   {r.detail}")


def render_down(c: Console, r: Any) -> None:
    state = "stopped" if r.was_running else "was not running"
    data = "data deleted" if r.removed_data else "data kept"
    c.print(f"[green]✓[/] {r.backend} server {state}; {data} ({r.detail})")


def render_server_status(c: Console, r: Any) -> None:
    from moviectl.cli.output import fmt_bytes

    color = "green" if r.state == "running" else "red"
    c.print(f"backend:     {r.backend}")
    c.print(f"state:       [{color}]{r.state}[/]")
    c.print(f"address:     {r.host}:{r.port}   database {r.database}")
    c.print(f"url:         {r.url}")
    if r.version:
        c.print(f"version:     {r.version}")
        c.print(f"uptime:      {fmt_duration(r.uptime_seconds)}")
        c.print(f"data size:   {fmt_bytes(r.data_size_bytes)} (database {r.database})")
        c.print(f"connections: {r.connections} of {r.max_connections}")
    if r.detail:
        c.print(f"detail:      {r.detail}")


def render_health(c: Console, r: Any) -> None:
    marks = {
        "pass": "[green]✓[/]",
        "warn": "[yellow]![/]",
        "fail": "[red]✗[/]",
        "skip": "[dim]-[/]",
    }
    c.print(f"database: {r.url}")
    for chk in r.checks:
        c.print(f"  {marks[chk.status]} {chk.name:<11} {chk.latency_ms:>7.1f} ms  {chk.detail}")
    verdict = "[green]healthy[/]" if r.ok else f"[red]unhealthy[/] ({r.failing})"
    c.print(f"{verdict} in {r.elapsed_ms:.0f} ms")


def render_seed(c: Console, r: Any) -> None:
    what = (
        f"{r.requested} sample movies (seed {r.random_seed})"
        if r.source == "sample"
        else (f"{r.file} (sha256 {r.sha256[:12]}…)")
    )
    if r.status == "already seeded":
        c.print(
            f"[yellow]already seeded[/]: {what} — run #{r.run_id}; nothing inserted "
            "(use --again to insert anyway)"
        )
        return
    rate = f", {r.rows_per_second:,.0f} rows/s" if r.rows_per_second else ""
    c.print(
        f"[green]✓[/] inserted {r.inserted:,} rows from {what} via {r.method} "
        f"in {fmt_duration(r.seconds)}{rate} (ledger run #{r.run_id})"
    )


def render_up_summary(c: Console, r: Any) -> None:
    from rich.panel import Panel

    s = r.server
    lines = [
        f"backend   {s.backend} ({'already running' if s.already_running else 'started'}), "
        f"PostgreSQL {s.version}",
        f"url       {s.url}",
        f"server    {s.detail}",
        f"revision  {r.migrate.to_revision}"
        + (f" (applied {len(r.migrate.steps)})" if r.migrate.steps else " (up to date)"),
        f"movies    {r.movies}"
        + (f" (seeded {r.seeded.inserted} samples)" if r.seeded and r.seeded.inserted else ""),
    ]
    marks = {"pass": "[green]✓[/]", "warn": "[yellow]![/]", "fail": "[red]✗[/]", "skip": "-"}
    checks = "  ".join(f"{marks[ch.status]} {ch.name}" for ch in r.health.checks)
    lines.append(f"health    {checks}")
    lines.append(
        f"elapsed   {fmt_duration(r.seconds)}" + ("" if r.changed else "  (nothing changed)")
    )
    title = "[green]moviectl up: ready[/]" if r.health.ok else "[red]moviectl up: unhealthy[/]"
    c.print(Panel("\n".join(lines), title=title, title_align="left", expand=False), soft_wrap=False)
    c.print("next:")
    for step in r.next_steps:
        c.print(f"  {step}")


def render_doctor(c: Console, r: Any) -> None:
    marks = {"ok": "[green]✓[/]", "warn": "[yellow]![/]", "fail": "[red]✗[/]"}
    for f in r.findings:
        c.print(f"{marks[f.status]} {f.name:<9} {f.detail}")
        if f.fix and f.status != "ok":
            c.print(f"  [dim]fix:[/] {f.fix}")
    if r.ok:
        c.print("[green]all good[/]")
    elif not r.failures:
        c.print(
            f"[yellow]{r.warnings} warning(s)[/]: it works, with the fixes above it works better"
        )
    else:
        c.print(f"[red]{r.failures} problem(s)[/], {r.warnings} warning(s)")


def render_backup(c: Console, r: Any) -> None:
    from moviectl.cli.output import fmt_bytes

    m = r.manifest
    c.print(f"[green]✓[/] backup of {m.database} written and read back: [bold]{r.path}[/]")
    c.print(
        f"  size {fmt_bytes(m.size_bytes)}, sha256 {m.sha256[:16]}…, revision "
        f"{m.alembic_revision}, {sum(m.row_counts.values()):,} rows in "
        f"{len(m.row_counts)} tables, {fmt_duration(m.seconds)}"
    )
    c.print(f"  pg_dump {m.pg_dump_version} ({r.via}), server {m.server_version}")
    if m.note:
        c.print(f"  [yellow]note:[/] {m.note}")
    c.print(f"  manifest {r.manifest_path}")
    c.print(f"  drill it: {shlex.join(['moviectl', 'backup', 'verify', r.path])}")


def render_backups(c: Console, r: dict[str, Any]) -> None:
    from moviectl.cli.output import fmt_bytes

    rows = [
        (
            e.path,
            e.created or "-",
            fmt_bytes(e.size_bytes),
            e.revision or "-",
            (
                "FAILED (last drill)"
                if e.verify_result == "mismatch"
                else e.verified_at or ("no" if e.manifest else "no manifest")
            ),
        )
        for e in r["backups"]
    ]
    if not rows:
        c.print("no backups")
        return
    c.print(table(None, ["file", "created", "size", "revision", "verified"], rows))


def render_verify(c: Console, r: Any) -> None:
    if r.note:
        c.print(f"[yellow]note:[/] {r.note}")
    if r.ok:
        c.print(
            f"[green]✓[/] {r.path}: checksum ok, restored into a throwaway database, "
            "revision and row counts match the manifest"
        )
        return
    c.print(f"[red]✗ {r.path} failed verification[/]")
    for d in r.differences:
        c.print(f"  - {d}")


def render_restore(c: Console, r: Any) -> None:
    verb = "created and restored" if r.created else "restored"
    c.print(
        f"[green]✓[/] {verb} database [bold]{r.database}[/] from {r.path} "
        f"({fmt_duration(r.seconds)})"
    )
    c.print(f"  url: {r.url}  revision {r.revision}, {sum(r.row_counts.values()):,} rows")
    if r.safety_backup:
        c.print(f"  safety backup of the old contents: {r.safety_backup}")
        c.print(f"  undo: {r.undo}")
    for d in r.differences:
        c.print(f"  [red]mismatch:[/] {d}")
