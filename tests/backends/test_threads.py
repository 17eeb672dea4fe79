"""The local model's thread policy: the cores other processes leave idle, measured per call."""

from __future__ import annotations

import pytest

from prompt_attr_widget.backends import threads


class Machine:
    """A fake clock, /proc/stat and own CPU time, advanced by the test."""

    def __init__(self, monkeypatch, load: float | None = 0.0, proc: bool = True):
        self.wall = self.busy = self.own = 100.0
        monkeypatch.setattr(threads.time, "monotonic", lambda: self.wall)
        monkeypatch.setattr(threads.time, "process_time", lambda: self.own)
        monkeypatch.setattr(threads, "_busy_seconds", lambda: self.busy if proc else None)
        monkeypatch.setattr(threads, "_load_average", lambda: load)
        monkeypatch.setattr(threads.time, "sleep", lambda seconds: self.run(seconds, 0, self.idle_others))
        self.idle_others = 0.0  # what other processes do while the policy waits out its first window

    def run(self, seconds: float, own_cpus: float, other_cpus: float) -> None:
        self.wall += seconds
        self.own += seconds * own_cpus
        self.busy += seconds * (own_cpus + other_cpus)


def test_an_idle_machine_gets_every_core_and_a_busy_one_leaves_the_busy_cores(monkeypatch):
    m = Machine(monkeypatch, load=5.0)  # a stale load average is not trusted
    policy = threads.ThreadPolicy(cores=2)
    m.run(0.5, own_cpus=1, other_cpus=0)  # the model loads
    assert policy() == 2
    m.run(1.0, own_cpus=2, other_cpus=0)
    assert policy() == 2  # only this process was busy: still idle for us
    m.run(1.0, own_cpus=1, other_cpus=1)
    assert policy() == 1  # another process took a core
    m.run(1.0, own_cpus=1, other_cpus=0.1)
    assert policy() == 2  # a little background work does not cost a core
    m.run(1.0, own_cpus=0, other_cpus=5)
    assert policy() == 1  # never fewer than one


def test_a_short_window_keeps_the_last_decision_and_a_first_one_is_waited_out(monkeypatch):
    m = Machine(monkeypatch)
    m.idle_others = 3.0
    policy = threads.ThreadPolicy(cores=4)
    assert policy() == 1  # called at once: it watched the machine for MIN_WINDOW_S first
    assert m.wall == pytest.approx(100 + threads.MIN_WINDOW_S)
    m.run(1.0, own_cpus=0, other_cpus=0)
    assert policy() == 4
    m.run(1.0, own_cpus=1, other_cpus=2)
    assert policy() == 2
    m.run(threads.MIN_WINDOW_S / 2, own_cpus=0, other_cpus=0)
    assert policy() == 2  # too short to tell
    m.run(1.0, own_cpus=0, other_cpus=0)
    assert policy() == 4


@pytest.mark.parametrize("load, expected", [(0.0, 2), (1.0, 1), (None, 1)])
def test_without_proc_stat_the_load_average_decides(monkeypatch, load, expected):
    Machine(monkeypatch, load=load, proc=False)
    assert threads.ThreadPolicy(cores=2)() == expected  # no load average: one core left free


def test_a_chosen_count_is_kept(monkeypatch):
    m = Machine(monkeypatch, load=8.0)
    policy = threads.ThreadPolicy(fixed=3, cores=2)
    m.run(1.0, own_cpus=0, other_cpus=2)
    assert policy() == policy() == 3


def test_the_real_machine_reads():
    busy = threads._busy_seconds()
    assert busy is None or busy > 0
    assert 1 <= threads.ThreadPolicy()() <= threads.machine_cores()
