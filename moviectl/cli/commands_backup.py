"""`moviectl backup [list | verify | prune | pin | copy]` and `moviectl restore`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from moviectl.cli import commands_pitr as pitr
from moviectl.cli.context import YesOpt, confirm, new_typer, out, settings_of
from moviectl.cli.protection import OverrideOpt
from moviectl.cli.render import (
    Backups,
    render_backup,
    render_backups,
    render_prune_plan,
    render_restore,
    render_verify,
)

ToOpt = Annotated[
    str | None,
    typer.Option(
        "--to",
        help="Repository: a directory or s3://bucket/prefix; two separated by a comma "
        "(default MOVIE_BACKUP_REPO, else MOVIE_BACKUP_DIR).",
    ),
]
RepoOpt = Annotated[
    str | None,
    typer.Option(
        "--repo", help="Repository: a directory or s3://bucket/prefix (default MOVIE_BACKUP_REPO)."
    ),
]

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
    to: ToOpt = None,
    physical: pitr.PhysicalOpt = False,
    incremental: pitr.IncrementalOpt = False,
) -> None:
    """Back up the app database: pg_dump to a temp name, read back, checksummed, renamed.

    With --to s3://bucket/prefix (or MOVIE_BACKUP_REPO) pg_dump's output streams into the
    bucket, hashed as it goes, visible only once complete, its manifest written last.
    Prints the file's size beside pg_dump's time, to choose a --compress by.

    Example: `moviectl backup` or `moviectl backup --compress gzip:6 -o /srv/backups`
    or `moviectl backup --to s3://backups/movies`
    or `moviectl backup --physical --incremental` (PostgreSQL 17+)
    """
    if ctx.invoked_subcommand is not None:
        return
    if physical:
        return pitr.physical_backup(ctx, compress, incremental)
    from moviectl.cli.output import ByteProgress
    from moviectl.core.backups.catalog import backup_everywhere

    o = out(ctx)
    with ByteProgress(o, "dumping") as progress:
        result = backup_everywhere(
            settings_of(ctx),
            to,
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
    repo: RepoOpt = None,
) -> None:
    """List backups: file, created, size, revision, verified.

    Example: `moviectl backup list --json` or `moviectl backup list --repo s3://backups/movies`
    """
    from moviectl.core.backups import uploads
    from moviectl.core.backups.catalog import entries
    from moviectl.core.backups.repository import LocalRepository, primary

    settings = settings_of(ctx)
    where = LocalRepository(directory) if directory is not None else primary(settings, repo)
    found = entries(settings, where)
    left = uploads.find(where)  # a bucket's unfinished multipart uploads (none in a directory)
    listed: Backups = {
        "backups": found,
        "leftover_uploads": left.uploads,
        "leftover_uploads_unchecked": left.unchecked,
    }
    out(ctx).emit(listed, render_backups)


@backup_app.command("verify")
def backup_verify(
    ctx: typer.Context,
    file: Annotated[
        str | None,
        typer.Argument(help="Backup file, name in --repo, or s3:// URL (default: the newest)."),
    ] = None,
    repo: RepoOpt = None,
    physical: pitr.PhysicalOpt = False,
) -> None:
    """Check the sha256, restore into a throwaway database and compare with the manifest.

    Exits 1 on any mismatch; records "verified at" in the manifest when it passes. A
    backup in a bucket is downloaded (and decrypted) first, then checked.

    Example: `moviectl backup verify backups/movies-20261124T101500Z.dump`
    """
    from moviectl.core.backups.catalog import entries, resolve, verify_in
    from moviectl.core.backups.repository import primary
    from moviectl.infra.errors import InputFileError

    if physical:
        return pitr.physical_verify(ctx)
    settings = settings_of(ctx)
    if file is None:
        found = [e for e in entries(settings, primary(settings, repo)) if e.manifest]
        if not found:
            raise InputFileError("no backups to verify", hint="run `moviectl backup` first")
        file = found[-1].path
    where, name = resolve(settings, file, repo)
    o = out(ctx)
    with o.status(f"restore drill for {name}"):
        result = verify_in(settings, where, name)
    o.emit(result, render_verify)
    raise typer.Exit(0 if result.ok else 1)


@backup_app.command("prune")
def backup_prune(
    ctx: typer.Context,
    keep: Annotated[int, typer.Option("--keep", "--keep-last", min=0, help="Keep the last N.")] = 0,
    daily: Annotated[int, typer.Option("--keep-daily", min=0, help="Newest of N days.")] = 0,
    weekly: Annotated[int, typer.Option("--keep-weekly", min=0, help="Newest of N weeks.")] = 0,
    monthly: Annotated[int, typer.Option("--keep-monthly", min=0, help="Newest of N months.")] = 0,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Say what would go and why; delete nothing.")
    ] = False,
    repo: RepoOpt = None,
    yes: YesOpt = False,
    uploads_only: Annotated[
        bool,
        typer.Option(
            "--uploads-only",
            help="Only abort leftover multipart uploads (a bucket's); delete no backup.",
        ),
    ] = False,
) -> None:
    """Delete the backups outside the policy: --keep-last N and/or --keep-daily/weekly/monthly N.

    Never the newest verified backup, a pinned one (`backup pin`), or a file without a
    manifest. Every prune also aborts a bucket's leftover multipart uploads (killed
    backups'); --uploads-only does only that, with no policy, in every configured bucket
    (MOVIE_BACKUP_REPO's s3:// ones; --repo names one instead): one that cannot be looked
    at is named and the others still done, exit 3 when it is down (2 no bucket, 4 keys).

    Example: `moviectl backup prune --keep-daily 7 --keep-weekly 4 --dry-run`
    """
    from moviectl.core.backups.repository import primary
    from moviectl.core.backups.retention import (
        Policy,
        abort_uploads_in,
        plan,
        prune_repository,
        upload_repositories,
        uploads_exit_code,
    )
    from moviectl.infra.errors import UsageError

    settings = settings_of(ctx)
    policy = Policy(keep, daily, weekly, monthly)
    if uploads_only and not policy.empty:
        raise UsageError(
            "--uploads-only deletes no backup: it takes no retention policy",
            hint="run it alone, or prune by the policy without --uploads-only",
        )
    if not uploads_only:
        plan([], policy)  # no policy: refused before asking
    where = primary(settings, repo)
    buckets = upload_repositories(settings, repo) if uploads_only else [where]
    if not dry_run:
        question = (
            f"Abort the leftover multipart uploads in {', '.join(b.url for b in buckets)}?"
            if uploads_only
            else f"Delete the backups in {where.url} outside the policy?"
        )
        confirm(ctx, question, yes)
    if uploads_only:
        result = abort_uploads_in(buckets, dry_run=dry_run)
    else:
        result = prune_repository(settings, where, policy, dry_run=dry_run)
    out(ctx).emit(result, render_prune_plan)
    if uploads_only:  # a bucket it could not look at: that fault's code; a failed abort: 1
        raise typer.Exit(uploads_exit_code(result))


@backup_app.command("pin")
def backup_pin(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Backup name, file, or s3:// URL.")],
    unpin: Annotated[bool, typer.Option("--unpin", help="Remove the pin.")] = False,
    repo: RepoOpt = None,
) -> None:
    """Pin a backup: `backup prune` never deletes it (--unpin to release it).

    Example: `moviectl backup pin movies-20261124T101500Z-a1b2c3.dump`
    """
    from moviectl.core.backups.catalog import pin, resolve

    settings = settings_of(ctx)
    where, key = resolve(settings, name, repo)
    result = pin(settings, where, key, not unpin)
    out(ctx).emit(
        result,
        lambda c, r: c.print(f"{'pinned' if r['pinned'] else 'unpinned'} {r['path']}"),
    )


@backup_app.command("copy")
def backup_copy(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Backup name, file, or s3:// URL.")],
    to: Annotated[str, typer.Option("--to", help="Destination repository.")],
    repo: RepoOpt = None,
) -> None:
    """Copy a backup to another repository (checked on the way, manifest written last).

    Example: `moviectl backup copy movies-20261124T101500Z-a1b2c3.dump --to s3://offsite/movies`
    """
    from moviectl.core.backups.catalog import copy, resolve
    from moviectl.core.backups.repository import open_repository

    settings = settings_of(ctx)
    src, key = resolve(settings, name, repo)
    result = copy(settings, src, key, open_repository(to, settings))
    out(ctx).emit(result, lambda c, r: c.print(f"copied {r['source']} to {r['path']}"))


@backup_app.command("keygen")
def backup_keygen(
    ctx: typer.Context,
    file: Annotated[Path, typer.Argument(help="Private key file to create (0600); FILE.pub too.")],
) -> None:
    """Make an Ed25519 key pair for signed backup manifests (never overwrites a file).

    Set MOVIE_BACKUP_SIGNING_KEY=FILE where backups are made, MOVIE_BACKUP_VERIFY_KEY=FILE.pub
    where they are restored: a forged or unsigned manifest is then refused.

    Example: `moviectl backup keygen /etc/moviectl/backup-signing.key`
    """
    from moviectl.core.backups.signing import keygen

    result = keygen(file)
    out(ctx).emit(
        result,
        lambda c, r: c.print(
            f"wrote {r['signing_key']} (secret, 0600) and {r['verify_key']} (public), "
            f"key {r['key']}"
        ),
    )


def restore_cmd(
    ctx: typer.Context,
    file: Annotated[
        str | None,
        typer.Argument(
            help="Backup file: moviectl's (manifest beside it) or any pg_dump output; a "
            "name in --from, or an s3:// URL."
        ),
    ] = None,
    into: Annotated[
        str | None, typer.Option("--into", help="Target database (default: a new one).")
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Replace a non-empty database (after a safety backup).")
    ] = False,
    jobs: Annotated[
        int | None,
        typer.Option(
            "--jobs",
            "-j",
            min=1,
            help="pg_restore workers, within the connection slots the server, the role and "
            "the database have free [default: the cores, at most 4; 1 for tar and plain SQL].",
        ),
    ] = None,
    source: Annotated[
        str | None,
        typer.Option("--from", help="Repository to restore from (default MOVIE_BACKUP_REPO)."),
    ] = None,
    yes: YesOpt = False,
    override: OverrideOpt = False,
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
    or `moviectl restore last-year.pgdump` or `moviectl restore s3://backups/movies/NAME`
    or `moviectl restore --physical --to-time "2026-12-02 14:04:59+00"`
    """
    from moviectl.core.backups.catalog import resolve, restore_from

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
            override=override,
        )
    if file is None:
        from moviectl.infra.errors import UsageError

        raise UsageError(
            "give a backup file to restore, or --physical", hint="moviectl restore --help"
        )

    settings = settings_of(ctx)
    where, name = resolve(settings, file, source)
    if force and into is not None:  # a protected database is refused before the prompt
        from moviectl.cli.protection import touching
        from moviectl.infra.protect import guard

        target = settings.session_target(into)
        guard(settings, f"restore {name} over it", target=target, override=override)
        confirm(ctx, f"Replace {touching(settings, target)} with {name}?", yes)
    elif force:
        confirm(ctx, f"Replace database {into or '(new)'} with {name}?", yes)
    o = out(ctx)
    try:
        with o.status(f"restoring {name}"):
            result = restore_from(settings, where, name, into=into, force=force, jobs=jobs)
    except (KeyboardInterrupt, SystemExit) as exc:  # Ctrl-C, SIGTERM: what was left, the undo
        for note in getattr(exc, "__notes__", ()):
            o.err.print(note, markup=False, highlight=False, soft_wrap=True)
        raise
    o.emit(result, render_restore)
    raise typer.Exit(1 if result.matches_manifest is False else 0)
