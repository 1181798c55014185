<%!
    def docstring(text):
        """The message inside the file's triple-quoted docstring, as a literal that reads back
        as the message: backslashes and quotes escaped, control characters as \\xNN."""
        out = text.replace("\\", "\\\\").replace('"', '\\"')
        return "".join(c if c >= " " or c in "\n\t" else "\\x%02x" % ord(c) for c in out)

    def literal(value):
        """A revision field as ruff format writes it (double quotes), ruff installed or not."""
        if isinstance(value, str):
            return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
        if isinstance(value, (tuple, list)):
            items = ", ".join(literal(v) for v in value)
            return "(" + items + ("," if len(value) == 1 else "") + ")"
        return repr(value)
%>"""${docstring(message) if message else ""}

Revision ID: ${up_revision}
Revises: ${down_revision | comma,n}
Create Date: ${create_date}
"""

from collections.abc import Sequence

import sqlalchemy as sa  # noqa: F401 (ruff --fix drops the noqa once they are used)
from alembic import op  # noqa: F401
% if imports:
${imports}
% endif

revision: str = ${literal(up_revision)}
down_revision: str | Sequence[str] | None = ${literal(down_revision)}
branch_labels: str | Sequence[str] | None = ${literal(branch_labels)}
depends_on: str | Sequence[str] | None = ${literal(depends_on)}


def upgrade() -> None:
    ${upgrades if upgrades else "pass"}


def downgrade() -> None:
    ${downgrades if downgrades else "pass"}
