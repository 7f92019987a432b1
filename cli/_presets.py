"""One way to choose a trainer's preset: ``--preset auto`` (the default) picks by the machine.

Without a visible CUDA GPU (or with ``--device cpu``) every trainer takes its CPU preset, which runs the README's
pipeline on the phantom on a laptop; with one it takes the preset it had before ``auto`` existed:

==================  ===========  ============  ==============================
command             no GPU       CUDA GPU      presets, fastest first
==================  ===========  ============  ==============================
train vqvae         cpu          paper         tiny, cpu, small, paper
train diffusion     cpu          small         tiny, cpu, small, paper
train tissue        cpu          small         tiny, cpu, small
segment train       tiny         small         tiny, small, paper
==================  ===========  ============  ==============================
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from cli._console import fail

if TYPE_CHECKING:
    from synbt_factory.progress import RunPlan

__all__ = [
    "AUTO",
    "PRESET_HELP",
    "TRAINER_PRESETS",
    "TrainerPresets",
    "choose_preset",
    "faster_preset",
    "preset_help",
    "run_plan",
]

AUTO = "auto"


@dataclass(frozen=True, kw_only=True)
class TrainerPresets:
    """A trainer's presets (fastest first) and the ones ``auto`` picks without and with a CUDA GPU."""

    names: tuple[str, ...]
    cpu: str
    cuda: str


TRAINER_PRESETS: dict[str, TrainerPresets] = {
    "train vqvae": TrainerPresets(names=("tiny", "cpu", "small", "paper"), cpu="cpu", cuda="paper"),
    "train diffusion": TrainerPresets(names=("tiny", "cpu", "small", "paper"), cpu="cpu", cuda="small"),
    "train tissue": TrainerPresets(names=("tiny", "cpu", "small"), cpu="cpu", cuda="small"),
    "segment train": TrainerPresets(names=("tiny", "small", "paper"), cpu="tiny", cuda="small"),
}

PRESET_HELP = (
    "auto (default): {cpu} without a CUDA GPU or with --device cpu, {cuda} with one. Presets, fastest first: {names}."
)


def preset_help(command: str, detail: str = "") -> str:
    """The ``--preset`` help of ``command``: what ``auto`` picks, the presets, and ``detail``."""
    p = TRAINER_PRESETS[command]
    text = PRESET_HELP.format(cpu=p.cpu, cuda=p.cuda, names=", ".join(p.names))
    return f"{text} {detail}".strip()


def choose_preset(command: str, preset: str, device: str) -> str:
    """``preset``, or for ``auto`` the preset that fits ``device`` (``auto`` looks for a CUDA GPU).

    Fails (one line naming ``--preset``) on a preset ``command`` does not have.
    """
    presets = TRAINER_PRESETS[command]
    if preset == AUTO:
        from synbt_factory.device import resolve_device

        return presets.cuda if resolve_device(device).type == "cuda" else presets.cpu
    if preset not in presets.names:
        fail(f"--preset {preset!r} is not a preset of {command}; choose one of {AUTO}, {', '.join(presets.names)}")
    return preset


def faster_preset(command: str, preset: str) -> str | None:
    """The preset to suggest for a shorter run: the CPU preset when ``preset`` is slower, else the next faster one."""
    presets = TRAINER_PRESETS[command]
    rank = presets.names.index(preset)
    if rank > presets.names.index(presets.cpu):
        return presets.cpu
    return presets.names[rank - 1] if rank > 0 else None


def run_plan(command: str, what: str, preset: str, steps: int, device: str) -> RunPlan:
    """The :class:`~synbt_factory.progress.RunPlan` a trainer announces, with the faster preset to suggest."""
    from synbt_factory.progress import RunPlan

    faster = faster_preset(command, preset)
    return RunPlan(
        what=what, preset=preset, steps=steps, device=device, faster=None if faster is None else f"--preset {faster}"
    )
