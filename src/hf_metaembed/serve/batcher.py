"""Dynamic batching across requests: the inputs of concurrent requests wait in one bounded queue and run together in
token-budget batches, planned by the library's one planner (`hf_metaembed.batching.plan_batches`, as `embed` does).

The first waiting input waits at most `max_wait` for others to join it; the queue is taken as soon as it holds a full
budget (or `max_batch_size` inputs). The whole queue is then planned at once, longest first, and each planned batch
runs in the model's single thread; an input's result is handed back as soon as its batch is done. The queue counts
inputs waiting or running; a request that would pass `max_queue` is refused at once (`QueueFull`, answered 503 with
Retry-After), so a server under too much load answers quickly instead of hanging.
"""

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from ..batching import plan_batches, sample_token_lengths, token_budgets


class QueueFull(RuntimeError):
    """The queue cannot take a request's inputs now; `retry_after` is a hint in seconds."""

    def __init__(self, depth: int, limit: int, asked: int, retry_after: int) -> None:
        super().__init__(
            f"the server's queue holds {depth} of at most {limit} inputs and cannot take {asked} more; retry after "
            f"{retry_after} s"
        )
        self.retry_after = retry_after


@dataclass
class _Waiting:
    job: Any
    segments: int
    lengths: tuple[int, ...]
    future: asyncio.Future
    enqueued: float = field(default_factory=time.monotonic)


class DynamicBatcher:
    """Gather the inputs of concurrent requests into token-budget batches and run them one batch at a time.

    Args:
        run_batch: takes a list of jobs, returns one result per job (called in one worker thread).
        max_tokens: padded tokens per backbone pass (one number, or one per backbone).
        num_backbones: the model's backbones (the budget has one value per backbone).
        max_batch_size: inputs per batch at most.
        max_wait: seconds the first waiting input waits for others.
        max_queue: inputs waiting or running at most.
        on_batch: called with `(inputs, padded tokens per backbone)` after each batch (metrics).
    """

    def __init__(
        self,
        run_batch: Callable[[list[Any]], Sequence[Any]],
        max_tokens: int | Sequence[int],
        num_backbones: int,
        max_batch_size: int,
        max_wait: float,
        max_queue: int,
        on_batch: Callable[[int, float], None] | None = None,
    ) -> None:
        self.run_batch = run_batch
        self.budgets = token_budgets(max_tokens, num_backbones)
        self.max_batch_size = max_batch_size
        self.max_wait = max_wait
        self.max_queue = max_queue
        self.on_batch = on_batch
        self.depth = 0  # inputs waiting or running
        self.seconds_per_input = 0.01  # running estimate, for Retry-After
        self._waiting: deque[_Waiting] = deque()
        self._wakeup: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hf-metaembed-model")

    def start(self) -> None:
        """Start the batching loop on the running event loop."""
        self._wakeup = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self, timeout: float = 60.0) -> None:
        """Finish every input already queued (for at most `timeout` seconds), then stop the loop and the model
        thread."""
        deadline = time.monotonic() + timeout
        while self.depth > 0 and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):  # the cancellation just asked for
                await self._task
        self._executor.shutdown(wait=True)

    async def submit(self, jobs: Sequence[Any], rows: Sequence) -> list[Any]:
        """Queue a request's jobs (`rows` their processor rows, for the token budget) and wait for their results.

        Raises:
            QueueFull: the queue cannot take `len(jobs)` more inputs now.
        """
        if self.depth + len(jobs) > self.max_queue:
            retry_after = max(1, round((self.depth + len(jobs)) * self.seconds_per_input))
            raise QueueFull(self.depth, self.max_queue, len(jobs), retry_after)
        loop = asyncio.get_running_loop()
        waiting = []
        for job, row in zip(jobs, rows):
            segments, lengths = sample_token_lengths(row)
            waiting.append(_Waiting(job, segments, lengths, loop.create_future()))
        self.depth += len(waiting)
        self._waiting.extend(waiting)
        self._wakeup.set()
        return list(await asyncio.gather(*(item.future for item in waiting)))

    def _full(self) -> bool:
        """Whether the waiting inputs fill a batch already (the budget of some backbone, or `max_batch_size`)."""
        if len(self._waiting) >= self.max_batch_size:
            return True
        segments = sum(item.segments for item in self._waiting)
        longest = [max(item.lengths[i] for item in self._waiting) for i in range(len(self.budgets))]
        return any(segments * length >= budget for length, budget in zip(longest, self.budgets))

    async def _gather(self) -> list[_Waiting]:
        """Wait for inputs, then until the batch is full or the first one has waited `max_wait`; take them all."""
        while not self._waiting:
            self._wakeup.clear()
            await self._wakeup.wait()
        deadline = self._waiting[0].enqueued + self.max_wait
        while not self._full() and (remaining := deadline - time.monotonic()) > 0:
            self._wakeup.clear()
            try:
                await asyncio.wait_for(self._wakeup.wait(), remaining)
            except TimeoutError:
                break
        taken = list(self._waiting)
        self._waiting.clear()
        return taken

    async def _loop(self) -> None:
        while True:
            taken = await self._gather()
            live = [item for item in taken if not item.future.cancelled()]  # a client that left is not computed
            self.depth -= len(taken) - len(live)
            try:
                await self._run(live)
            except Exception as error:  # never leave a request waiting: what is unanswered gets the error
                for item in live:
                    if not item.future.done():
                        self.depth -= 1
                        item.future.set_exception(error)

    async def _run(self, live: list[_Waiting]) -> None:
        """Plan the taken inputs into token-budget batches and run them one by one, answering each batch's inputs as
        soon as it is done."""
        if not live:
            return
        loop = asyncio.get_running_loop()
        segments = [item.segments for item in live]
        plan = plan_batches([item.lengths for item in live], self.budgets, self.max_batch_size, segments)
        for batch in plan:
            items = [live[i] for i in batch]
            started = time.monotonic()
            try:
                results = await loop.run_in_executor(self._executor, self.run_batch, [i.job for i in items])
            except Exception as error:  # the requests of this batch answer 500; the server goes on
                results = [error] * len(items)
            elapsed = time.monotonic() - started
            self.seconds_per_input = 0.8 * self.seconds_per_input + 0.2 * elapsed / len(items)
            if self.on_batch is not None:
                count = sum(item.segments for item in items)
                self.on_batch(len(items), count * max(max(item.lengths) for item in items))
            for item, result in zip(items, results):
                self.depth -= 1
                if item.future.done():  # cancelled: the client left
                    continue
                if isinstance(result, Exception):
                    item.future.set_exception(result)
                else:
                    item.future.set_result(result)


__all__ = ["DynamicBatcher", "QueueFull"]
