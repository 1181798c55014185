"""Is a process alive, and is it the program we think: one answer, through psutil.

A pid from a file or a mark (``postmaster.pid``, a temp file's name, a database's mark)
outlives its process, and the kernel hands the number out again. So "alive" means
running and not a zombie (an exited child nobody reaped does no work and holds no
file), and where it matters the caller also names the program it expects.
"""

from __future__ import annotations


def pid_alive(pid: int, program: str | None = None) -> bool:
    """Does process ``pid`` run (not a zombie), and, given ``program``, does its command
    line mention it (``"postgres"``: a postmaster, not a pid the kernel gave away again)?

    A process we may not inspect (another user's, on a locked-down /proc) counts as alive:
    callers remove what a dead process left, so a wrong "dead" is the costly mistake.
    """
    import psutil

    if pid <= 0:  # 0 and negatives name process groups, not a process
        return False
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False
        return program is None or any(program in part for part in proc.cmdline())
    except psutil.NoSuchProcess:  # ZombieProcess included
        return False
    except psutil.AccessDenied:
        return True


# libpq's variables, moviectl's settings and the S3 keys: any may hold a secret
SECRET_ENV_PREFIXES = ("PG", "MOVIE_", "AWS_")


def env_without_secrets(*drop: str) -> dict[str, str]:
    """This process's environment for a child that is not moviectl (a server and its
    archive_command, pgAdmin, a package installer): without the variables above, nor ``drop``."""
    import os

    return {
        k: v
        for k, v in os.environ.items()
        if not k.upper().startswith(SECRET_ENV_PREFIXES) and k not in drop
    }
