"""The local sweep runner with an injected launcher: commands, tags, state file, skip and retry."""

from __future__ import annotations

import json
import tomllib

import pytest

from trainer.sweep.cooldown import CooldownResult
from trainer.sweep.grid import SweepError, parse_grid
from trainer.sweep.runner import CooldownSettings, SweepRunner
from trainer.sweep.state import SweepState

GRID = """
[sweep]
name = "tiny"
model = "fourcastnet"
repeats = 2
[train]
data = "synthetic"
epochs = 1
embed_dim = 16
[[series]]
name = "cpu"
gpus = [1, 2]
gbs = 4
[[series]]
name = "weak"
scaling = "weak"
gpus = [1, 2]
lbs = 2
"""


class FakeLauncher:
    """Records every launch; fails the (point, repeat) pairs it is told to fail."""

    def __init__(self, fail=(), interrupt=()):
        self.calls = []
        self.fail, self.interrupt = set(fail), set(interrupt)

    def __call__(self, spec):
        self.calls.append(spec)
        key = (spec.point.point_id, spec.repeat)
        if key in self.interrupt:
            raise KeyboardInterrupt
        return 3 if key in self.fail else 0


def make_runner(tmp_path, launcher, **kw):
    grid = parse_grid(tomllib.loads(GRID))
    state = SweepState.load(tmp_path / grid.name / "state.json", grid.name)
    lines = []
    runner = SweepRunner(grid, state, tmp_path, launcher, echo=lines.append, python="py", **kw)
    return runner, lines


def test_commands_carry_torchrun_flags_batch_sizes_and_tags(tmp_path):
    launcher = FakeLauncher()
    runner, _ = make_runner(tmp_path, launcher, daemon="127.0.0.1:7000")
    outcome = runner.run()
    assert (outcome.completed, outcome.failed, outcome.skipped) == (6, 0, 0)
    ids = [(s.point.point_id, s.repeat) for s in launcher.calls]
    # g2-l2-b4 is in both series and runs once; repeat 0 of every point first, then repeat 1
    points = ["g1-l4-b4", "g2-l2-b4", "g1-l2-b2-f0.5"]
    assert ids == [(p, 0) for p in points] + [(p, 1) for p in points]
    spec = next(s for s in launcher.calls if s.point.point_id == "g2-l2-b4" and s.repeat == 1)
    argv = list(spec.argv)
    assert argv[:8] == [
        "py",
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        "2",
        "-m",
        "trainer",
    ]
    assert argv[8] == "train"

    def opt(name):
        return argv[argv.index(name) + 1]

    assert opt("--model") == "fourcastnet" and opt("--embed-dim") == "16"
    assert opt("--global-batch-size") == "4" and opt("--local-batch-size") == "2"
    assert opt("--daemon") == "127.0.0.1:7000"
    assert opt("--run-id") == spec.run_id and spec.run_id.startswith("tiny.g2-l2-b4.r1.")
    assert opt("--output") == str(spec.output_path)
    tags = [argv[i + 1] for i, a in enumerate(argv) if a == "--tag"]
    assert tags == [
        "sweep=tiny",
        "point=g2-l2-b4",
        "repeat=1",
        "series=cpu,weak",
        "scaling=strong,weak",
    ]
    assert "--data-fraction" not in argv
    weak = next(s for s in launcher.calls if s.point.point_id == "g1-l2-b2-f0.5")
    assert weak.argv[list(weak.argv).index("--data-fraction") + 1] == "0.5"


def test_rerun_skips_completed_and_retries_failed(tmp_path):
    first = FakeLauncher(fail={("g2-l2-b4", 0), ("g1-l4-b4", 1)})
    runner, _ = make_runner(tmp_path, first)
    outcome = runner.run()
    assert (outcome.completed, outcome.failed) == (4, 2)
    state = json.loads((tmp_path / "tiny" / "state.json").read_text())
    assert state["runs"]["g2-l2-b4/r0"]["status"] == "failed"
    assert state["runs"]["g2-l2-b4/r0"]["returncode"] == 3
    assert state["runs"]["g1-l4-b4/r0"]["status"] == "completed"

    second = FakeLauncher()
    runner, lines = make_runner(tmp_path, second)
    assert [t.status for t in runner.tasks()].count("retry") == 2
    outcome = runner.run()
    assert (outcome.completed, outcome.failed, outcome.skipped) == (2, 0, 4)
    assert {(s.point.point_id, s.repeat) for s in second.calls} == {
        ("g2-l2-b4", 0),
        ("g1-l4-b4", 1),
    }
    assert all(s.attempt == 2 for s in second.calls)
    assert "skipping 4 completed run(s); 2 to go" in lines
    third = FakeLauncher()
    runner, _ = make_runner(tmp_path, third)
    assert runner.run().skipped == 6 and third.calls == []


