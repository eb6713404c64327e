"""``tether.watch(model, optimizer)``: a plain PyTorch loop's learning rate, gradient norm
and step time, logged with one line (no framework, no callback to write).

It hooks the optimizer: before each ``step()`` the L2 norm of every parameter's gradient
is taken (the gradients the step is about to use), after it the learning rate of each
parameter group and the time since the previous step. The loss is yours to log, as
usual: ``run.log_metric("loss", loss.item())``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from tether.errors import UsageError


@dataclass
class Watch:
    """The hooks ``watch`` installed; ``remove()`` takes them off."""

    handles: list[Any] = field(default_factory=list)
    steps: int = 0

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles.clear()


def watch(model: Any, optimizer: Any, *, every: int = 1, run: Any = None) -> Watch:
    """Log ``grad_norm``, ``lr`` (``lr/1``, … for more parameter groups) and
    ``step_time`` (seconds since the previous step) every ``every`` optimizer steps,
    into ``run`` (default: the active run)."""
    import torch

    from tether.runs.api import active_run

    target = run if run is not None else active_run()
    if target is None:
        raise UsageError("tether.watch needs an open run",
                         hint="call it inside 'with tether.start_run() as run:'")  # fmt: skip
    if every < 1:
        raise UsageError(f"every={every}: watch logs every N >= 1 steps")
    parameters = [p for p in model.parameters() if p.requires_grad]
    state = Watch()
    norm: list[float | None] = [None]
    last = [time.perf_counter()]

    def before(_optimizer: Any, _args: Any, _kwargs: Any) -> None:
        if state.steps % every == 0:
            grads = [p.grad.detach() for p in parameters if p.grad is not None]
            if grads:
                norms = torch.stack([torch.linalg.vector_norm(g) for g in grads])
                norm[0] = float(torch.linalg.vector_norm(norms))

    def after(_optimizer: Any, _args: Any, _kwargs: Any) -> None:
        now = time.perf_counter()
        if state.steps % every == 0:
            values = {"step_time": now - last[0]}
            if norm[0] is not None:
                values["grad_norm"] = norm[0]
            for i, group in enumerate(optimizer.param_groups):
                values["lr" if i == 0 else f"lr/{i}"] = float(group["lr"])
            target.log_metrics(values, step=state.steps)
            norm[0] = None
        last[0] = now
        state.steps += 1

    state.handles.append(optimizer.register_step_pre_hook(before))
    state.handles.append(optimizer.register_step_post_hook(after))
    return state
