"""A first day without surprises: inputs checked before work starts, defaults that fit the machine, errors that
name the flag, progress that shows in a log."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from cli.main import app
from synbt_factory.store import CaseStore


# ---------------------------------------------------------------------------- tiny stores
def _write_cases(store: CaseStore, cases: int, extra: dict[str, np.ndarray] | None = None) -> None:
    for i in range(cases):
        pre = np.full((32, 32, 16), 0.4, np.float32)
        post = pre.copy()
        post[12:20, 12:20, 6:10] = 1.5
        mask = (post > 1).astype(np.uint8)
        arrays = {"image": np.stack([pre, post]).astype(np.float16), "mask": mask, **(extra or {})}
        store.write_case(
            f"CASE_{i:03d}", arrays, {"affine": np.eye(4).tolist(), "spacing": [1, 1, 1], "split": "train"}
        )


def _prepared(path: Path, cases: int = 2) -> Path:
    _write_cases(CaseStore.create(path, kind="prepared", card={}), cases)
    return path


def _synthetic(path: Path) -> Path:
    store = CaseStore.create(path, kind="synthetic", card={"synthetic": True})
    _write_cases(store, 1, {"synthetic_mask": np.zeros((32, 32, 16), np.uint8)})
    return path


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from synbt_factory.synthesis.bank import build_bank

    root = tmp_path_factory.mktemp("stores")
    prepared = _prepared(root / "prepared.zarr")
    build_bank(prepared, root / "bank.zarr")
    return {"prepared": prepared, "bank": root / "bank.zarr", "synthetic": _synthetic(root / "synthetic.zarr")}


def _one_error_line(result: Any, *names: str) -> str:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if "error:" in line]
    assert len(lines) == 1, result.output
    for name in names:
        assert name in lines[0], result.output
    return lines[0]


def _generate(out: Path, data: Path, bank: Path, *extra: str) -> list[str]:
    return [
        "generate",
        "--n",
        "5000",
        "--out",
        str(out),
        "--data",
        str(data),
        "--bank",
        str(bank),
        "--method",
        "syntumor",
        *extra,
    ]


# ---------------------------------------------------------------------------- item 2: generate checks its inputs
def test_generate_missing_bank_fails_fast_naming_the_flag(stores, tmp_path: Path) -> None:
    out = tmp_path / "datasets" / "synth.zarr"
    result = CliRunner().invoke(app, _generate(out, stores["prepared"], tmp_path / "nobank.zarr"))
    line = _one_error_line(result, "--bank", str(tmp_path / "nobank.zarr"), "does not exist", "synbt bank build")
    assert "NoneType" not in line
    assert not (tmp_path / "datasets").exists()  # no empty store, not even its parent folder


def test_generate_prepared_store_as_bank(stores, tmp_path: Path) -> None:
    out = tmp_path / "synth.zarr"
    result = CliRunner().invoke(app, _generate(out, stores["prepared"], stores["prepared"]))
    _one_error_line(result, "--bank", "'prepared'", "synbt bank build")
    assert not out.exists()


def test_generate_synthetic_store_as_data(stores, tmp_path: Path) -> None:
    out = tmp_path / "synth.zarr"
    result = CliRunner().invoke(app, _generate(out, stores["synthetic"], stores["bank"]))
    _one_error_line(result, "--data", "synthetic", "synbt data prepare")
    assert not out.exists()


def test_generate_reports_every_bad_input_in_one_line(tmp_path: Path) -> None:
    out = tmp_path / "synth.zarr"
    argv = [
        "generate",
        "--n",
        "5",
        "--out",
        str(out),
        "--data",
        str(tmp_path / "p.zarr"),
        "--bank",
        str(tmp_path / "b.zarr"),
        "--vqvae",
        str(tmp_path / "vq.pt"),
        "--diffusion",
        str(tmp_path / "d.pt"),
    ]
    result = CliRunner().invoke(app, argv)
    _one_error_line(result, "--data", "--bank", "--vqvae", "--diffusion")
    assert not out.exists()


def test_generate_missing_checkpoint_names_its_flag(stores, tmp_path: Path) -> None:
    argv = [
        "generate",
        "--n",
        "5",
        "--out",
        str(tmp_path / "synth.zarr"),
        "--data",
        str(stores["prepared"]),
        "--bank",
        str(stores["bank"]),
        "--vqvae",
        str(tmp_path / "runs"),
        "--diffusion",
        str(tmp_path / "d.pt"),
    ]
    (tmp_path / "runs").mkdir()
    line = _one_error_line(CliRunner().invoke(app, argv), "--vqvae", "is a folder", "--diffusion", "does not exist")
    assert "--ckpt" not in line
    assert not (tmp_path / "synth.zarr").exists()


def test_generate_refuses_a_store_of_another_kind_as_out(stores, tmp_path: Path) -> None:
    result = CliRunner().invoke(app, _generate(stores["bank"], stores["prepared"], stores["bank"]))
    _one_error_line(result, "--out", str(stores["bank"]))


def test_generate_input_problems_accepts_good_inputs(stores, tmp_path: Path) -> None:
    from synbt_factory.generate.inputs import generate_input_problems

    assert generate_input_problems(prepared=stores["prepared"], bank=stores["bank"], out=tmp_path / "s.zarr") == []
    assert generate_input_problems(prepared=stores["prepared"], bank=stores["bank"], split="test") != []


def test_generate_config_errors_name_the_flag(stores, tmp_path: Path) -> None:
    argv = _generate(tmp_path / "s.zarr", stores["prepared"], stores["bank"], "--batch-size", "0")
    line = _one_error_line(CliRunner().invoke(app, argv), "--batch-size")
    assert "batch_size" not in line
    argv = [
        "generate",
        "--n",
        "0",
        "--out",
        str(tmp_path / "s.zarr"),
        "--data",
        str(stores["prepared"]),
        "--bank",
        str(stores["bank"]),
    ]
    _one_error_line(CliRunner().invoke(app, argv), "--n must be")


def test_segment_train_warns_about_a_synthetic_store_as_real(stores, tmp_path: Path) -> None:
    blocker = tmp_path / "notes.txt"
    blocker.write_text("x")
    argv = [
        "segment",
        "train",
        "--data",
        str(stores["synthetic"]),
        "--out",
        str(blocker / "run"),
        "--preset",
        "tiny",
        "--patch",
        "16",
        "--steps",
        "1",
        "--device",
        "cpu",
    ]
    result = CliRunner().invoke(app, argv)
    assert result.exit_code == 2  # stopped by the --out below a file, after the warning
    warning = [line for line in result.output.splitlines() if "warning" in line]
    assert warning and "--data" in warning[0] and "synthetic" in warning[0], result.output


# ---------------------------------------------------------------------------- item 1: announce, pace, ETA, presets
class _FakeClock:
    """Returns the next of ``times`` at each call: no real time is read."""

    def __init__(self, times: list[float]) -> None:
        self.times = list(times)

    def __call__(self) -> float:
        return self.times.pop(0)


def _plan(steps: int = 250_000, faster: str | None = "--preset cpu") -> Any:
    from synbt_factory.progress import RunPlan

    return RunPlan(what="train vqvae (patch stage)", preset="paper", steps=steps, device="cpu", faster=faster)


def test_step_clock_warns_naming_the_faster_preset_when_the_eta_is_long(caplog: pytest.LogCaptureFixture) -> None:
    from synbt_factory.progress import StepClock

    seen: list[int] = []
    clock = StepClock(
        _plan(),
        lambda done, total, metrics: seen.append(done),
        measure_steps=3,
        clock=_FakeClock([0.0, 72.0, 144.0, 216.0, 288.0]),
    )
    with caplog.at_level("INFO", logger="synbt_factory.progress"):
        clock.announce()
        for done in (1, 2, 3, 4, 5):  # the fifth report is within the 50 steps of the second measurement
            clock(done, 250_000, {})
    assert seen == [1, 2, 3, 4, 5]  # every report reaches the bar
    assert clock.estimate is not None and clock.estimate.seconds_per_step == pytest.approx(72.0)
    assert clock.estimate.remaining_steps == 250_000 - 4
    announce = [r for r in caplog.records if "preset paper, 250000 steps on cpu" in r.getMessage()]
    warnings = [r for r in caplog.records if r.levelname == "WARNING"]
    assert len(announce) == 1 and len(warnings) == 1
    text = warnings[0].getMessage()
    assert "--preset cpu" in text and "72 s/step" in text and "days" in text


def test_step_clock_gives_the_eta_without_warning_when_it_is_short(caplog: pytest.LogCaptureFixture) -> None:
    from synbt_factory.progress import StepClock

    clock = StepClock(_plan(steps=100), measure_steps=2, clock=_FakeClock([10.0, 10.5, 11.0]))
    with caplog.at_level("INFO", logger="synbt_factory.progress"):
        for done in (1, 2, 3):
            clock(done, 100, {})
    assert not [r for r in caplog.records if r.levelname == "WARNING"]
    messages = [r.getMessage() for r in caplog.records]
    assert any("preset paper, 100 steps" in m for m in messages)  # the first report announces it
    assert any("0.5 s/step" in m and "for the remaining 97 steps" in m for m in messages)


def test_step_clock_measures_the_pace_again_after_slow_first_steps(caplog: pytest.LogCaptureFixture) -> None:
    """A diffusion run's first steps took 1.5 s each, the rest 0.1 s: its only ETA said 73 min for 6 min of work."""
    from synbt_factory.progress import StepClock

    times = [0.0, 1.5, 3.0, 4.5] + [4.5 + 0.1 * i for i in range(1, 11)]
    clock = StepClock(_plan(steps=3000), measure_steps=3, refine_steps=10, clock=_FakeClock(times))
    with caplog.at_level("INFO", logger="synbt_factory.progress"):
        for done in range(1, 15):
            clock(done, 3000, {})
    assert clock.estimate is not None and clock.estimate.seconds_per_step == pytest.approx(1.5)
    assert clock.refined is not None and clock.refined.seconds_per_step == pytest.approx(0.1)
    again = [r.getMessage() for r in caplog.records if "measured again" in r.getMessage()]
    assert len(again) == 1 and "0.1 s/step" in again[0] and "2986 steps" in again[0], again


