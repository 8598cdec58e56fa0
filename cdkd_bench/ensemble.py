"""K seeds of one recipe trained together: one vmapped student forward for all of them.

A tiny student leaves a GPU idle between kernel launches; stacking the K seeds' students
(``torch.func.stack_module_state``) and running them with ``vmap`` + ``functional_call``
makes one launch do K members' work. Each member keeps what a run of its own seed has:
its initial weights, its batches, its teacher (outputs looked up per member), its own
components and its own BatchNorm statistics (stacked buffers, updated in place per
member). AdamW is elementwise, so one optimiser over the stacked weights is K optimisers.
Only the student's forward and backward are vmapped; each member's loss terms are
computed by its own components, as in a single run. Batched kernels sum in another
order, so a vmapped run has its own numerics (see ``compute.numerics``).

Supported: components that read the student's and the teacher's outputs on the step's batches
(logits and pooled features: the logit losses, ``crd``, …), without intermediate maps, views, an owned
step or an evaluation hook. A component that draws from torch's global generator (``crd``'s
negatives) draws in another order than K separate runs would: the same distribution, other
draws.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, stack_module_state, vmap
from tqdm.auto import tqdm

from cdkd_bench.api import Batch, DomainRole, Method, Outputs, Step
from cdkd_bench.data import BatchStream, Split
from cdkd_bench.networks import forward_outputs
from cdkd_bench.training import FINITE_CHECK_EVERY, _check_finite, cosine_schedule, make_optimizer, optimiser_groups, progress_disabled


def unsupported_in_ensemble(component: Method) -> str | None:
    """Why ``component`` cannot be trained in a vmapped ensemble, or None."""
    if component.owns_step:
        return "it owns the training step"
    if component.intermediates:
        return "it reads intermediate feature maps"
    if any(component.views.values()):
        return "it reads augmented views"
    if type(component).before_evaluation is not Method.before_evaluation:
        return "it changes the student before evaluation"
    return None


class _OutputsOf(nn.Module):
    """The network's logits and pooled features as a tuple, so ``functional_call`` and ``vmap`` can carry them."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = forward_outputs(self.net, x)
        return out.logits, out.features


def _write_back(students: Sequence[nn.Module], params: Mapping[str, torch.Tensor], buffers: Mapping[str, torch.Tensor]) -> None:
    """Copy each member's slice of the stacked weights and statistics into its own module (for evaluation)."""
    with torch.no_grad():
        for k, student in enumerate(students):
            for name, tensor in [*student.named_parameters(), *student.named_buffers()]:
                tensor.copy_((params[name] if name in params else buffers[name])[k])


