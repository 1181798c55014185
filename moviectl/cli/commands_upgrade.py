"""`moviectl db upgrade`: a PostgreSQL major upgrade, its dry run, --finish and --rollback."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Annotated

import typer

from moviectl.cli.context import YesOpt, confirm, out, settings_of
from moviectl.cli.output import fmt_duration
from moviectl.cli.protection import OverrideOpt

if TYPE_CHECKING:
    from rich.console import Console

    from moviectl.core.upgrade.model import FinishResult, UpgradeResult
    from moviectl.infra.settings import Settings


def upgrade_cmd(
    ctx: typer.Context,
    to: Annotated[
        int | None, typer.Option("--to", min=10, max=99, help="The new major, e.g. 18.")
    ] = None,
    method: Annotated[
        str | None,
        typer.Option(
            "--method",
            help="link (fast; no rollback once started), swap (fastest, to 18+; the safety "
            "backup is the only way back), clone, copy (the embedded default) or dump "
            "(Docker's only one).",
        ),
    ] = None,
    image: Annotated[
        str | None,
        typer.Option(
            "--image",
            help="Docker: the new major's image (default: MOVIE_DB_IMAGE when it is that "
            "major, else the current tag with the major replaced).",
        ),
    ] = None,
    dry_run: Annotated[
        bool,
        typer.Option("--dry-run", help="Upgrade a throwaway copy of the latest backup only."),
    ] = False,
    finish: Annotated[
        bool, typer.Option("--finish", help="Keep the new cluster: delete the old one.")
    ] = False,
    rollback: Annotated[
        bool, typer.Option("--rollback", help="Bring the old cluster back (not after link).")
    ] = False,
    yes: YesOpt = False,
    override: OverrideOpt = False,
) -> None:
    """Upgrade the server to a new PostgreSQL major: the embedded cluster with pg_upgrade,
    the Docker volume by dump and restore into the new image. A verified safety backup
    first, the known traps checked, verification after; the old cluster (volume) is kept
    until --finish, and --rollback brings it back (not after --method link).

    Example: `moviectl db upgrade --to 18 --dry-run`, then `moviectl db upgrade --to 18 --yes`,
    then `moviectl db upgrade --finish --yes`
    """
    from moviectl.infra.errors import UsageError

    o = out(ctx)
    settings = settings_of(ctx)
    if sum([to is not None, finish, rollback]) != 1:
        raise UsageError(
            "give exactly one of --to MAJOR, --finish, --rollback",
            hint="moviectl db upgrade --to 18 --dry-run",
        )
    from moviectl.core.upgrade import docker as dk
    from moviectl.core.upgrade import embedded as em

    docker = _backend(settings) == "docker"
    if docker or image is not None:  # before any confirmation: nothing asked in vain
        _docker_only(docker, method, image)
    method = method or ("dump" if docker else "copy")
    if rollback or (method in ("link", "swap") and not dry_run):
        _guard(settings, override, rollback)
    if finish or rollback:
        what = "delete the old cluster" if finish else "discard the new cluster (and its writes)"
        if rollback and not docker and em.rolls_back_by_backup(settings):
            what = "discard the new cluster and restore the safety backup (every write since lost)"
        where = "the Docker project's volumes" if docker else str(settings.data_dir)
        confirm(ctx, f"{what} in {where}?", yes)
        if docker:
            done = dk.finish(settings) if finish else dk.rollback(settings)
        else:
            done = em.finish(settings) if finish else em.rollback(settings)
        o.emit(done, render_finish)
        return
    assert to is not None
    if not dry_run:
        from moviectl.core.upgrade.model import ROLLBACK
        from moviectl.core.upgrade.steps import check_swap

        if method == "swap":  # before the question: the old cluster is taken apart
            check_swap(method, to)
            o.info(f"[yellow]--method swap: --rollback is {ROLLBACK[method]}[/]")
        confirm(ctx, f"stop the server and upgrade it to PostgreSQL {to} ({method})?", yes)
    t0 = time.monotonic()

    def progress(msg: str) -> None:
        o.info(f"[dim]{time.monotonic() - t0:7.1f}s[/] {msg}")

    if docker:
        result = dk.upgrade(settings, to, method, image=image, dry_run=dry_run, progress=progress)
    else:
        result = em.upgrade(settings, to, method, dry_run=dry_run, progress=progress)
    o.emit(result, render_upgrade)
    if not result.ok:
        raise typer.Exit(1)


def _guard(settings: Settings, override: bool, rollback: bool) -> None:
    """What cannot be undone on a protected server needs the override: --rollback discards
    every write made since the upgrade, --method link leaves no way back."""
    from moviectl.infra.protect import guard

    what = "discard every write since its upgrade" if rollback else "upgrade it with no way back"
    # (--method swap too: once pg_upgrade moves files, only the safety backup is left)
    guard(settings, what, override=override, server_wide=True)


def _backend(settings: Settings) -> str:
    from moviectl.core.servers import resolve_auto
    from moviectl.infra.errors import UsageError

    backend: str = settings.db_backend
    if backend == "auto":
        backend = resolve_auto(settings)
    if backend not in ("embedded", "docker"):
        raise UsageError(
            f"db upgrade runs on the embedded or Docker server only (this project's is "
            f"{backend}: a server moviectl does not run)",
            hint="moviectl backup, then moviectl restore into a server of the new major",
        )
    return backend


def _docker_only(docker: bool, method: str | None, image: str | None) -> None:
    from moviectl.core.upgrade.docker import check_method
    from moviectl.infra.errors import UsageError

    if not docker:
        raise UsageError(
            "--image is for the Docker backend; the embedded one upgrades with binaries",
            hint="MOVIE_PG_BIN_DIR names the old binaries (README: Upgrading PostgreSQL)",
        )
    if method is not None:
        check_method(method)


def render_upgrade(c: Console, r: UpgradeResult) -> None:
    kind = "dry run" if r.dry_run else "upgrade"
    mark = "[green]✓[/]" if r.ok else "[red]✗[/]"
    c.print(
        f"{mark} {kind} PostgreSQL {r.from_major} → {r.to_major} (--method {r.method}) "
        f"in {fmt_duration(r.seconds)}"
    )
    if r.backup:
        c.print(f"  {'backup:' if r.dry_run else 'safety backup:'} {r.backup}")
    for t in r.traps:
        c.print(f"  {'✓' if t.ok else '✗'} {t.name}: {t.detail}" + (f" — {t.fix}" if t.fix else ""))
    for p in r.phases:
        c.print(f"  {p.name:<18} {fmt_duration(p.seconds)}")
    for v in r.verification:
        c.print(f"  [green]✓[/] {v}")
    for f in r.failures:
        c.print(f"  [red]✗[/] {f}")
    if r.old_cluster:
        c.print(f"  old cluster kept in {r.old_cluster}")
    if r.rollback:
        c.print(f"  rollback: {r.rollback}")
    for step in r.next_steps:
        c.print(f"  next: {step}")


def render_finish(c: Console, r: FinishResult) -> None:
    if r.action == "finish":
        c.print(f"[green]✓[/] upgrade to PostgreSQL {r.to_major} finished: deleted {r.removed}")
    else:
        c.print(f"[green]✓[/] rolled back to PostgreSQL {r.from_major}: discarded {r.removed}")
    c.print(f"  {r.detail}")
