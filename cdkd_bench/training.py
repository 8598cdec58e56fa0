"""The optimisation loop shared by teacher and student stages, and the control it gives components."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from cdkd_bench.api import PLAIN, Batch, DomainRole, Method, Outputs, Step, StepControl
from cdkd_bench.compute import compile_backend
from cdkd_bench.data import BatchStream, Split
from cdkd_bench.images import Images
from cdkd_bench.networks import forward_outputs

FINITE_CHECK_EVERY = 25


def progress_disabled(show_progress: bool) -> bool | None:
    """tqdm's ``disable``: None draws bars only on a terminal, so logs and pipes stay readable."""
    return None if show_progress else True


class RunFailed(Exception):
    """Training could not go on (a non-finite loss, say); the run is stored as failed."""


def autocast_for(device: torch.device) -> contextlib.AbstractContextManager[None]:
    """bfloat16 autocast on CUDA (fast, no loss scaling needed); plain float32 on the CPU."""
    if device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def cosine_schedule(total_steps: int) -> Callable[[int], float]:
    return lambda step: 0.5 * (1.0 + math.cos(math.pi * min(step, total_steps) / total_steps))


def optimiser_groups(
    model: nn.Module, components: Sequence[Method], lr: float, weight_decay: float, backbone_lr_mult: float,
    weights: Mapping[str, torch.Tensor] | None = None,
) -> list[dict[str, Any]]:
    """The student's head at ``lr`` and body at ``lr * backbone_lr_mult``, then each component's own groups.

    ``weights`` stand in for the model's parameters by name (the stacked weights of a vmapped ensemble).
    """
    classifier = getattr(model, "get_classifier", None)
    head_ids = {id(p) for p in classifier().parameters()} if callable(classifier) else set()
    named = dict(model.named_parameters())
    chosen = weights if weights is not None else named
    head = [chosen[n] for n, p in named.items() if id(p) in head_ids]
    body = [chosen[n] for n, p in named.items() if id(p) not in head_ids]
    groups: list[dict[str, Any]] = [{"params": body, "lr": lr * backbone_lr_mult, "weight_decay": weight_decay}]
    if head:
        groups.append({"params": head, "lr": lr, "weight_decay": weight_decay})
    for component in components:
        for group in component.param_groups():
            params = [p for p in group["params"] if p.requires_grad]
            if params:
                groups.append({"params": params, "lr": lr * float(group.get("lr_mult", 1.0)),
                               "weight_decay": float(group.get("weight_decay", weight_decay))})
    return [g for g in groups if g["params"]]


def make_optimizer(groups: list[dict[str, Any]]) -> torch.optim.Optimizer:
    """AdamW, fused into one kernel per step where every parameter allows it (floating point, CPU or CUDA):
    measured 0.81x the student's step time on the CPU together with channels-last inputs."""
    params = [p for group in groups for p in group["params"]]
    fused = bool(params) and all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in params) \
        and len({p.device for p in params}) == 1
    return torch.optim.AdamW(groups, fused=fused)


def compiled_forward(model: nn.Module, stages: Sequence[int], device: torch.device) -> Callable[[torch.Tensor], Outputs]:
    """The student's forward pass captured by torch.compile (backend: compute.compile_backend)."""
    backend = compile_backend()
    mode = "reduce-overhead" if device.type == "cuda" and backend == "inductor" else None
    # A whole graph per step shape; components read the outputs within the step, before the next replay.
    return torch.compile(partial(forward_outputs, model, stages=stages), backend=backend, mode=mode, dynamic=False)  # type: ignore[no-any-return]


def _check_finite(loss: torch.Tensor, terms: Mapping[str, torch.Tensor], index: int) -> None:
    if not torch.isfinite(loss):
        values = ", ".join(f"{k}={float(v.detach()):.4g}" for k, v in terms.items())
        raise RunFailed(f"the loss became {float(loss.detach())} by step {index} ({values})")


