"""Attempt history reads."""

from __future__ import annotations

from dataclasses import dataclass

from jobwheel.server.model import Attempt, AttemptOutcome
from jobwheel.server.storage import paging
from jobwheel.server.storage.base import StoreBase
from jobwheel.server.storage.convert import attempt_from_row
from jobwheel.server.storage.schema import attempts
from sqlalchemy import case, func, select, tuple_


@dataclass(frozen=True, slots=True)
class ExecutionTotals:
    executions_with_attempts: int
    succeeded: int
    # executions that have ended with no successful attempt
    failed: int


class History(StoreBase):
    """Mixed into Store."""

    async def list_attempts(
        self, job_id: str, *, limit: int, after: tuple[int, int] | None = None
    ) -> list[Attempt]:
        """Oldest first, by (execution, number); `after` is the last (execution, number) seen."""
        stmt = select(attempts).where(attempts.c.job_id == job_id)
        if after is not None:
            stmt = stmt.where(tuple_(attempts.c.execution, attempts.c.number) > tuple_(*after))
        stmt = stmt.order_by(attempts.c.execution, attempts.c.number).limit(limit)
        async with self._read() as conn:
            rows = (await conn.execute(stmt)).mappings().all()
        return [attempt_from_row(r) for r in rows]

    async def list_attempts_page(
        self,
        job_id: str,
        *,
        limit: int,
        max_bytes: int,
        after: tuple[int, int] | None = None,
    ) -> tuple[list[Attempt], bool]:
        """Like list_attempts, but only the attempts whose stored result and error add up to
        at most `max_bytes` (at least one; see paging.py); True when more follow."""
        where = [attempts.c.job_id == job_id]
        if after is not None:
            where.append(tuple_(attempts.c.execution, attempts.c.number) > tuple_(*after))
        async with self._read() as conn:
            rows, more = await paging.bounded_rows(
                conn,
                attempts,
                dialect=self.dialect,
                key=attempts.c.id,
                documents=[attempts.c.result, attempts.c.error],
                where=where,
                order_by=[attempts.c.execution, attempts.c.number],
                after=lambda last: tuple_(attempts.c.execution, attempts.c.number) > tuple_(*last),
                limit=limit,
                max_bytes=max_bytes,
                max_in_list=self.dialect.max_in_list,
            )
        return [attempt_from_row(r) for r in rows], more

    async def attempt_id(self, job_id: str, execution: int, number: int) -> str | None:
        stmt = select(attempts.c.id).where(
            attempts.c.job_id == job_id,
            attempts.c.execution == execution,
            attempts.c.number == number,
        )
        async with self._read() as conn:
            found = (await conn.execute(stmt)).scalar()
        return None if found is None else str(found)

    async def execution_totals(self, job_id: str, open_execution: int | None) -> ExecutionTotals:
        """Per-execution outcome counts; `open_execution` (still retrying/running) is no failure."""
        ok = func.max(case((attempts.c.outcome == AttemptOutcome.SUCCEEDED.value, 1), else_=0))
        stmt = (
            select(attempts.c.execution, ok.label("ok"))
            .where(attempts.c.job_id == job_id)
            .group_by(attempts.c.execution)
        )
        async with self._read() as conn:
            rows = (await conn.execute(stmt)).all()
        succeeded = sum(1 for r in rows if r.ok)
        failed = sum(1 for r in rows if not r.ok and r.execution != open_execution)
        return ExecutionTotals(len(rows), succeeded, failed)
