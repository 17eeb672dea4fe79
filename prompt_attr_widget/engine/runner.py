"""Driving a run from synchronous code: signals that stop it cleanly, and an end that cannot hang.

`asyncio.run` raises KeyboardInterrupt wherever the code happens to be at a
second Ctrl-C, which can cut a run's saving in half, and it waits without
limit for leftover tasks and worker threads. `run_to_end` instead turns
SIGINT and SIGTERM into cancelling the run's task: the first saves the run
with everything received (the driver's own clean-up), a second hurries it
(calls still in flight are not waited for: their reservations are on disk
and count), and a third ends the process at once, which loses nothing
either, as every answer and every cost is already on disk. Then leftovers
get a bounded time to stop.

`run_in_thread` runs a run where an event loop is already running
(Jupyter): on a private loop in a worker thread, Ctrl-C cancelling it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import signal
import threading

from ..core.errors import Terminated

SHUTDOWN_S = 5.0  # what tasks still running after the run get to stop, and worker threads to end


def run_to_end(coro):
    """Run a coroutine to its end on a new event loop; an interrupt raises once it has stopped cleanly.

    Raises KeyboardInterrupt after SIGINT and `Terminated` after SIGTERM,
    once the coroutine has handled the cancellation (saved the run).
    """
    loop = asyncio.new_event_loop()
    task = loop.create_task(coro)
    received: list[int] = []

    def stop(signum: int) -> None:
        received.append(signum)
        if len(received) >= 3:  # asked three times: end now (what was paid for is on disk)
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
        task.cancel(signal.Signals(signum).name)  # the driver's reason says which

    installed = _install(loop, stop)
    try:
        return loop.run_until_complete(task)
    except asyncio.CancelledError:
        if not received:
            raise
        raise (Terminated if received[0] == signal.SIGTERM else KeyboardInterrupt)() from None
    finally:
        for signum, before in installed.items():
            loop.remove_signal_handler(signum)
            signal.signal(signum, before)  # the caller's own handlers (the CLI's SIGTERM one) come back
        _shutdown(loop)


def _install(loop: asyncio.AbstractEventLoop, stop) -> dict[int, object]:
    """SIGINT and SIGTERM call `stop` on the loop (never in the middle of other code); returns the
    handlers they replace."""
    if threading.current_thread() is not threading.main_thread():
        return {}  # signals reach the main thread only; its own handlers stay in charge
    installed = {}
    for signum in (signal.SIGINT, signal.SIGTERM):
        before = signal.getsignal(signum)
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):  # Windows: no handlers
            loop.add_signal_handler(signum, stop, signum)
            installed[signum] = before
    return installed


def _shutdown(loop: asyncio.AbstractEventLoop) -> None:
    """Cancel what still runs and give it SHUTDOWN_S, then close the loop without waiting longer."""
    try:
        leftovers = [t for t in asyncio.all_tasks(loop) if not t.done()]
        for t in leftovers:
            t.cancel()
        if leftovers:
            loop.run_until_complete(asyncio.wait(leftovers, timeout=SHUTDOWN_S))
        loop.run_until_complete(loop.shutdown_asyncgens())
        # asyncio.to_thread's workers (the local model): queued work is dropped, none is waited for
        # here; one still computing ends with its call (bounded by max_tokens) as the process exits.
        executor = getattr(loop, "_default_executor", None)
        if executor is not None:
            executor.shutdown(wait=False, cancel_futures=True)
    finally:
        loop.close()


def run_in_thread(coro):
    """Run a coroutine on a private loop in a worker thread; Ctrl-C cancels it cleanly."""
    loop = asyncio.new_event_loop()
    task_box: dict = {}

    def runner():
        asyncio.set_event_loop(loop)
        task_box["task"] = loop.create_task(coro)
        try:
            return loop.run_until_complete(task_box["task"])
        finally:
            loop.close()

    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="prompt-attr") as pool:
        future = pool.submit(runner)
        try:
            return future.result()
        except KeyboardInterrupt:
            if "task" in task_box:
                loop.call_soon_threadsafe(task_box["task"].cancel)
            with contextlib.suppress(asyncio.CancelledError, Exception):
                future.result()
            raise
