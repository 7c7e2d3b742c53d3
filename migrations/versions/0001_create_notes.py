"""Create the notes table.

Revision ID: 0001
Revises:
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "notes",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("text", sa.String().with_variant(mysql.MEDIUMTEXT(), "mysql", "mariadb")),
        sa.Column("completed", sa.Boolean),
        mysql_charset="utf8mb4",
    )


def downgrade() -> None:
    op.drop_table("notes")