def fit_ensemble(
    students: Sequence[nn.Module],
    components: Sequence[Sequence[Method]],
    source: Split,
    target: Split | None,
    *,
    steps: int,
    batch_size: int,
    lr: float,
    weight_decay: float,
    seeds: Sequence[int],
    teacher_tables: Sequence[Mapping[DomainRole, Outputs] | None],
    augments: Sequence[Callable[[torch.Tensor], torch.Tensor] | None] | None = None,
    teachers: Sequence[nn.Module | None] | None = None,
    reveal_target_labels: bool = False,
    backbone_lr_mult: float = 1.0,
    checkpoints: Sequence[int] = (),
    on_checkpoint: Callable[[int], None] | None = None,
    desc: str = "ensemble",
    show_progress: bool = False,
) -> list[dict[str, float]]:
    """Train member k = ``students[k]`` with ``components[k]`` on batches drawn with ``seeds[k]``, all at once.

    Mirrors :func:`cdkd_bench.training.fit` member by member (same batch streams, source
    augmentation ``augments[k]``, loss terms, parameter groups and schedule). A member whose
    source batches are augmented gets its teacher's (``teachers[k]``) outputs on them per step. Before each checkpoint callback the members'
    modules hold their current weights. Returns each member's loss terms averaged over the
    last tenth of training.
    """
    members = len(students)
    for member in components:
        for component in member:
            reason = unsupported_in_ensemble(component)
            if reason is not None:
                raise ValueError(f"component {component.name!r} cannot train in a vmapped ensemble: {reason}")
    params, buffers = stack_module_state(list(students))  # type: ignore[arg-type]
    template = _OutputsOf(copy.deepcopy(students[0]).to("meta"))
    stacked = {f"net.{name}": value for name, value in params.items()}
    stacked_buffers = {f"net.{name}": value for name, value in buffers.items()}
    batched = vmap(lambda p, b, x: functional_call(template, (p, b), (x,)))

    def forward(p: dict[str, torch.Tensor], b: dict[str, torch.Tensor], x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with warnings.catch_warnings():  # torch says once per op that lacks a batching rule; the step is still right
            warnings.filterwarnings("ignore", message="There is a performance drop because we have not yet implemented the batching rule")
            return batched(p, b, x)  # type: ignore[no-any-return]

    # The stacked weights in the student's groups, then every member's components' own groups.
    groups = optimiser_groups(students[0], [c for member in components for c in member], lr, weight_decay, backbone_lr_mult, params)
    optimizer = make_optimizer(groups)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, cosine_schedule(steps))
    source_batches = [BatchStream(source, batch_size, seed) for seed in seeds]
    target_batches = [BatchStream(target, batch_size, seed + 1) for seed in seeds] if target is not None else None
    empty = Batch(source.x[:0], None, source.y[:0])
    for member in components:
        for component in member:
            component.train()

    tail_start = steps - max(1, steps // 10)
    tail_sums: list[dict[str, Any]] = [{} for _ in range(members)]
    checkpoint_at = set(checkpoints)
    for index in tqdm(range(steps), desc=desc, leave=False, disable=progress_disabled(show_progress), mininterval=0.5):
        sources = [stream.next() for stream in source_batches]
        if augments is not None:
            sources = [(augment(x), y, i) if augment is not None else (x, y, i) for augment, (x, y, i) in zip(augments, sources, strict=True)]
        targets = [stream.next() for stream in target_batches] if target_batches is not None else None
        # Source first, then target: the order a single run's steps update BatchNorm statistics in.
        computed = {"source": forward(stacked, stacked_buffers, torch.stack([b[0] for b in sources]))}
        if targets is not None:
            computed["target"] = forward(stacked, stacked_buffers, torch.stack([b[0] for b in targets]))
        total: list[torch.Tensor] = []
        all_terms: list[dict[str, torch.Tensor]] = []
        for k in range(members):
            xs, ys, source_index = sources[k]
            target_batch = empty
            if targets is not None:
                xt, yt, target_index = targets[k]
                target_batch = Batch(xt, yt if reveal_target_labels else None, target_index)
            known = {id(xs): _member_outputs(computed["source"], k)}
            if "target" in computed:
                known[id(target_batch.x)] = _member_outputs(computed["target"], k)
            step = Step(Batch(xs, ys, source_index), target_batch, index / steps, _precomputed(known),
                        _teacher_outputs(teacher_tables[k], teachers[k] if teachers is not None else None), _no_views)
            terms = {"source_ce": F.cross_entropy(step.student("source").logits, ys)}
            for component in components[k]:
                for name, value in component.loss(step).items():
                    terms[f"{component.name}.{name}"] = value
            all_terms.append(terms)
            total.extend(v.float() for v in terms.values())
        loss = torch.stack(total).sum()  # members share no weights: each gets exactly its own gradient
        if index % FINITE_CHECK_EVERY == 0 or index == steps - 1:
            _check_finite(loss, {f"member{k}.{n}": v for k, terms in enumerate(all_terms) for n, v in terms.items()}, index)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        if index >= tail_start:
            for k, terms in enumerate(all_terms):
                for name, value in terms.items():
                    tail_sums[k][name] = tail_sums[k].get(name, 0.0) + value.detach().float()
        if on_checkpoint is not None and index + 1 in checkpoint_at:
            _write_back(students, params, buffers)
            on_checkpoint(index + 1)
    optimizer.zero_grad(set_to_none=True)
    _write_back(students, params, buffers)
    count = steps - tail_start
    return [{name: float(value) / count for name, value in sums.items()} for sums in tail_sums]


def _member_outputs(stacked: tuple[torch.Tensor, torch.Tensor], k: int) -> Outputs:
    logits, features = stacked
    return Outputs(logits=logits[k], features=features[k])


def _precomputed(known: dict[int, Outputs]) -> Callable[[torch.Tensor], Outputs]:
    def student(x: torch.Tensor) -> Outputs:
        if id(x) not in known:
            raise ValueError("a component ran the student on images other than the step's batches, which a vmapped ensemble cannot")
        return known[id(x)]

    return student


def _teacher_outputs(tables: Mapping[DomainRole, Outputs] | None, model: nn.Module | None) -> Callable[[DomainRole, str, Batch], Outputs]:
    """A member's teacher: plain outputs looked up per image; a domain without a table (augmented source
    batches) runs the member's own frozen teacher on the batch."""

    def teacher(domain: DomainRole, _view: str, batch: Batch) -> Outputs:
        if (tables is None or domain not in tables) and model is not None:
            with torch.no_grad():
                return forward_outputs(model, batch.x)
        if tables is None or domain not in tables or batch.index is None:
            raise ValueError("a component read teacher outputs that were not precomputed for this ensemble")
        plain = tables[domain]
        return Outputs(logits=plain.logits[batch.index], features=plain.features[batch.index], num_stages=plain.num_stages)

    return teacher


def _no_views(_domain: DomainRole, view: str, _plain: Batch) -> Batch:
    raise ValueError(f"view {view!r} was asked for; a vmapped ensemble trains on plain images only")