class _Control(StepControl):
    """The engine's side of an owned step: backward, partial updates, recomputation."""

    def __init__(self, step: Step, student: nn.Module, others: Sequence[Method], optimizer: torch.optim.Optimizer,
                 index: int, check: bool) -> None:
        self.step, self.student = step, student
        self._others, self._optimizer, self._index, self._check = others, optimizer, index, check
        self._all = [p for group in optimizer.param_groups for p in group["params"]]

    def source_ce(self) -> torch.Tensor:
        batch = self.step.source
        assert batch.y is not None
        ce = F.cross_entropy(self.step.student("source").logits, batch.y)
        labelled = self.step.labelled_target_ce()  # the regime's labelled target images are supervised data too
        return ce if labelled is None else ce + labelled

    def others(self) -> dict[str, torch.Tensor]:
        return {f"{c.name}.{name}": value for c in self._others for name, value in c.loss(self.step).items()}

    def backward(self, loss: torch.Tensor) -> None:
        if self._check:
            _check_finite(loss, {"loss": loss}, self._index)
        loss.backward()

    def update(self, parameters: Iterable[nn.Parameter] | None = None) -> None:
        if parameters is not None:
            chosen = {id(p) for p in parameters}
            for p in self._all:
                if id(p) not in chosen:
                    p.grad = None  # AdamW leaves parameters without a gradient untouched
        self._optimizer.step()
        self._optimizer.zero_grad(set_to_none=True)

    def recompute(self) -> None:
        self.step.forget_outputs()


