<%!
    def docstring(text):
        """The message inside the file's triple-quoted docstring, as a literal that reads back
        as the message: backslashes and quotes escaped, control characters as \\xNN."""
        out = text.replace("\\", "\\\\").replace('"', '\\"')
        return "".join(c if c >= " " or c in "\n\t" else "\\x%02x" % ord(c) for c in out)
%>"""${docstring(message) if message else ""}

Revision ID: ${up_revision}
Revises: ${down_revision | comma,n}
Create Date: ${create_date}
"""

from collections.abc import Sequence

import sqlalchemy as sa  # noqa: F401 (ruff --fix drops the noqa once they are used)
from alembic import op  # noqa: F401
${imports if imports else ""}

revision: str = ${repr(up_revision)}
down_revision: str | Sequence[str] | None = ${repr(down_revision)}
branch_labels: str | Sequence[str] | None = ${repr(branch_labels)}
depends_on: str | Sequence[str] | None = ${repr(depends_on)}


def upgrade() -> None:
    ${upgrades if upgrades else "pass"}


def downgrade() -> None:
    ${downgrades if downgrades else "pass"}
