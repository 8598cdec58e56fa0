"""Tian et al. 2020, "Contrastive Representation Distillation". https://arxiv.org/abs/1910.10699

CRD maximises a lower bound on the mutual information between the teacher's and the student's
representations with a contrastive objective. Linear heads g_s and g_t (this component's own
modules, both trained with the student; the teacher network itself stays frozen) map the pooled
features to a common ``feat_dim`` and are L2-normalised, so the two networks' feature sizes may
differ. A pair (T, S) from the same image is a positive; S from other images are negatives.

Critic and objective. With M the number of images in the split (the bank
size) and N the number of negatives drawn per positive, the critic is

    h(T, S) = e(T, S) / (e(T, S) + N / M),    e(T, S) = exp(g_t(T) . g_s(S) / tau) / Z,

and the loss, summed over the negatives and averaged over the batch, is

    L = -E_pos[log h(T, S)] - N * E_neg[log(1 - h(T, S))]
      = mean_b [ -log h(T_b, S_b) - sum_k log(1 - h(T_b, S_k)) ].

Z is the partition constant that makes e a normalised density; like the authors' code
(RepDistiller, ``ContrastMemory``) we estimate it once, from the first batch, as
Z = M * mean(exp(score / tau)) over that batch's positive and negative scores, and keep it
fixed (a buffer per domain and direction, no gradient). ``variant="softmax"`` replaces the NCE
estimate by the exact softmax over the positive and the N negatives ("CRD softmax" in the
authors' code): L = mean_b [ -log softmax(scores_b / tau)[positive] ].

Both directions are used and summed, as in the authors' code: the teacher's embedding as
anchor against the student's memory bank, and the student's embedding as anchor against the
teacher's memory bank.

Memory banks: per domain the component distils on, two buffers of shape
(info.split_sizes[domain], feat_dim) hold a momentum average of each image's student and
teacher embeddings, initialised with random unit vectors (the reference draws them uniformly
in a box and does not normalise them). After each training step, without gradients, the rows
at ``step.batch(domain).index`` become normalise(momentum * row + (1 - momentum) * embedding).
Negatives are drawn uniformly, with replacement, from the rows other than the positive's own
index; N = min(negatives, M - 1).

Where this differs from the reference code, and why:
- The positive is the other network's *current* embedding of the same image (the paper's pair
  drawn from the joint distribution), not its memory-bank row: the code reads the positive from
  the bank too, which cuts the teacher-anchored term off from the student (only g_t would learn
  from it), whereas in the paper the student is trained through that very term.
- Negatives are drawn uniformly from the whole bank except the positive; the reference's
  default CIFAR setting draws them from other *classes*, which needs labels the target domain
  does not have. The default of 4096 negatives is smaller than the reference's 16384 because
  the benchmark's splits are small; it is capped at the bank size minus one.
- The balancing weight defaults to 0.8, the beta of the authors' CRD runs.

A batch without split indices (``Batch.index`` None, or no ``split_sizes`` for its domain,
e.g. in the conformance kit) has no bank rows to read or update: its negatives are then the
other images of the same batch (N = B - 1, M = B) and Z is estimated from that batch alone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from cdkd_bench import Method, MethodInfo, RegisterMethods, Step, hookimpl

if TYPE_CHECKING:
    from cdkd_bench.api import DomainRole

from .common import DOMAINS, check_domains, check_non_negative, check_positive, domains_field

VARIANTS = ("nce", "softmax")
ANCHORS = ("teacher", "student")
"""Direction 0: teacher anchor vs student bank; direction 1: student anchor vs teacher bank."""


def contrast_scores(anchor: torch.Tensor, positive: torch.Tensor, negatives: torch.Tensor) -> torch.Tensor:
    """(B, 1 + N) dot products: column 0 is anchor_b . positive_b, columns 1.. anchor_b . negatives[b, k]."""
    pos = (anchor * positive).sum(dim=1, keepdim=True)
    neg = torch.bmm(negatives, anchor.unsqueeze(2)).squeeze(2)
    return torch.cat([pos, neg], dim=1)


def estimate_partition(scores: torch.Tensor, temperature: float, bank_size: int) -> torch.Tensor:
    """Z = M * mean(exp(score / tau)) over every positive and negative score (no gradient)."""
    return torch.exp(scores.detach().float() / temperature).mean() * bank_size


def nce_loss(scores: torch.Tensor, temperature: float, bank_size: int, partition: torch.Tensor | float) -> torch.Tensor:
    """mean_b [ -log h(pos_b) - sum_k log(1 - h(neg_bk)) ], h = e / (e + N/M), e = exp(score/tau) / Z.

    Written with softplus for stability: -log h = softplus(log(N/M) - log e) and
    -log(1 - h) = softplus(log e - log(N/M)).
    """
    count = scores.shape[1] - 1
    if count == 0:  # no negatives: h = 1 on the positive, nothing to contrast
        return scores.sum() * 0.0
    log_e = scores / temperature - torch.log(torch.as_tensor(partition, dtype=scores.dtype, device=scores.device))
    log_noise = math.log(count / bank_size)
    positive = F.softplus(log_noise - log_e[:, 0])
    negative = F.softplus(log_e[:, 1:] - log_noise).sum(dim=1)
    return (positive + negative).mean()


def softmax_loss(scores: torch.Tensor, temperature: float) -> torch.Tensor:
    """mean_b -log softmax(scores_b / tau)[0]: cross-entropy with the positive as the class."""
    target = torch.zeros(len(scores), dtype=torch.long, device=scores.device)
    return F.cross_entropy(scores / temperature, target)


def crd_loss(
    anchor: torch.Tensor,
    positive: torch.Tensor,
    negatives: torch.Tensor,
    temperature: float,
    variant: str = "nce",
    bank_size: int | None = None,
    partition: torch.Tensor | float | None = None,
) -> torch.Tensor:
    """One direction of CRD on unit embeddings: anchor (B, D), positive (B, D), negatives (B, N, D).

    ``bank_size`` (M) and ``partition`` (Z) are needed by the NCE variant only; a missing Z is
    estimated from these scores.
    """
    scores = contrast_scores(anchor, positive, negatives)
    if variant == "softmax":
        return softmax_loss(scores, temperature)
    if variant != "nce":
        raise ValueError(f"variant must be one of {', '.join(VARIANTS)}, got {variant!r}")
    if bank_size is None:
        raise ValueError("the NCE variant needs the bank size M")
    if partition is None:
        partition = estimate_partition(scores, temperature, bank_size)
    return nce_loss(scores, temperature, bank_size, partition)


def sample_negatives(
    index: torch.Tensor, bank_size: int, count: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """(B, count) bank rows drawn uniformly with replacement from every row but ``index[b]``."""
    if count > 0 and bank_size < 2:
        raise ValueError(f"a bank of {bank_size} row(s) has no negatives to draw")
    if count == 0:
        return torch.empty(len(index), 0, dtype=torch.long, device=index.device)
    draws = torch.randint(0, bank_size - 1, (len(index), count), device=index.device, generator=generator)
    return draws + (draws >= index.unsqueeze(1)).long()  # skip the positive: uniform over the other rows


@torch.no_grad()
def update_bank(bank: torch.Tensor, index: torch.Tensor, embeddings: torch.Tensor, momentum: float) -> None:
    """In place: bank[index] = normalise(momentum * bank[index] + (1 - momentum) * embeddings)."""
    mixed = bank[index] * momentum + embeddings.detach().to(bank.dtype) * (1.0 - momentum)
    bank.index_copy_(0, index, F.normalize(mixed, p=2, dim=1))


def random_unit_rows(rows: int, dim: int) -> torch.Tensor:
    return F.normalize(torch.randn(rows, dim), p=2, dim=1)


class CRD(Method):
    """CRD: contrast teacher and student embeddings against memory banks of the other network's embeddings."""

    name = "crd"
    version = 1
    family = "distillation"
    needs_teacher = True
    uses_target = True

    @dataclass(frozen=True)
    class Hparams:
        weight: float = field(default=0.8, metadata={"search": (0.01, 10.0, "log")})
        # an integer range, not a tuple of choices: the conformance kit takes choices for str/bool only
        feat_dim: int = field(default=128, metadata={"search": (32, 512, "log")})
        negatives: int = field(default=4096, metadata={"search": (256, 16384, "log")})
        temperature: float = field(default=0.07, metadata={"search": (0.02, 0.5, "log")})
        momentum: float = field(default=0.5, metadata={"search": (0.0, 0.9)})
        variant: str = field(default="nce", metadata={"search": VARIANTS})
        domains: str = domains_field()

        def __post_init__(self) -> None:
            check_non_negative(weight=self.weight)
            for name in ("feat_dim", "negatives"):
                value = getattr(self, name)
                if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                    raise ValueError(f"{name} must be a positive integer, got {value!r}")
            check_positive(temperature=self.temperature)
            if not 0.0 <= self.momentum < 1.0:
                raise ValueError(f"momentum must be in [0, 1), got {self.momentum}")
            if self.variant not in VARIANTS:
                raise ValueError(f"variant must be one of {', '.join(VARIANTS)}, got {self.variant!r}")
            check_domains(self.domains)

    def __init__(self, hparams: CRD.Hparams, info: MethodInfo) -> None:
        super().__init__(hparams, info)
        student_dim = info.student.num_features if info.student is not None else info.student_features
        teacher_dim = info.teacher.num_features if info.teacher is not None else info.teacher_features
        if teacher_dim is None:
            raise ValueError("crd needs the teacher's feature size (MethodInfo.teacher_features)")
        self.embed_student = nn.Linear(student_dim, hparams.feat_dim)
        self.embed_teacher = nn.Linear(teacher_dim, hparams.feat_dim)
        self.bank_sizes: dict[str, int] = {}
        for domain in DOMAINS[hparams.domains]:
            size = int(info.split_sizes.get(domain, 0))
            if size < 1:
                continue  # no split to index: this domain contrasts within the batch
            self.bank_sizes[domain] = size
            self.register_buffer(f"bank_student_{domain}", random_unit_rows(size, hparams.feat_dim))
            self.register_buffer(f"bank_teacher_{domain}", random_unit_rows(size, hparams.feat_dim))
            self.register_buffer(f"partition_{domain}", torch.zeros(len(ANCHORS)))  # 0: not estimated yet

    def bank(self, network: str, domain: str) -> torch.Tensor:
        """The memory bank of ``network`` ("student" or "teacher") embeddings for ``domain``."""
        return getattr(self, f"bank_{network}_{domain}")

    def _direction(self, scores: torch.Tensor, bank_size: int, partition: torch.Tensor | None) -> torch.Tensor:
        hp = self.hparams
        if hp.variant == "softmax":
            return softmax_loss(scores, hp.temperature)
        if partition is None:
            partition = estimate_partition(scores, hp.temperature, bank_size)
        return nce_loss(scores, hp.temperature, bank_size, partition)

    def _partition(self, domain: str, direction: int, scores: torch.Tensor, bank_size: int) -> torch.Tensor:
        """Z of ``domain`` and ``direction``: estimated from the first batch, then fixed."""
        buffer = getattr(self, f"partition_{domain}")
        estimate = estimate_partition(scores, self.hparams.temperature, bank_size).to(buffer.dtype)
        # torch.where rather than `if`: no device-to-host sync on every step
        buffer[direction] = torch.where(buffer[direction] > 0, buffer[direction], estimate)
        return buffer[direction].clone()

    def embed(self, step: Step, domain: DomainRole) -> tuple[torch.Tensor, torch.Tensor]:
        """Unit-norm student and teacher embeddings of ``domain``'s batch, (B, feat_dim) each."""
        student = step.student(domain).features.float()
        teacher = step.teacher(domain).features.float()
        return (F.normalize(self.embed_student(student), p=2, dim=1),
                F.normalize(self.embed_teacher(teacher), p=2, dim=1))

    def loss(self, step: Step) -> dict[str, torch.Tensor]:
        hp = self.hparams
        terms = {}
        for domain in DOMAINS[hp.domains]:
            with torch.autocast(device_type=step.batch(domain).x.device.type, enabled=False):
                student, teacher = self.embed(step, domain)
                if len(student) == 0:  # an empty batch has nothing to contrast
                    terms[f"crd_{domain}"] = (student.sum() + teacher.sum()) * 0.0
                    continue
                index = step.batch(domain).index
                if domain in self.bank_sizes and index is not None:
                    value = self._banked(domain, student, teacher, index)
                else:
                    value = self._in_batch(student, teacher)
            terms[f"crd_{domain}"] = hp.weight * value
        return terms

    def _banked(self, domain: str, student: torch.Tensor, teacher: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        hp = self.hparams
        size = self.bank_sizes[domain]
        student_bank, teacher_bank = self.bank("student", domain), self.bank("teacher", domain)
        if len(index) != len(student):
            raise ValueError(f"{domain} batch has {len(student)} images but {len(index)} indices")
        if index.device.type == "cpu" and len(index) and (int(index.min()) < 0 or int(index.max()) >= size):
            # checked where it costs no device sync; on an accelerator the engine's indices are trusted
            raise ValueError(f"{domain} indices must lie in [0, {size}), the split size; got {int(index.min())}..{int(index.max())}")
        index = index.to(student_bank.device, torch.long)
        negatives = sample_negatives(index, size, min(hp.negatives, size - 1))
        total = student.new_zeros(())
        pairs = ((teacher, student, student_bank), (student, teacher, teacher_bank))
        for direction, (anchor, positive, bank) in enumerate(pairs):
            scores = contrast_scores(anchor, positive, bank[negatives])
            partition = self._partition(domain, direction, scores, size) if hp.variant == "nce" else None
            total = total + self._direction(scores, size, partition)
        if self.training:
            update_bank(student_bank, index, student, hp.momentum)
            update_bank(teacher_bank, index, teacher, hp.momentum)
        return total

    def _in_batch(self, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        """No split indices: the other images of the batch are the negatives (N = B - 1, M = B)."""
        size = len(student)
        rows = torch.arange(size, device=student.device)
        others = torch.stack([torch.cat([rows[:i], rows[i + 1:]]) for i in range(size)]) if size else rows.view(0, 0)
        total = student.new_zeros(())
        for anchor, positive in ((teacher, student), (student, teacher)):
            total = total + self._direction(contrast_scores(anchor, positive, positive[others]), size, None)
        return total


@hookimpl
def cdkd_register_methods(register: RegisterMethods) -> None:
    register(CRD)
