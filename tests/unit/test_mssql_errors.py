"""SQL Server errors: which Sheaf error each number becomes, and which are tried again.

The errors are real pyodbc exception types carrying messages in the exact format pyodbc
builds from the driver's diagnostic records ("[SQLSTATE] [driver][SQL Server]text (N)
(SQLFunction)"), wrapped by SQLAlchemy as the store receives them.
"""

from __future__ import annotations

import inspect
import random

import pytest
from sqlalchemy import exc as sa_exc

from sheaf.adapters.sql.mssql import (
    ConnectFailed,
    Failure,
    MssqlDocumentStore,
    RetryPolicy,
    classify,
    server_errors,
    translate_mssql_error,
    with_retries,
)
from sheaf.adapters.sql.store import SqlDocumentStore
from sheaf.errors import LeaseLost, SheafError, StoreUnavailable, TransientError
from tests.conftest import odbc_module

pyodbc = odbc_module("pyodbc")  # its error types; the module is skipped without libodbc

pytestmark = pytest.mark.unit

DRIVER = "[Microsoft][ODBC Driver 18 for SQL Server][SQL Server]"


def driver_error(
    number: int, sqlstate: str = "42000", text: str = "message", function: str = "SQLExecDirectW"
) -> sa_exc.DBAPIError:
    """A pyodbc error as SQLAlchemy hands it over, for one diagnostic record."""
    message = f"[{sqlstate}] {DRIVER}{text} ({number}) ({function})"
    cls = pyodbc.IntegrityError if sqlstate == "23000" else pyodbc.OperationalError
    error: sa_exc.DBAPIError = sa_exc.DBAPIError.instance(
        "EXEC dbo.x", {}, cls(sqlstate, message), pyodbc.Error
    )
    return error


@pytest.mark.parametrize(
    ("number", "sqlstate", "failure", "sheaf_error", "code"),
    [
        (1205, "40001", Failure.DEADLOCK, TransientError, "database_conflict"),
        (1222, "HY000", Failure.LOCK_TIMEOUT, TransientError, "lock_timeout"),
        (40501, "42000", Failure.THROTTLED, TransientError, "database_busy"),
        (10928, "42000", Failure.THROTTLED, TransientError, "database_busy"),
        (10929, "42000", Failure.THROTTLED, TransientError, "database_busy"),
        (49918, "42000", Failure.THROTTLED, TransientError, "database_busy"),
        (1204, "HY000", Failure.THROTTLED, TransientError, "database_busy"),
        (40540, "42000", Failure.CONNECTION, StoreUnavailable, "store_unavailable"),
        (40549, "42000", Failure.CONNECTION, StoreUnavailable, "store_unavailable"),
        (40550, "42000", Failure.CONNECTION, StoreUnavailable, "store_unavailable"),
        (18401, "28000", Failure.CONNECTION, StoreUnavailable, "store_unavailable"),
        (40613, "42000", Failure.CONNECTION, StoreUnavailable, "store_unavailable"),
        (40197, "42000", Failure.CONNECTION, StoreUnavailable, "store_unavailable"),
        (4060, "42000", Failure.CONNECTION, StoreUnavailable, "store_unavailable"),
        (10054, "08S01", Failure.CONNECTION, StoreUnavailable, "store_unavailable"),
        (18456, "28000", Failure.LOGIN, StoreUnavailable, "store_unavailable"),
    ],
)
def test_error_numbers_map_to_sheaf_errors(
    number: int, sqlstate: str, failure: Failure, sheaf_error: type[SheafError], code: str
) -> None:
    error = driver_error(number, sqlstate)
    assert server_errors(error) == {number}
    assert classify(error) is failure
    translated = translate_mssql_error(error)
    assert type(translated) is sheaf_error
    assert translated.code == code


@pytest.mark.parametrize(
    ("failure", "connect", "statement", "idempotent_statement"),
    [
        (Failure.DEADLOCK, False, True, True),  # rolled back by the server: run it again
        (Failure.THROTTLED, True, True, True),  # refused before it ran
        (Failure.CONNECTION, True, False, True),  # outcome unknown: only what is safe to repeat
        (Failure.LOCK_TIMEOUT, False, False, False),  # waiting again doubles the wait
        (Failure.LOGIN, False, False, False),  # the same credentials fail the same way
        (None, False, False, False),  # a bug or a constraint: never hidden by retrying
    ],
)
def test_which_failures_are_tried_again(
    failure: Failure | None, connect: bool, statement: bool, idempotent_statement: bool
) -> None:
    policy = RetryPolicy()
    assert (policy.on_connect(failure) is not None) is connect
    assert (policy.on_statement(failure, idempotent=False) is not None) is statement
    assert (policy.on_statement(failure, idempotent=True) is not None) is idempotent_statement


def test_a_deadlock_victim_retries_quickly_and_outages_slowly() -> None:
    policy = RetryPolicy()
    assert policy.on_statement(Failure.DEADLOCK, idempotent=False) is policy.conflicts
    assert policy.conflicts.cap_seconds <= 1.0
    assert policy.on_connect(Failure.CONNECTION) is policy.outages
    rng = random.Random(7)
    delays = [policy.outages.delay(attempt, rng) for attempt in range(1, 7)]
    assert all(0 < d <= policy.outages.cap_seconds for d in delays)
    assert len(set(delays)) == len(delays)  # jittered