def test_step_clock_keeps_quiet_when_the_pace_holds(caplog: pytest.LogCaptureFixture) -> None:
    from synbt_factory.progress import StepClock

    clock = StepClock(_plan(steps=3000), measure_steps=1, refine_steps=2, clock=_FakeClock([0.0, 1.0, 2.1, 3.2]))
    with caplog.at_level("INFO", logger="synbt_factory.progress"):
        for done in range(1, 5):
            clock(done, 3000, {})
    assert clock.refined is not None
    assert not [r for r in caplog.records if "measured again" in r.getMessage()]


def test_step_clock_without_a_faster_preset_suggests_fewer_steps(caplog: pytest.LogCaptureFixture) -> None:
    from synbt_factory.progress import StepClock

    clock = StepClock(
        _plan(steps=10_000, faster=None), measure_steps=1, warn_after_seconds=60.0, clock=_FakeClock([0.0, 1.0])
    )
    with caplog.at_level("INFO", logger="synbt_factory.progress"):
        clock(0, 10_000, {})
        clock(1, 10_000, {})
    (warning,) = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert "--steps" in warning and "--preset" not in warning


def test_default_preset_on_a_cpu_only_machine_is_the_cpu_one(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from cli._presets import TRAINER_PRESETS, choose_preset

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    expected = {"train vqvae": "cpu", "train diffusion": "cpu", "train tissue": "cpu", "segment train": "tiny"}
    assert {c: choose_preset(c, "auto", "auto") for c in TRAINER_PRESETS} == expected
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert choose_preset("train vqvae", "auto", "auto") == "paper"
    assert choose_preset("train vqvae", "auto", "cpu") == "cpu"  # --device cpu on a GPU machine
    assert choose_preset("train vqvae", "small", "auto") == "small"  # a named preset is kept


def test_faster_preset_names_the_cpu_preset_or_tiny() -> None:
    from cli._presets import faster_preset

    assert faster_preset("train vqvae", "paper") == "cpu"
    assert faster_preset("train diffusion", "small") == "cpu"
    assert faster_preset("train vqvae", "cpu") == "tiny"
    assert faster_preset("train tissue", "small") == "cpu"
    assert faster_preset("train tissue", "cpu") == "tiny"
    assert faster_preset("segment train", "tiny") is None


def test_train_vqvae_without_preset_on_cpu_announces_the_cpu_preset(
    monkeypatch: pytest.MonkeyPatch, stores, tmp_path: Path
) -> None:
    import torch

    import synbt_factory.training.vqvae as vqvae
    from synbt_factory.training.runs import TrainResult

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    seen: dict[str, Any] = {}

    def fake_train(data: Any, out: Path, *, train_config: Any, progress: Any, **kwargs: Any) -> TrainResult:
        seen["steps"] = train_config.steps
        progress(1, train_config.steps, {"loss": 0.5})
        return TrainResult(final_checkpoint=out / "final.pt", steps=train_config.steps)

    monkeypatch.setattr(vqvae, "train_vqvae", fake_train)
    argv = ["train", "vqvae", "--data", str(stores["prepared"]), "--out", str(tmp_path / "run")]
    result = CliRunner().invoke(app, argv, env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert seen["steps"] == vqvae.train_presets("cpu", "patch")[1].steps
    assert "preset cpu" in result.output and "on cpu" in result.output


def test_an_unknown_preset_names_the_flag(stores, tmp_path: Path) -> None:
    argv = ["train", "tissue", "--labels", str(stores["prepared"]), "--out", str(tmp_path / "run"), "--preset", "paper"]
    _one_error_line(CliRunner().invoke(app, argv), "--preset 'paper'", "tiny, cpu, small")


# ---------------------------------------------------------------------------- item 5: progress in a log file
def test_plain_progress_prints_a_line_every_tenth_once_enough_time_passed() -> None:
    from cli._console import PlainProgress

    lines: list[str] = []
    times = iter([0.0] + [30.0 * k for k in range(1, 101)])  # the start, then 30 s per report
    plain = PlainProgress("train diffusion", lines.append, every_percent=10, min_interval=10, clock=lambda: next(times))
    for done in range(1, 101):
        plain(done * 25, 2500, {"loss": 0.25})
    assert len(lines) == 10, lines  # 10 %, 20 %, ... 100 %
    assert lines[0].startswith("train diffusion: 250/2500 (10%), elapsed 0:05:00, eta 0:45:00")
    assert "loss=0.25" in lines[0]
    assert lines[-1].startswith("train diffusion: 2500/2500 (100%)") and "eta" not in lines[-1]


def test_plain_progress_is_quiet_for_a_short_task() -> None:
    from cli._console import PlainProgress

    lines: list[str] = []
    times = iter([0.0, 0.1, 0.2, 0.3])
    plain = PlainProgress("bank", lines.append, clock=lambda: next(times))
    for done in (1, 2, 3):
        plain(done, 3, {})
    assert lines == []


def test_progress_bar_writes_plain_lines_when_stderr_is_not_a_terminal() -> None:
    from cli._console import PlainProgress, err_console, progress_bar

    assert not err_console.is_terminal  # pytest captures stderr
    with progress_bar("train vqvae", total=10) as update:
        assert isinstance(update, PlainProgress)


# ---------------------------------------------------------------------------- item 3: errors name the flag
def test_segment_train_errors_name_the_flag_not_the_field(stores, tmp_path: Path) -> None:
    argv = [
        "segment",
        "train",
        "--real",
        str(stores["prepared"]),
        "--out",
        str(tmp_path / "run"),
        "--model",
        "resnet",
        "--preset",
        "tiny",
        "--patch",
        "16",
        "--steps",
        "1",
        "--device",
        "cpu",
    ]
    line = _one_error_line(CliRunner().invoke(app, argv), "--model must be one of", "'resnet'")
    assert "name must" not in line
    assert not (tmp_path / "run").exists()


def test_train_diffusion_errors_name_the_flag(stores, tmp_path: Path) -> None:
    argv = [
        "train",
        "diffusion",
        "--vqvae",
        str(tmp_path / "vq.pt"),
        "--data",
        str(stores["prepared"]),
        "--out",
        str(tmp_path / "run"),
        "--preset",
        "tiny",
        "--mask-loss-weight",
        "-1",
        "--device",
        "cpu",
    ]
    line = _one_error_line(CliRunner().invoke(app, argv), "--mask-loss-weight must be >= 0")
    assert "mask_loss_weight" not in line


# ---------------------------------------------------------------------------- Ctrl-C during a training
def test_ctrl_c_in_segment_train_names_the_step_and_a_resume_command_that_works(
    stores, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C used to print a bare 'interrupted' and keep nothing since the last validation."""
    import shlex
    import signal

    from synbt_factory.checkpoint import load_checkpoint
    from synbt_factory.progress import StepClock

    original = StepClock.__call__
    sent: list[int] = []

    def ctrl_c_at_step_1(self: StepClock, done: int, total: int, metrics: Any) -> None:
        original(self, done, total, metrics)
        if done == 1 and not sent:
            sent.append(done)
            signal.raise_signal(signal.SIGINT)

    monkeypatch.setattr(StepClock, "__call__", ctrl_c_at_step_1)
    out = tmp_path / "run dir"
    argv = [
        "segment",
        "train",
        "--data",
        str(stores["prepared"]),
        "--out",
        str(out),
        "--preset",
        "tiny",
        "--patch",
        "16",
        "--steps",
        "3",
        "--device",
        "cpu",
    ]
    result = CliRunner().invoke(app, argv)
    assert result.exit_code == 130, result.output
    assert "Traceback" not in result.output
    line = next(line for line in result.output.splitlines() if line.startswith("interrupted"))
    assert "interrupted at step 1" in line and str(out / "last.pt") in line, line
    assert load_checkpoint(out / "last.pt", kind="segmenter")["step"] == 1
    command = shlex.split(line.split("resume with: ", 1)[1])
    assert command[0] == "synbt" and command[1:] == [*argv, "--resume"]

    monkeypatch.undo()
    resumed = CliRunner().invoke(app, command[1:])
    assert resumed.exit_code == 0, resumed.output
    assert load_checkpoint(out / "last.pt", kind="segmenter")["step"] == 3
    assert load_checkpoint(out / "final.pt", kind="segmenter")["step"] == 3  # as every trainer writes it


def test_resume_command_adds_resume_only_where_the_command_has_it() -> None:
    from cli._console import resume_command

    assert (
        resume_command(["train", "tissue", "--no-resume", "--out", "a b"], has_resume=True)
        == "synbt train tissue --out 'a b' --resume"
    )
    assert resume_command(["demo", "--out", "d"], has_resume=False) == "synbt demo --out d"


# ---------------------------------------------------------------------------- one vocabulary
def test_prepared_store_is_data_everywhere_with_old_names_hidden(stores, tmp_path: Path) -> None:
    """train tissue took --labels and segment train --real for the prepared store that others call --data."""
    runner = CliRunner()
    for command, old in ((["train", "tissue"], "--labels"), (["segment", "train"], "--real")):
        shown = runner.invoke(app, [*command, "--help"], env={"COLUMNS": "200"}).output
        assert "--data" in shown and old not in shown, shown
        missing = runner.invoke(app, [*command, "--out", str(tmp_path / "x"), "--preset", "tiny"])
        assert _one_error_line(missing, "--data")
    both = runner.invoke(
        app,
        ["segment", "train", "--data", str(stores["prepared"]), "--real", str(tmp_path), "--out", str(tmp_path / "x")],
    )
    _one_error_line(both, "--data", "--real")


def test_old_flag_names_still_work(stores, tmp_path: Path) -> None:
    blocker = tmp_path / "notes.txt"
    blocker.write_text("x\n")
    # the old names reach the command: it gets as far as checking --out
    for argv in (
        ["train", "tissue", "--labels", str(stores["prepared"])],
        ["segment", "train", "--real", str(stores["prepared"]), "--patch", "16"],
    ):
        result = CliRunner().invoke(app, [*argv, "--out", str(blocker / "run"), "--preset", "tiny"])
        _one_error_line(result, "--out")


def test_train_tissue_resume_is_opt_in(stores, tmp_path: Path) -> None:
    out = tmp_path / "run"
    out.mkdir()
    (out / "last.pt").write_bytes(b"a finished run")
    result = CliRunner().invoke(
        app,
        [
            "train",
            "tissue",
            "--data",
            str(stores["prepared"]),
            "--out",
            str(out),
            "--preset",
            "tiny",
            "--steps",
            "1",
            "--device",
            "cpu",
        ],
    )
    _one_error_line(result, "--resume")
    assert (out / "last.pt").read_bytes() == b"a finished run"


def test_every_missing_required_option_is_named_at_once() -> None:
    """``synbt generate --n 5000 --out …`` named one missing option per try (--data, then --bank)."""
    # --method synbt (the default) also needs both checkpoints: named with the rest, not at the next try
    result = CliRunner().invoke(
        app, ["generate", "--n", "5000", "--out", "datasets/synth.zarr"], env={"COLUMNS": "200"}
    )
    assert result.exit_code == 2, result.output
    assert (
        "Missing options: --data, --bank, --vqvae, --diffusion (--vqvae and --diffusion: for --method synbt, "
        "the default)." in result.output
    ), result.output
    syntumor = CliRunner().invoke(
        app, ["generate", "--n", "5", "--out", "x", "--method", "syntumor"], env={"COLUMNS": "200"}
    )
    assert syntumor.exit_code == 2 and "Missing options: --data, --bank." in syntumor.output, syntumor.output
    some = CliRunner().invoke(
        app, ["generate", "--n=5", "--out", "x", "--data=y", "--vqvae", "v.pt"], env={"COLUMNS": "200"}
    )
    assert "Missing options: --bank, --diffusion (--diffusion: for --method synbt, the default)." in some.output
    one = CliRunner().invoke(
        app, ["generate", "--n=5", "--out", "x", "--data=y", "--method=copypaste"], env={"COLUMNS": "200"}
    )
    assert one.exit_code == 2 and "Missing option '--bank'." in one.output, one.output


def test_segment_train_names_every_usage_problem_in_one_line() -> None:
    """``synbt segment train --mix 0.5`` reported --data missing, and --synthetic only on the next try."""
    result = CliRunner().invoke(app, ["segment", "train", "--mix", "0.5"])
    _one_error_line(result, "--data", "--synthetic")


@pytest.mark.parametrize("command", [["train", "tissue"], ["segment", "train"], ["demo"], ["generate"]])
def test_help_shows_flags_without_a_bool_value(command: list[str]) -> None:
    """Every flag (--resume, -v, --help) was listed as taking a ``<bool>``."""
    shown = CliRunner().invoke(app, [*command, "--help"], env={"COLUMNS": "200"}).output
    assert "--help" in shown and "<bool>" not in shown, shown


def test_bank_preview_counts_cases_with_max_cases_like_store_preview(stores, tmp_path: Path) -> None:
    """bank preview's --cases was a count, eval vqvae's --cases a list of ids: the count is --max-cases now."""
    shown = CliRunner().invoke(app, ["bank", "preview", "--help"], env={"COLUMNS": "200"}).output
    assert "--max-cases" in shown and "--cases" not in shown.replace("--max-cases", ""), shown
    for flag in ("--max-cases", "--cases"):
        out = tmp_path / f"{flag.strip('-')}.png"
        result = CliRunner().invoke(
            app,
            [
                "bank",
                "preview",
                "--data",
                str(stores["prepared"]),
                "--bank",
                str(stores["bank"]),
                "--out",
                str(out),
                flag,
                "1",
            ],
        )
        # the tiny store has no breast maps: the one case asked for is tried, and only that one
        assert "in the first 1 case(s)" in _one_error_line(result), result.output


@pytest.mark.parametrize(
    ("command", "new", "old"),
    [
        (["generate"], "--sample-steps", "--steps"),
        (["generate-one"], "--sample-steps", "--steps"),
        (["store", "report"], "--data", "--real"),
    ],
)
def test_one_name_per_concept_in_help_with_the_old_name_hidden(command: list[str], new: str, old: str) -> None:
    """--steps meant sampling steps in generate and training steps in the trainers; store report took the
    prepared store as --real."""
    shown = CliRunner().invoke(app, [*command, "--help"], env={"COLUMNS": "200"}).output
    assert new in shown and f"{old} " not in shown.replace(new, ""), shown


def test_old_and_new_name_together_must_agree(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app,
        [
            "generate-one",
            "--case",
            "x::y",
            "--mask",
            "m.nii.gz",
            "--vqvae",
            "a.pt",
            "--diffusion",
            "b.pt",
            "--out",
            str(tmp_path / "o.nii.gz"),
            "--sample-steps",
            "5",
            "--steps",
            "6",
        ],
    )
    _one_error_line(result, "--sample-steps", "--steps")


# ---------------------------------------------------------------------------- the README's pipeline, as written
# what each README command gets appended to run in seconds (the last value of an option wins)
_TINY = {
    "data phantom": ["--n", "4", "--size", "tiny", "--healthy-fraction", "0"],
    "data prepare": ["--fov", "64", "64", "48"],
    "train vqvae": ["--preset", "tiny", "--steps", "2", "--device", "cpu"],
    "train diffusion": ["--preset", "tiny", "--steps", "2", "--device", "cpu"],
    "train tissue": ["--preset", "tiny", "--steps", "2", "--device", "cpu"],
    "data tissue": ["--device", "cpu"],
    "generate": [
        "--n",
        "2",
        "--sample-steps",
        "2",
        "--batch-size",
        "2",
        "--workers",
        "1",
        "--no-quality-gate",
        "--device",
        "cpu",
    ],
    "store report": ["--max-cases", "2"],
    "segment train": ["--preset", "tiny", "--crop", "16", "16", "16", "--steps", "2", "--device", "cpu"],
    "segment eval": ["--device", "cpu", "--split", "train", "--max-cases", "1"],
}


@pytest.mark.slow
def test_the_readme_pipeline_runs_as_written_on_tiny_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``data tissue --ckpt runs/tissue/final.pt`` failed as written: train tissue wrote no final.pt."""
    from bench.readme_pipeline import readme_pipeline_commands

    commands = readme_pipeline_commands()
    assert len(commands) >= 10
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    for words in commands:
        name = " ".join(words[:2]) if words[0] in ("data", "train", "store", "segment", "bank") else words[0]
        result = runner.invoke(app, [*words, *_TINY.get(name, [])])
        assert result.exit_code == 0, f"synbt {' '.join(words)}\n{result.output}"
        assert "Traceback" not in result.output
    assert (tmp_path / "runs" / "tissue" / "final.pt").is_file()


def test_no_empty_progress_bar_is_drawn_before_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """On a terminal, a command that failed before its first step left an empty bar above the error."""
    import io

    from rich.console import Console

    import cli._console as console_module

    screen = io.StringIO()
    monkeypatch.setattr(
        console_module, "err_console", Console(file=screen, force_terminal=True, width=80, color_system=None)
    )
    with pytest.raises(ValueError), console_module.progress_bar("train tissue", total=3):
        raise ValueError("bad input")
    assert screen.getvalue().strip() == ""
    with console_module.progress_bar("train tissue", total=3) as update:
        update(1, 3, {"loss": 0.5})
    assert "train tissue" in screen.getvalue() and "1/3" in screen.getvalue()


# ---------------------------------------------------------------------------- item 7: no silent fallback
def test_placement_summary_counts_fallbacks_and_warns_when_most_tumors_left_the_fgt() -> None:
    from synbt_factory.generate.placement_summary import summarize_placements

    fgt = {"centre_region": "fgt", "in_fgt_fraction": 0.6, "voxels": 100, "tries": 1}
    breast = {"centre_region": "breast", "in_fgt_fraction": 0.0, "voxels": 300, "tries": 3}
    mostly_fgt = summarize_placements([fgt, fgt, breast, None])
    assert (mostly_fgt.n, mostly_fgt.in_fgt_region, mostly_fgt.fallbacks) == (3, 2, 1)
    assert mostly_fgt.mean_in_fgt_fraction == pytest.approx(0.4)
    assert mostly_fgt.warning is None
    mostly_breast = summarize_placements([fgt, breast, breast])
    assert mostly_breast.warning is not None and "1 of 3" in mostly_breast.warning
    assert "synbt train tissue" in mostly_breast.warning


def test_generate_ends_with_a_placement_summary_and_warns_without_fgt(stores, tmp_path: Path) -> None:
    # backgrounds with a breast mask but no tissue map: every tumor falls back from FGT to the whole breast
    prepared = CaseStore.create(tmp_path / "no_fgt.zarr", kind="prepared", card={})
    for i in range(2):
        pre = np.full((64, 64, 32), 0.4, np.float32)
        post = pre.copy()
        post[10:14, 40:44, 14:18] = 1.5
        breast = np.zeros(pre.shape, np.uint8)
        breast[6:58, 24:60, 4:28] = 1
        prepared.write_case(
            f"CASE_{i:03d}",
            {"image": np.stack([pre, post]).astype(np.float16), "mask": (post > 1).astype(np.uint8), "breast": breast},
            {"affine": np.eye(4).tolist(), "spacing": [1, 1, 1], "split": "train"},
        )
    out = tmp_path / "synth.zarr"
    args = [
        "generate",
        "--n",
        "2",
        "--out",
        str(out),
        "--data",
        str(tmp_path / "no_fgt.zarr"),
        "--bank",
        str(stores["bank"]),
        "--method",
        "syntumor",
        "--workers",
        "1",
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "placement: 0/2 centred in FGT (2 fell back" in result.output
    assert "warning: only 0 of 2 tumors" in " ".join(result.output.split())


# ---------------------------------------------------------------------------- item 9: one --crop syntax
def test_every_xyz_option_takes_three_values_and_the_old_comma_form_still_works() -> None:
    import typer.main

    command = typer.main.get_command(app)
    diffusion = command.commands["train"].commands["diffusion"]  # type: ignore[attr-defined]
    segment = command.commands["segment"].commands["train"]  # type: ignore[attr-defined]
    for cmd in (diffusion, segment):
        crop = next(p for p in cmd.params if "--crop" in p.opts)
        assert crop.nargs == 3, cmd.name
        assert cmd._split_comma_values(["--crop", "8,8,8", "--out", "a,b"]) == ["--crop", "8", "8", "8", "--out", "a,b"]
        assert cmd._split_comma_values(["--crop", "8", "8", "8"]) == ["--crop", "8", "8", "8"]


# ---------------------------------------------------------------------------- item 6: the FOV trap
def test_prepare_warns_when_most_of_the_fov_is_padding_and_names_a_fov_that_fits(tmp_path: Path) -> None:
    from synbt_factory.phantom import write_phantom

    write_phantom(tmp_path / "phantom", n=1, seed=0, size="tiny", healthy_fraction=0.0)
    result = CliRunner().invoke(
        app, ["data", "prepare", str(tmp_path / "phantom"), "--out", str(tmp_path / "a.zarr"), "--workers", "1"]
    )
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "of the field of view of the median case is padding" in text and "--fov 64 64 48" in text
    attrs = CaseStore.open(tmp_path / "a.zarr").case_attrs(CaseStore.open(tmp_path / "a.zarr").case_ids()[0])
    assert attrs["fov_padding_fraction"] > 0.9
    fitted = CliRunner().invoke(
        app,
        [
            "data",
            "prepare",
            str(tmp_path / "phantom"),
            "--out",
            str(tmp_path / "b.zarr"),
            "--workers",
            "1",
            "--fov",
            "64",
            "64",
            "48",
        ],
    )
    assert fitted.exit_code == 0, fitted.output
    assert "padding" not in fitted.output


# ---------------------------------------------------------------------------- item 10: healthy test cases
def test_segment_eval_explains_scores_of_cases_without_tumor() -> None:
    from cli.segment import _healthy_note

    tumor = {"truth_voxels": 120, "pred_voxels": 100}
    assert _healthy_note([tumor]) is None
    note = _healthy_note([tumor, {"truth_voxels": 0, "pred_voxels": 5}, {"truth_voxels": 0, "pred_voxels": 0}])
    assert note is not None and note.startswith("2 of 3 scored case(s) have no tumor") and "(1 such false" in note


def test_placement_summary_warns_when_most_tumors_were_shrunk_to_the_breast_size_cap() -> None:
    from synbt_factory.generate.placement_summary import summarize_placements

    def record(capped: bool, size: float) -> dict:
        return {
            "centre_region": "fgt",
            "in_fgt_fraction": 0.5,
            "voxels": 200,
            "tries": 1,
            "size_capped": capped,
            "breast_size_mm": size,
        }

    older = {"centre_region": "fgt", "in_fgt_fraction": 0.5, "voxels": 200, "tries": 1}  # before the field
    few = summarize_placements([record(True, 30.0), record(False, 31.0), record(False, 29.0), older])
    assert (few.capped, few.cap_known) == (1, 3) and few.warnings == []
    assert "1/3 shrunk to the breast-size cap" in few.text()
    most = summarize_placements([record(True, 10.0), record(True, 12.0), record(False, 30.0)])
    assert len(most.warnings) == 1 and "2 of 3 tumors were shrunk" in most.warnings[0]
    assert "median 12 mm" in most.warnings[0] and "max_diameter_fraction" in most.warnings[0]
    assert summarize_placements([older]).warnings == []
