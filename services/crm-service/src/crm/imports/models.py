"""Import jobs: an uploaded customer CSV (kept in the database, in parts), its progress and
the rows it refused."""

from __future__ import annotations

import datetime as dt
import uuid

from sqlalchemy import BigInteger, ForeignKey, Index, Integer, LargeBinary, String, Text, Uuid, text
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Mapped, mapped_column

from crm.db import Base
from cxkit.db import UTCDateTime, new_id, utcnow


class ImportJob(Base):
    __tablename__ = "import_jobs"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=new_id)
    status: Mapped[str] = mapped_column(String(20), default="queued", index=True)
    filename: Mapped[str | None] = mapped_column(String(255))
    size_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    # Rows per committed chunk: a resumed job cuts the file at the same places.
    chunk_rows: Mapped[int] = mapped_column(Integer)
    # Data rows of the file (counted once it is first read), and how many of them are done:
    # every chunk's counts are added in the same transaction as its customers.
    total_rows: Mapped[int | None] = mapped_column(Integer)
    rows_read: Mapped[int] = mapped_column(Integer, default=0)
    created: Mapped[int] = mapped_column(Integer, default=0)
    skipped: Mapped[int] = mapped_column(Integer, default=0)
    failed: Mapped[int] = mapped_column(Integer, default=0)
    # The chunks committed (numbered from 0 in file order; two may be written at once, so not
    # always a prefix): a resumed job reads past them.
    done_chunks: Mapped[list[int]] = mapped_column(ARRAY(Integer), default=list)
    ignored_columns: Mapped[str | None] = mapped_column(Text)
    error: Mapped[str | None] = mapped_column(Text)
    created_by: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    started_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class ImportJobPart(Base):
    """The uploaded file in order, a part per row (at most ~1 MiB each)."""

    __tablename__ = "import_job_parts"

    job_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("import_jobs.id", ondelete="CASCADE"), primary_key=True)
    seq: Mapped[int] = mapped_column(Integer, primary_key=True)
    data: Mapped[bytes] = mapped_column(LargeBinary)


class ImportJobError(Base):
    """A row the job did not import: its line in the file (the header is line 1) and why."""

    __tablename__ = "import_job_errors"
    __table_args__ = (
        # The erasure of the address's customer looks for it (`ImportErrorRepository`).
        Index("ix_import_job_errors_address_key", "address_key", postgresql_where=text("address_key IS NOT NULL")),
    )

    job_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("import_jobs.id", ondelete="CASCADE"), primary_key=True)
    line: Mapped[int] = mapped_column(Integer, primary_key=True)
    email: Mapped[str | None] = mapped_column(Text)
    reason: Mapped[str] = mapped_column(Text)
    # `address_key(email)`, written with the row (`RowError.key`); None without an email, and
    # once the address's customer was erased (with the email and the address in the reason).
    address_key: Mapped[str | None] = mapped_column(Text)
