"""`backup prune` guards: a Docker upgrade's state it cannot read."""

from __future__ import annotations

from tests.conftest import run_moviectl, subprocess_env


def test_prune_refuses_beside_a_docker_upgrade_state_it_cannot_read(tmp_path):
    """A `docker-upgrade-<project>.json` moviectl did not write might name the safety backup
    an upgrade's --rollback needs: prune refuses (exit 5, naming it), as `db up` does."""
    data, backups = tmp_path / "data", tmp_path / "backups"
    data.mkdir()
    backups.mkdir()
    garbled = data / "docker-upgrade-proj.json"
    garbled.write_text('{"phase": 3')
    env = subprocess_env(MOVIE_DATA_DIR=str(data), MOVIE_BACKUP_DIR=str(backups))
    r = run_moviectl(env, "backup", "prune", "--keep-last", "1", "--yes")
    said = " ".join(r.stderr.split())
    assert r.returncode == 5 and "not an upgrade state moviectl wrote" in said, said
    assert str(garbled) in said and garbled.exists()
