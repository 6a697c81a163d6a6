"""initial schema

Revision ID: 0001
Revises: (none)
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "mixers",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("name", sa.String(length=120), nullable=False),
        sa.Column("ari_url", sa.String(length=255), nullable=False),
        sa.Column("draining", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "revoked_sessions",
        sa.Column("session_id", sa.String(length=40), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("session_id"),
    )
    with op.batch_alter_table("revoked_sessions", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_revoked_sessions_expires_at"), ["expires_at"], unique=False
        )

    op.create_table(
        "tenants",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("name", sa.String(length=120), nullable=False),
        sa.Column("is_platform", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("name"),
    )
    op.create_table(
        "users",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("username", sa.String(length=64), nullable=False),
        sa.Column("password_hash", sa.String(length=255), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("username"),
    )
    op.create_table(
        "conferences",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("tenant_id", sa.String(length=40), nullable=False),
        sa.Column("name", sa.String(length=120), nullable=False),
        sa.Column("locked", sa.Boolean(), nullable=False),
        sa.Column("mixer_id", sa.String(length=40), nullable=False),
        sa.Column("dial_in", sa.String(length=32), nullable=False),
        sa.Column("created_by", sa.String(length=40), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["mixer_id"],
            ["mixers.id"],
        ),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenants.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("dial_in"),
    )
    with op.batch_alter_table("conferences", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_conferences_tenant_id"), ["tenant_id"], unique=False
        )

    op.create_table(
        "memberships",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("user_id", sa.String(length=40), nullable=False),
        sa.Column("tenant_id", sa.String(length=40), nullable=False),
        sa.Column("role", sa.String(length=32), nullable=False),
        sa.Column("display_name", sa.String(length=120), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenants.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("user_id", "tenant_id"),
    )
    with op.batch_alter_table("memberships", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_memberships_tenant_id"), ["tenant_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_memberships_user_id"), ["user_id"], unique=False
        )

    op.create_table(
        "refresh_tokens",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("user_id", sa.String(length=40), nullable=False),
        sa.Column("tenant_id", sa.String(length=40), nullable=False),
        sa.Column("session_id", sa.String(length=40), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("used_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("refresh_tokens", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_refresh_tokens_session_id"), ["session_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_refresh_tokens_user_id"), ["user_id"], unique=False
        )

    op.create_table(
        "sip_credentials",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("tenant_id", sa.String(length=40), nullable=False),
        sa.Column("user_id", sa.String(length=40), nullable=False),
        sa.Column("username", sa.String(length=64), nullable=False),
        sa.Column("realm", sa.String(length=64), nullable=False),
        sa.Column("ha1", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("rotated_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenants.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("username"),
    )
    with op.batch_alter_table("sip_credentials", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_sip_credentials_tenant_id"), ["tenant_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_sip_credentials_user_id"), ["user_id"], unique=False
        )

    op.create_table(
        "conference_events",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("tenant_id", sa.String(length=40), nullable=False),
        sa.Column("conference_id", sa.String(length=40), nullable=False),
        sa.Column("type", sa.String(length=40), nullable=False),
        sa.Column("data", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["conference_id"], ["conferences.id"], ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("conference_events", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_conference_events_conference_id"),
            ["conference_id"],
            unique=False,
        )

    op.create_table(
        "conference_members",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("tenant_id", sa.String(length=40), nullable=False),
        sa.Column("conference_id", sa.String(length=40), nullable=False),
        sa.Column("user_id", sa.String(length=40), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("muted", sa.Boolean(), nullable=False),
        sa.Column("channel_id", sa.String(length=64), nullable=True),
        sa.Column("reason", sa.String(length=64), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("joined_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("left_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["conference_id"], ["conferences.id"], ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("conference_members", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_conference_members_channel_id"), ["channel_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_conference_members_tenant_id"), ["tenant_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_conference_members_user_id"), ["user_id"], unique=False
        )
        batch_op.create_index(
            "ix_members_conference_state", ["conference_id", "state"], unique=False
        )

    op.create_table(
        "member_calls",
        sa.Column("channel_id", sa.String(length=64), nullable=False),
        sa.Column("member_id", sa.String(length=40), nullable=False),
        sa.Column("endpoint", sa.String(length=255), nullable=False),
        sa.ForeignKeyConstraint(
            ["member_id"], ["conference_members.id"], ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("channel_id"),
    )
    with op.batch_alter_table("member_calls", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_member_calls_member_id"), ["member_id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("member_calls", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_member_calls_member_id"))

    op.drop_table("member_calls")
    with op.batch_alter_table("conference_members", schema=None) as batch_op:
        batch_op.drop_index("ix_members_conference_state")
        batch_op.drop_index(batch_op.f("ix_conference_members_user_id"))
        batch_op.drop_index(batch_op.f("ix_conference_members_tenant_id"))
        batch_op.drop_index(batch_op.f("ix_conference_members_channel_id"))

    op.drop_table("conference_members")
    with op.batch_alter_table("conference_events", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_conference_events_conference_id"))

    op.drop_table("conference_events")
    with op.batch_alter_table("sip_credentials", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_sip_credentials_user_id"))
        batch_op.drop_index(batch_op.f("ix_sip_credentials_tenant_id"))

    op.drop_table("sip_credentials")
    with op.batch_alter_table("refresh_tokens", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_refresh_tokens_user_id"))
        batch_op.drop_index(batch_op.f("ix_refresh_tokens_session_id"))

    op.drop_table("refresh_tokens")
    with op.batch_alter_table("memberships", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_memberships_user_id"))
        batch_op.drop_index(batch_op.f("ix_memberships_tenant_id"))

    op.drop_table("memberships")
    with op.batch_alter_table("conferences", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_conferences_tenant_id"))

    op.drop_table("conferences")
    op.drop_table("users")
    op.drop_table("tenants")
    with op.batch_alter_table("revoked_sessions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_revoked_sessions_expires_at"))

    op.drop_table("revoked_sessions")
    op.drop_table("mixers")