def fit(
    model: nn.Module,
    components: Sequence[Method],
    source: Split,
    target: Split | None,
    *,
    steps: int,
    batch_size: int,
    lr: float,
    weight_decay: float,
    seed: int,
    teacher: nn.Module | None = None,
    teacher_tables: Mapping[DomainRole, Outputs] | None = None,
    reveal_target_labels: bool = False,
    augment: Callable[[torch.Tensor], torch.Tensor] | None = None,
    views: Mapping[str, Callable[[torch.Tensor], torch.Tensor]] | None = None,
    backbone_lr_mult: float = 1.0,
    checkpoints: Sequence[int] = (),
    on_checkpoint: Callable[[int], None] | None = None,
    desc: str = "train",
    show_progress: bool = False,
    compile_step: bool = False,
    labelled_target: Split | None = None,
) -> dict[str, float]:
    """Train ``model`` (and the components' own modules) for ``steps`` steps.

    The loss is cross-entropy on the labelled source batch plus every component's terms,
    unless one component owns the step (it then drives the update through a control
    object). ``augment`` transforms source batches (the suite's policy, for the teacher and,
    under augmentation parity, for every student). The teacher's outputs on plain images are
    looked up per image (pass them as ``teacher_tables`` when they are already known, else
    they are computed here); on augmented source batches they are computed per step. ``views`` are
    the augmentations components may ask for by name. After each step count listed in
    ``checkpoints``, ``on_checkpoint(step_count)`` is called (the engine evaluates there).
    With ``compile_step`` the student's forward pass (and so its backward) is captured
    with torch.compile: on CUDA in ``reduce-overhead`` mode, which replays the step's
    kernels as a CUDA graph instead of launching each one from Python.
    ``labelled_target`` holds the target images whose labels the label regime reveals: each
    step draws a batch of them (``Step.labelled_target``) and adds its cross-entropy
    (``target_ce``) to the loss, in its own forward pass.
    Returns each loss term averaged over the last tenth of training.
    """
    device = source.x.device
    optimizer = make_optimizer(optimiser_groups(model, components, lr, weight_decay, backbone_lr_mult))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, cosine_schedule(steps))
    source_batches = BatchStream(source, batch_size, seed)
    target_batches = BatchStream(target, batch_size, seed + 1) if target is not None else None
    labelled_batches = BatchStream(labelled_target, batch_size, seed + 2) if labelled_target is not None and len(labelled_target) else None
    empty = Batch(source.x[:0], None, source.y[:0])
    stages = tuple(sorted({s for c in components for s in c.intermediates}))
    owner = next((c for c in components if c.owns_step), None)
    others = [c for c in components if c is not owner]
    # Augmented source images are new every step: the teacher sees exactly what the student sees.
    plain_splits: dict[DomainRole, Split | None] = {"source": source if augment is None else None, "target": target}
    teacher_forward = _teacher_forward(teacher, plain_splits, stages, teacher_tables) if teacher is not None else None
    transforms = dict(views or {})
    student_forward = compiled_forward(model, stages, device) if compile_step else partial(forward_outputs, model, stages=stages)

    streams = {"source": source_batches, "target": target_batches}

    def view_maker(domain: DomainRole, view: str, plain: Batch) -> Batch:
        # A suite that crops makes views from the stored-size images (a random resized crop needs the whole image).
        stream = streams[domain]
        stored = stream.last_stored if stream is not None else None
        return Batch(transforms[view](plain.x if stored is None else stored), plain.y, plain.index)

    model.train()
    for component in components:
        component.train()
    tail_start = steps - max(1, steps // 10)
    tail_sums: dict[str, Any] = {}  # device tensors, read back once at the end
    checkpoint_at = set(checkpoints)
    for index in tqdm(range(steps), desc=desc, leave=False, disable=progress_disabled(show_progress), mininterval=0.5):
        xs, ys, source_index = source_batches.next(plain=augment is None)
        if augment is not None:
            xs = augment(xs if source_batches.last_stored is None else source_batches.last_stored)
        target_batch = empty
        if target_batches is not None:
            xt, yt, target_index = target_batches.next()
            target_batch = Batch(xt, yt if reveal_target_labels else None, target_index)
        labelled_batch = Batch(*labelled_batches.next()) if labelled_batches is not None else None
        step = Step(Batch(xs, ys, source_index), target_batch, index / steps, student_forward, teacher_forward, view_maker,
                    labelled_batch)
        # Checking finiteness reads the loss back from the device, a sync that stalls a GPU:
        # do it every few steps; a non-finite loss poisons the weights, so it is still caught.
        check = index % FINITE_CHECK_EVERY == 0 or index == steps - 1
        with autocast_for(device):
            if owner is not None:
                control = _Control(step, model, others, optimizer, index, check)
                terms = {f"{owner.name}.{name}": value for name, value in owner.update(control).items()}
            else:
                terms = {"source_ce": F.cross_entropy(step.student("source").logits, ys)}
                labelled_ce = step.labelled_target_ce()
                if labelled_ce is not None:
                    terms["target_ce"] = labelled_ce
                for component in components:
                    for name, value in component.loss(step).items():
                        terms[f"{component.name}.{name}"] = value
        if owner is None:
            loss = torch.stack([v.float() for v in terms.values()]).sum()
            if check:
                _check_finite(loss, terms, index)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        scheduler.step()
        if index >= tail_start:
            for name, value in terms.items():
                tail_sums[name] = tail_sums.get(name, 0.0) + value.detach().float()
        if on_checkpoint is not None and index + 1 in checkpoint_at:
            on_checkpoint(index + 1)
            model.train()
    optimizer.zero_grad(set_to_none=True)  # leave no stale gradients on a model that is frozen next
    count = steps - tail_start
    return {name: float(total) / count for name, total in tail_sums.items()}


def _teacher_forward(
    teacher: nn.Module, splits: Mapping[DomainRole, Split | None], stages: Sequence[int], tables: Mapping[DomainRole, Outputs] | None
) -> Callable[[DomainRole, str, Batch], Outputs]:
    """The frozen teacher's outputs for a step's batch.

    The teacher is in eval mode and its plain images never change, so when no component
    asks for intermediate maps its plain outputs are computed once per split (or given in
    ``tables``) and looked up by index; views and intermediate maps are computed per step.
    """
    table: dict[DomainRole, Outputs] = {}
    if not stages:
        for role, split in splits.items():
            if split is not None:  # None: that domain's batches change every step (augmented), nothing to look up
                table[role] = tables[role] if tables is not None and role in tables else predict_outputs(teacher, split.x)

    def outputs(domain: DomainRole, view: str, batch: Batch) -> Outputs:
        if view == PLAIN and domain in table and batch.index is not None:
            plain = table[domain]
            return Outputs(logits=plain.logits[batch.index], features=plain.features[batch.index], num_stages=plain.num_stages)
        with torch.no_grad():
            return forward_outputs(teacher, batch.x, stages)

    return outputs


@torch.no_grad()
def predict_outputs(model: nn.Module, x: torch.Tensor | Images, batch_size: int = 512) -> Outputs:
    """Float32 logits and features for every image, in eval mode."""
    was_training = model.training
    model.eval()
    logits, features = [], []
    num_stages = 0
    for start in range(0, len(x), batch_size):
        with autocast_for(x.device):
            out = forward_outputs(model, x[start : start + batch_size])
        logits.append(out.logits.float())
        features.append(out.features.float())
        num_stages = out.num_stages
    model.train(was_training)
    return Outputs(logits=torch.cat(logits), features=torch.cat(features), num_stages=num_stages)