def test_the_first_known_number_of_several_records_decides() -> None:
    message = (
        f"[42000] {DRIVER}Cannot open database requested by the login. (4060) (SQLDriverConnect)"
        f"; [28000] {DRIVER}Login failed for user 'sheaf'. (18456)"
    )
    error = sa_exc.DBAPIError.instance(
        None, None, pyodbc.InterfaceError("42000", message), pyodbc.Error
    )
    assert server_errors(error) == {4060, 18456}
    assert classify(error) is Failure.CONNECTION  # Azure sends both while a database moves


def test_numbers_inside_the_text_are_not_error_numbers() -> None:
    error = driver_error(1205, "40001", text="Transaction (Process ID 52) was deadlocked (sic)")
    assert server_errors(error) == {1205}


def test_freetds_connection_errors_are_store_unavailable() -> None:
    message = (
        "[08S01] [FreeTDS][SQL Server]Unable to connect: Adaptive Server is unavailable or "
        "does not exist (20009) (SQLDriverConnect)"
    )
    error = sa_exc.DBAPIError.instance(
        None, None, pyodbc.OperationalError("08S01", message), pyodbc.Error
    )
    assert classify(error) is Failure.CONNECTION
    assert isinstance(translate_mssql_error(error), StoreUnavailable)


def test_an_unknown_number_in_the_connection_class_is_still_a_connection_failure() -> None:
    assert classify(driver_error(0, "08001", function="SQLDriverConnect")) is Failure.CONNECTION
    assert classify(OSError("connection reset")) is Failure.CONNECTION


def test_constraint_violations_and_sql_errors_stay_as_they_are() -> None:
    duplicate = driver_error(2601, "23000", text="Cannot insert duplicate key row")
    assert classify(duplicate) is None
    assert translate_mssql_error(duplicate) is None  # create_document catches IntegrityError
    assert translate_mssql_error(driver_error(208, text="Invalid object name 'x'.")) is None


def test_an_exhausted_pool_is_transient() -> None:
    error = translate_mssql_error(sa_exc.TimeoutError("QueuePool limit reached"))
    assert isinstance(error, TransientError)
    assert error.code == "pool_timeout"


# -- the retry loop -----------------------------------------------------------------------------


class Script:
    """An operation that raises the given errors in turn, then returns "done"."""

    def __init__(self, *errors: BaseException) -> None:
        self.errors = list(errors)
        self.calls = 0

    async def __call__(self) -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return "done"


def translated(number: int, sqlstate: str = "42000") -> SheafError:
    """What the store raises: the Sheaf error, the driver error as its cause."""
    cause = driver_error(number, sqlstate)
    error = translate_mssql_error(cause)
    assert error is not None
    error.__cause__ = cause
    return error


@pytest.fixture
def slept() -> list[float]:
    return []


@pytest.fixture
def policy(slept: list[float]) -> RetryPolicy:
    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    return RetryPolicy(sleep=sleep, rng=random.Random(3))


async def test_deadlock_victims_run_again(policy: RetryPolicy, slept: list[float]) -> None:
    operation = Script(translated(1205, "40001"), translated(1205, "40001"))
    assert await with_retries(operation, policy, idempotent=False) == "done"
    assert operation.calls == 3
    assert len(slept) == 2
    assert all(s <= policy.conflicts.cap_seconds for s in slept)


async def test_retries_stop_after_the_budget(policy: RetryPolicy, slept: list[float]) -> None:
    operation = Script(*(translated(1205, "40001") for _ in range(10)))
    with pytest.raises(TransientError, match="deadlock"):
        await with_retries(operation, policy, idempotent=False)
    assert operation.calls == policy.conflicts.attempts
    assert len(slept) == policy.conflicts.attempts - 1


async def test_a_lost_connection_reruns_only_what_is_safe_to_repeat(
    policy: RetryPolicy, slept: list[float]
) -> None:
    lease_change = Script(translated(40613))
    with pytest.raises(StoreUnavailable):
        await with_retries(lease_change, policy, idempotent=False)
    assert (lease_change.calls, slept) == (1, [])
    renewal = Script(translated(40613))
    assert await with_retries(renewal, policy, idempotent=True) == "done"
    assert renewal.calls == 2


@pytest.mark.parametrize(
    "error",
    [
        ConnectFailed("cannot connect to SQL Server (6 attempts)"),  # retried while connecting
        LeaseLost("the token no longer matches"),
        translated(1222, "HY000"),
        translated(18456, "28000"),
    ],
)
async def test_other_failures_are_raised_at_once(
    policy: RetryPolicy, slept: list[float], error: SheafError
) -> None:
    operation = Script(error)
    with pytest.raises(type(error)):
        await with_retries(operation, policy, idempotent=True)
    assert (operation.calls, slept) == (1, [])


def test_every_store_operation_has_a_retry_decision() -> None:
    """A shared operation added to SqlDocumentStore must be given one here too (those
    that run no statement aside)."""
    shared = {
        name
        for name, member in inspect.getmembers(SqlDocumentStore, inspect.iscoroutinefunction)
        if not name.startswith("_") and name not in ("close", "watch_queue", "caches_loaded")
    }
    decided = {name for name in shared if name in vars(MssqlDocumentStore)}
    assert {"acquire_document_lease", "complete", "search"} <= shared
    assert decided == shared
