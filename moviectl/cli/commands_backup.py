"""`moviectl backup [list | verify | prune]` and `moviectl restore`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from moviectl.cli import commands_pitr as pitr
from moviectl.cli.context import YesOpt, confirm, new_typer, out, settings_of
from moviectl.cli.render import (
    Backups,
    render_backup,
    render_backups,
    render_restore,
    render_verify,
)

backup_app = new_typer(
    "Checksummed pg_dump backups and restore drills; without a subcommand, back up the "
    "app database.\n\nExample: `moviectl backup` or `moviectl backup verify`"
)


@backup_app.callback(invoke_without_command=True)
def backup_cmd(
    ctx: typer.Context,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Directory (default MOVIE_BACKUP_DIR).")
    ] = None,
    fmt: Annotated[
        str, typer.Option("--format", "-F", help="custom | directory | plain.")
    ] = "custom",
    jobs: Annotated[
        int | None,
        typer.Option("--jobs", "-j", min=1, help="Parallel jobs (directory format)."),
    ] = None,
    compress: Annotated[
        str | None,
        typer.Option(
            "--compress",
            "-Z",
            metavar="ALGO[:LEVEL]",
            help="gzip, lz4, zstd or none, e.g. zstd:3, gzip:6 (pg_dump's own default). "
            "Default: zstd:1 where pg_dump has zstd (16+), else gzip:1.",
        ),
    ] = None,
    physical: pitr.PhysicalOpt = False,
) -> None:
    """Back up the app database: pg_dump to a temp name, read back, checksummed, renamed.

    Prints the file's size beside pg_dump's time, to choose a --compress by.

    Example: `moviectl backup` or `moviectl backup --compress gzip:6 -o /srv/backups`
    """
    if ctx.invoked_subcommand is not None:
        return
    if physical:
        return pitr.physical_backup(ctx, compress)
    from moviectl.cli.output import ByteProgress
    from moviectl.core.backups import dump as core

    o = out(ctx)
    with ByteProgress(o, "dumping") as progress:
        result = core.backup(
            settings_of(ctx),
            output=output,
            fmt=fmt,
            jobs=jobs,
            compress=compress,
            progress=progress if o.interactive else None,
        )
    o.emit(result, render_backup)


@backup_app.command("list")
def backup_list(
    ctx: typer.Context,
    directory: Annotated[Path | None, typer.Option("--dir", help="Where to look.")] = None,
) -> None:
    """List backups: file, created, size, revision, verified.

    Example: `moviectl backup list --json`
    """
    from moviectl.core.backups.manifest import list_backups

    listed: Backups = {"backups": list_backups(settings_of(ctx), directory)}
    out(ctx).emit(listed, render_backups)


@backup_app.command("verify")
def backup_verify(
    ctx: typer.Context,
    file: Annotated[Path | None, typer.Argument(help="Backup file (default: the newest).")] = None,
    physical: pitr.PhysicalOpt = False,
) -> None:
    """Check the sha256, restore into a throwaway database and compare with the manifest.

    Exits 1 on any mismatch; records "verified at" in the manifest when it passes.

    Example: `moviectl backup verify backups/movies-20261124T101500Z.dump`
    """
    from moviectl.core.backups.manifest import list_backups
    from moviectl.core.backups.verify import verify
    from moviectl.infra.errors import InputFileError

    if physical:
        return pitr.physical_verify(ctx)
    settings = settings_of(ctx)
    if file is None:
        entries = [e for e in list_backups(settings) if e.manifest]
        if not entries:
            raise InputFileError("no backups to verify", hint="run `moviectl backup` first")
        file = Path(entries[-1].path)
    o = out(ctx)
    with o.status(f"restore drill for {file.name}"):
        result = verify(settings, file)
    o.emit(result, render_verify)
    raise typer.Exit(0 if result.ok else 1)


@backup_app.command("prune")
def backup_prune(
    ctx: typer.Context,
    keep: Annotated[int, typer.Option("--keep", min=1, help="How many to keep.")],
    yes: YesOpt = False,
) -> None:
    """Delete the oldest backups beyond --keep N (never the newest verified one).

    Example: `moviectl backup prune --keep 7 --yes`
    """
    from moviectl.core.backups.manifest import prune

    settings = settings_of(ctx)
    confirm(ctx, f"Delete all but the newest {keep} backups?", yes)
    deleted = prune(settings, keep)
    out(ctx).emit(
        {"deleted": deleted},
        lambda c, r: c.print(
            "\n".join(f"  deleted {p}" for p in r["deleted"]) or "nothing to delete"
        ),
    )


def restore_cmd(
    ctx: typer.Context,
    file: Annotated[
        Path | None,
        typer.Argument(help="Backup file: moviectl's (manifest beside it) or any pg_dump output."),
    ] = None,
    into: Annotated[
        str | None, typer.Option("--into", help="Target database (default: a new one).")
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Replace a non-empty database (after a safety backup).")
    ] = False,
    jobs: Annotated[int | None, typer.Option("--jobs", "-j", min=1)] = None,
    yes: YesOpt = False,
    physical: pitr.PhysicalOpt = False,
    to_time: pitr.ToTimeOpt = None,
    to_lsn: pitr.ToLsnOpt = None,
    to_name: pitr.ToNameOpt = None,
    latest: pitr.LatestOpt = False,
    promote: pitr.PromoteOpt = False,
    timeout: pitr.TimeoutOpt = 600,
) -> None:
    """Restore a backup into a new database (or, with --force, over an existing one).

    Checks the sha256 first and refuses a backup from a newer PostgreSQL major. A pg_dump
    file made elsewhere (custom, directory, tar or plain, no manifest) is checked as far as
    it can be (pg_restore reads all of it; plain SQL through the meta-command guard), then
    restored and reported unverified ("verified": false, "manifest": null).

    `--physical`: a new cluster from a base backup and the WAL archive, at --to-time,
    --to-lsn, --to-name or --latest, on a free port (`--into` names it; `--promote`
    swaps it in for the embedded server).

    Example: `moviectl restore backups/movies-20261124T101500Z.dump --into movies_copy`
    or `moviectl restore --physical --to-time "2026-12-02 14:04:59+00"`
    """
    from moviectl.core.backups.restore import restore

    if physical:
        return pitr.physical_restore(
            ctx,
            to_time=to_time,
            to_lsn=to_lsn,
            to_name=to_name,
            latest=latest,
            promote=promote,
            name=into,
            timeout=timeout,
            yes=yes,
        )
    if file is None:
        from moviectl.infra.errors import UsageError

        raise UsageError(
            "give a backup file to restore, or --physical", hint="moviectl restore --help"
        )

    settings = settings_of(ctx)
    if force:
        confirm(ctx, f"Replace database {into or '(new)'} with {file.name}?", yes)
    o = out(ctx)
    try:
        with o.status(f"restoring {file.name}"):
            result = restore(settings, file, into=into, force=force, jobs=jobs)
    except (KeyboardInterrupt, SystemExit) as exc:  # Ctrl-C, SIGTERM: what was left, the undo
        for note in getattr(exc, "__notes__", ()):
            o.err.print(note, markup=False, highlight=False, soft_wrap=True)
        raise
    o.emit(result, render_restore)
    raise typer.Exit(1 if result.matches_manifest is False else 0)
