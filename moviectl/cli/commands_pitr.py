"""`moviectl pitr enable | status | mark | promote | discard | prune | script`, and the
`--physical` halves of `backup`, `backup verify` and `restore` (called from there)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Annotated, Any

import typer

from moviectl.cli import render_pitr as rp
from moviectl.cli.context import YesOpt, confirm, new_typer, out, settings_of
from moviectl.cli.protection import OverrideOpt, guard_promotion

pitr_app = new_typer(
    "Point-in-time recovery: WAL archiving, restore points, restored clusters.\n\n"
    "Example: `moviectl pitr enable --yes` then `moviectl backup --physical`",
    no_args_is_help=True,
)

PhysicalOpt = Annotated[
    bool, typer.Option("--physical", help="PITR: a base backup / restore to a moment.")
]
IncrementalOpt = Annotated[
    bool,
    typer.Option(
        "--incremental",
        help="With --physical: only what changed since the newest base backup (17+).",
    ),
]
ToTimeOpt = Annotated[str | None, typer.Option("--to-time", help="With --physical: a time.")]
ToLsnOpt = Annotated[str | None, typer.Option("--to-lsn", help="With --physical: an LSN.")]
ToNameOpt = Annotated[
    str | None, typer.Option("--to-name", help="With --physical: a restore point.")
]
LatestOpt = Annotated[bool, typer.Option("--latest", help="With --physical: all archived WAL.")]
PromoteOpt = Annotated[
    bool, typer.Option("--promote", help="With --physical: swap it in (embedded, Docker).")
]
TimeoutOpt = Annotated[float, typer.Option("--timeout", min=1, help="Seconds recovery may take.")]


@pitr_app.command("enable")
def enable_cmd(ctx: typer.Context, yes: YesOpt = False) -> None:
    """Turn on WAL archiving into MOVIE_BACKUP_DIR/pitr (restarts the server once).

    Embedded and Docker: configured here; an external server: the setup to apply.

    Example: `moviectl pitr enable --yes`
    """
    from moviectl.core.pitr.enable import enable, needs_restart

    settings = settings_of(ctx)
    restart = needs_restart(settings)
    if restart:
        confirm(ctx, "Restart the database server to turn archive_mode on?", yes)
    out(ctx).emit(enable(settings, restart=restart), rp.render_enable)


@pitr_app.command("status")
def status_cmd(ctx: typer.Context) -> None:
    """Archiving (pg_stat_archiver), base backups, the recoverable range, restored clusters.

    Exits 1 when something needs attention (archiving failing, a gap in the archive), and
    with the server error's code (3 unreachable, 4 refused) when the server cannot say.

    Example: `moviectl pitr status --json`
    """
    from moviectl.core.pitr.status import status

    result = status(settings_of(ctx))
    out(ctx).emit(result, rp.render_status)
    raise typer.Exit(result.server_exit_code or (0 if result.ok else 1))


@pitr_app.command("mark")
def mark_cmd(ctx: typer.Context, name: Annotated[str, typer.Argument(help="Its name.")]) -> None:
    """Name this moment (pg_create_restore_point), to restore to with --to-name.

    Example: `moviectl pitr mark "before-0003"`
    """
    from moviectl.core.restore_points import mark

    out(ctx).emit(mark(settings_of(ctx), name), rp.render_mark)


@pitr_app.command("promote")
def promote_cmd(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The restored cluster.")],
    yes: YesOpt = False,
    override: OverrideOpt = False,
) -> None:
    """Swap a restored cluster in for the embedded or Docker server (the old one kept).

    Example: `moviectl pitr promote restore-20261202T140700Z --yes`
    """
    from moviectl.core.pitr.promote import promote

    settings = settings_of(ctx)
    guard_promotion(settings, override)
    confirm(ctx, f"Replace the server's cluster with {name}?", yes)
    o = out(ctx)
    with _next_step(o):
        result = promote(settings, name)
    o.emit(result, rp.render_promote)


@contextlib.contextmanager
def _next_step(o: Any) -> Iterator[None]:
    """Ctrl-C, SIGTERM: the one line the failure handler prints, plus how to finish."""
    try:
        yield
    except (KeyboardInterrupt, SystemExit) as exc:
        for note in getattr(exc, "__notes__", ()):
            o.err.print(note, markup=False, highlight=False, soft_wrap=True)
        raise


@pitr_app.command("discard")
def discard_cmd(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The restored cluster.")],
    yes: YesOpt = False,
) -> None:
    """Stop and delete a restored cluster.

    Example: `moviectl pitr discard restore-20261202T140700Z --yes`
    """
    from moviectl.core.pitr.restore import discard

    settings = settings_of(ctx)
    confirm(ctx, f"Delete the restored cluster {name}?", yes)
    path = discard(settings, name)
    out(ctx).emit({"discarded": path}, lambda c, r: c.print(f"deleted {r['discarded']}"))


@pitr_app.command("prune")
def prune_cmd(
    ctx: typer.Context,
    keep: Annotated[int, typer.Option("--keep", min=1, help="Base backups to keep.")],
    yes: YesOpt = False,
) -> None:
    """Delete base backups beyond the newest --keep N, and the WAL only they needed.

    Example: `moviectl pitr prune --keep 7 --yes`
    """
    from moviectl.core.pitr.drill import prune

    settings = settings_of(ctx)
    confirm(ctx, f"Delete all but the newest {keep} base backups and their older WAL?", yes)
    out(ctx).emit(prune(settings, keep), rp.render_prune)


@pitr_app.command("script")
def script_cmd(ctx: typer.Context) -> None:
    """Print the archive_command script (for a server moviectl does not manage).

    Example: `moviectl pitr script > /usr/local/bin/moviectl-archive-wal`
    """
    from moviectl.core.pitr.archive_wal import SCRIPT

    out(ctx).emit({"script": SCRIPT}, lambda c, r: c.print(r["script"], end="", markup=False))


def physical_backup(ctx: typer.Context, compress: str | None, incremental: bool = False) -> None:
    from moviectl.core.pitr.basebackup import base_backup

    o = out(ctx)
    with o.status("pg_basebackup"):
        result = base_backup(settings_of(ctx), compress=compress, incremental=incremental)
    o.emit(result, rp.render_physical)


def physical_verify(ctx: typer.Context) -> None:
    from moviectl.core.pitr.drill import drill

    o = out(ctx)
    with o.status("restore drill of the newest base backup"):
        result = drill(settings_of(ctx))
    o.emit(result, rp.render_drill)
    raise typer.Exit(0 if result.ok else 1)


def physical_restore(
    ctx: typer.Context,
    *,
    to_time: str | None,
    to_lsn: str | None,
    to_name: str | None,
    latest: bool,
    promote: bool,
    name: str | None,
    timeout: float,
    yes: bool,
    override: bool = False,
) -> None:
    from moviectl.core.pitr import targets
    from moviectl.core.pitr.restore import restore

    settings = settings_of(ctx)
    target = targets.parse(to_time=to_time, to_lsn=to_lsn, to_name=to_name, latest=latest)
    if not promote:
        o = out(ctx)
        with o.status(f"restoring to {target.describe()}"):
            result = restore(settings, target, name=name, timeout=timeout)
        o.emit(result, rp.render_restore)
        return
    from moviectl.core.pitr.promote import promote as swap
    from moviectl.core.pitr.promote import promote_lock

    guard_promotion(settings, override)
    confirm(ctx, "Restore, then replace the server's cluster with it?", yes)
    o = out(ctx)
    with promote_lock(settings), _next_step(o):  # a second one is refused before restoring
        with o.status(f"restoring to {target.describe()}"):
            result = restore(settings, target, name=name, timeout=timeout, promoting=True)
        swapped = swap(settings, result.name, locked=True)
    o.emit(rp.RestoredAndPromoted(result, swapped), rp.render_both)
