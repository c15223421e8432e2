"""Where blocks run: a local thread pool or an existing dask.distributed cluster."""
from __future__ import annotations

import concurrent.futures as cf
import contextlib
import itertools
import os
from collections.abc import Callable, Iterator
from typing import Any

from livedenoise.batch.block import BlockJob, BlockResult, process_block
from livedenoise.errors import LivedenoiseError


@contextlib.contextmanager
def _connection(scheduler: Any, dry_run: bool) -> Iterator[tuple[Any, int, int, bool] | None]:
    """The dask connection for a job (None when local or a dry run); closes a client it opened itself."""
    connection = _connect(scheduler) if scheduler is not None and not dry_run else None
    try:
        yield connection
    finally:
        if connection is not None and connection[3]:
            connection[0].close()



class _Runner:
    """Bounded-concurrency execution of block jobs on threads or a dask.distributed client.

    At most ``in_flight`` blocks are submitted at a time, so neither memory nor the scheduler's
    queue grows with the dataset. On any error (including Ctrl-C or a callback raising) nothing
    new starts, running blocks finish (their results are still recorded), and the error is re-raised.
    """

    def __init__(self, client: Any | None, workers: int) -> None:
        self.client = client
        self.workers = workers
        self._pool: cf.ThreadPoolExecutor | None = None

    @property
    def concurrency(self) -> int:
        return self.workers

    def __enter__(self) -> _Runner:
        if self.client is None:
            self._pool = cf.ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="livedenoise-block")
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)

    def _submit(self, job: BlockJob) -> Any:
        if self.client is not None:
            return self.client.submit(process_block, job, pure=False,
                                      key=f"livedenoise-block-{job.index}-{os.urandom(4).hex()}")
        assert self._pool is not None
        return self._pool.submit(process_block, job)

    def _wait(self, futures: set[Any]) -> tuple[set[Any], set[Any]]:
        if self.client is not None:
            from distributed import wait

            res = wait(list(futures), return_when="FIRST_COMPLETED")
            return set(res.done), set(res.not_done)
        done, not_done = cf.wait(futures, return_when=cf.FIRST_COMPLETED)
        return set(done), set(not_done)

    def run(self, jobs: Iterator[BlockJob], on_done: Callable[[BlockResult], None],
            on_done_after_error: Callable[[BlockResult], None]) -> None:
        in_flight: set[Any] = set()
        limit = max(1, self.workers * (2 if self.client is not None else 1))
        jobs = iter(jobs)
        try:
            for job in itertools.islice(jobs, limit):
                in_flight.add(self._submit(job))
            while in_flight:
                done, in_flight = self._wait(in_flight)
                for fut in done:
                    result = fut.result()
                    on_done(result)
                    nxt = next(jobs, None)
                    if nxt is not None:
                        in_flight.add(self._submit(nxt))
        except BaseException:
            self._drain(in_flight, on_done_after_error)
            raise

    def _drain(self, in_flight: set[Any], record: Callable[[BlockResult], None]) -> None:
        for fut in in_flight:
            fut.cancel()
        for fut in in_flight:
            try:
                result = fut.result()
            except BaseException:  # cancelled or failed: it simply stays pending for --resume
                continue
            with contextlib.suppress(Exception):  # already failing: recording is best effort
                record(result)


def _connect(scheduler: Any) -> tuple[Any, int, int, bool]:
    """(client, total threads, threads per worker, whether we opened it) for an address or an existing Client."""
    from distributed import Client

    owned = False
    if isinstance(scheduler, Client):
        client = scheduler
    else:
        owned = True
        try:
            client = Client(str(scheduler), timeout="10s")
        except Exception as exc:
            raise LivedenoiseError(f"Cannot connect to the dask scheduler at {scheduler!r} ({exc}); expected an "
                                   "address like tcp://host:8786 of a running dask.distributed scheduler.") from None
    nthreads = client.nthreads()
    if not nthreads:
        if owned:
            client.close()
        raise LivedenoiseError(f"The dask cluster at {scheduler!r} has no workers.")
    return client, int(sum(nthreads.values())), int(max(nthreads.values())), owned
