"""Is a TCP port free, and who holds it?"""

from __future__ import annotations

import socket


def port_is_free(host: str, port: int) -> bool:
    """Could a server listen here? (SO_REUSEADDR, as PostgreSQL and Docker bind.)"""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def port_owner(port: int) -> str | None:
    """``name (pid N)`` of the process listening on ``port``, when it can be seen."""
    try:
        import psutil

        for conn in psutil.net_connections(kind="tcp"):
            if conn.laddr and conn.laddr.port == port and conn.status == psutil.CONN_LISTEN:
                if conn.pid is None:
                    return "another process"
                try:
                    return f"{psutil.Process(conn.pid).name()} (pid {conn.pid})"
                except psutil.Error:
                    return f"pid {conn.pid}"
    except Exception:
        return None
    return None


def describe_port_owner(port: int) -> str:
    owner = port_owner(port)
    return f" by {owner}" if owner else ""