def test_interrupted_run_is_recorded_and_retried(tmp_path):
    runner, _ = make_runner(tmp_path, FakeLauncher(interrupt={("g2-l2-b4", 0)}))
    with pytest.raises(KeyboardInterrupt):
        runner.run()
    state = SweepState.load(tmp_path / "tiny" / "state.json", "tiny")
    assert state.get("g2-l2-b4", 0).status == "interrupted"
    assert state.get("g1-l4-b4", 0).status == "completed"
    again = FakeLauncher()
    runner, _ = make_runner(tmp_path, again)
    runner.run()
    assert len(again.calls) == 5  # the interrupted one and everything after it


def test_state_file_of_another_sweep_or_corrupt_is_refused(tmp_path):
    path = tmp_path / "state.json"
    path.write_text(json.dumps({"sweep": "other", "runs": {}}))
    with pytest.raises(SweepError, match="belongs to sweep 'other'"):
        SweepState.load(path, "tiny")
    path.write_text("{not json")
    with pytest.raises(SweepError, match="corrupt"):
        SweepState.load(path, "tiny")


class FakeThermometer:
    def __init__(self):
        self.reads = 0

    def gpu_temperatures(self):
        self.reads += 1
        return {"GPU-a": 40.0 + self.reads, "GPU-b": 38.0}


def test_cooldown_between_points_and_start_temperatures_recorded(tmp_path):
    waits = []

    def fake_wait(read, idle, *, delta_c, max_wait_s, poll_s):
        waits.append((dict(idle), delta_c, max_wait_s))
        return CooldownResult(12.5, True, read(), idle)

    thermo = FakeThermometer()
    runner, lines = make_runner(
        tmp_path,
        FakeLauncher(),
        thermometer=thermo,
        cooldown=CooldownSettings(delta_c=3.0, max_wait_s=60.0),
        wait=fake_wait,
    )
    runner.run()
    assert len(waits) == 5  # between the 6 runs, not before the first
    assert waits[0] == ({"GPU-a": 41.0, "GPU-b": 38.0}, 3.0, 60.0)  # idle = read at sweep start
    assert any(line.startswith("  cool-down: waited 12.5 s, cooled down") for line in lines)
    state = SweepState.load(tmp_path / "tiny" / "state.json", "tiny")
    first, second = state.get("g1-l4-b4", 0), state.get("g2-l2-b4", 0)
    assert first.start_temperature_c["GPU-b"] == 38.0 and first.cooldown_waited_s is None
    assert second.cooldown_waited_s == 12.5


def test_cooldown_needs_a_daemon(tmp_path):
    with pytest.raises(SweepError, match="needs a power daemon"):
        make_runner(tmp_path, FakeLauncher(), cooldown=CooldownSettings(3.0, 60.0))


class DeadThermometer:
    def gpu_temperatures(self):
        raise SweepError("cannot read temperatures from the power daemon at x: UNAVAILABLE")


def test_unreachable_daemon_warns_once_and_runs_go_on(tmp_path):
    runner, lines = make_runner(tmp_path, FakeLauncher(), thermometer=DeadThermometer())
    assert runner.run().completed == 6
    assert sum("warning: cannot read temperatures" in line for line in lines) == 1


def test_flag_args_spelling():
    from trainer.sweep.runner import flag_args

    flags = [("image_size", 32), ("amp", True), ("quiet", False), ("tag_list", ["a", "b"])]
    assert flag_args(flags) == ["--image-size", "32", "--amp", "--tag-list", "a", "--tag-list", "b"]
