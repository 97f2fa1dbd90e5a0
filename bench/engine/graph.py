"""CUDA graphs: a training step (forward, loss, backward, optimiser update) captured once per trial or pack and
replayed, so a step costs one launch instead of hundreds. The step must keep all its state in device tensors
(trial.py's is written so); a capture that fails leaves eager steps, with a one-line warning, never a wrong result."""

from __future__ import annotations

import warnings
from collections.abc import Callable

import torch

WARMUP_STEPS = 3  # eager steps before capture: cuDNN picks its algorithms and the allocator settles (PyTorch's advice)


class CapturedStep:
    """`step()` eagerly until WARMUP_STEPS steps ran on a side stream, then captured once and replayed after.

    `generators` are the CUDA generators the step draws from (the trial's own): registered with the graph so each
    replay draws fresh numbers. `failure` holds why capture failed (then every step runs eagerly). A capture that
    fails midway can leave a registered generator marked as capturing, which refuses eager draws: `rebind` gets
    {old generator: a fresh one with the state the old had before capture} so the owner trains on with those
    (capture ran nothing, so the random stream goes on exactly where it was)."""

    def __init__(
        self,
        step: Callable[[], None],
        generators: list[torch.Generator],
        device: torch.device,
        rebind: Callable[[dict[torch.Generator, torch.Generator]], None] | None = None,
    ):
        self.step, self.generators, self.device, self.rebind = step, generators, device, rebind
        self.graph: torch.cuda.CUDAGraph | None = None
        self.warm = 0
        self.failure: str | None = None
        self.stream = torch.cuda.Stream(device)  # side stream for warm-up and capture; replays run on the caller's

    @property
    def label(self) -> str:
        if self.graph is not None:
            return "captured"
        return f"eager (capture failed: {self.failure})" if self.failure else "eager"

    def __call__(self) -> None:
        if self.graph is not None:
            self.graph.replay()
            return
        if self.failure is not None:
            self.step()
            return
        if self.warm < WARMUP_STEPS:
            self._on_side_stream(self.step)
            self.warm += 1
            return
        self._capture()
        if self.graph is not None:
            self.graph.replay()  # capture records the step without running it
        else:
            self.step()

    def _on_side_stream(self, fn: Callable[[], None]) -> None:
        current = torch.cuda.current_stream(self.device)
        self.stream.wait_stream(current)
        with torch.cuda.stream(self.stream):
            fn()
        current.wait_stream(self.stream)

    def _capture(self) -> None:
        graph = torch.cuda.CUDAGraph()
        saved = [gen.get_state() for gen in self.generators]
        try:
            for gen in self.generators:
                graph.register_generator_state(gen)
            torch.cuda.synchronize(self.device)
            with torch.cuda.graph(graph, stream=self.stream):
                self.step()
            self.graph = graph
        except Exception as exc:  # an op that cannot be captured: fall back to eager steps, say so once
            self.failure = f"{type(exc).__name__}: {str(exc).splitlines()[0][:160] if str(exc) else ''}"
            warnings.warn(f"CUDA graph capture failed, training eagerly: {self.failure}", stacklevel=2)
            torch.cuda.synchronize(self.device)
            fresh = []
            for gen, state in zip(self.generators, saved):
                new = torch.Generator(device=gen.device)
                new.set_state(state)
                fresh.append(new)
            if self.rebind is not None:
                self.rebind(dict(zip(self.generators, fresh)))
            self.generators = fresh


def graphs_usable(device: torch.device, wanted: bool) -> bool:
    """Capture on CUDA when the config asks for it (cuda_graphs=true) and this torch can register a trial's own
    generator with a graph; eager everywhere else (the CPU path)."""
    return wanted and device.type == "cuda" and hasattr(torch.cuda.CUDAGraph, "register_generator_state")
