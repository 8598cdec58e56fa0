"""Romero et al. 2015, "FitNets: Hints for Thin Deep Nets". https://arxiv.org/abs/1412.6550

The student's *guided* layer ``v_g`` is mapped by a learned regressor ``r`` onto the
teacher's *hint* layer ``u_h`` and the two are pulled together (the paper's eq. 3):

    L_HT = 1/2 || u_h(x) - r(v_g(x)) ||^2

What this component computes, per domain batch::

    loss = weight * mean over (N, C, H, W) of (u_h - resize(r(v_g)))^2

* Reduction: the mean over every element (batch, channels, positions) rather than the
  paper's per-example sum, the usual practice (RepDistiller's ``HintLoss`` is
  ``nn.MSELoss``) so that the term's scale does not grow with the map's size.
* The paper's 1/2 is dropped: it is a constant factor, absorbed by ``weight``, and
  dropping it makes ``weight`` the same number as the β tuned in the common
  re-implementations (RepDistiller / CRD benchmark: β = 100 with this reduction), which is
  our default. The paper itself trains the hint stage alone before KD, so it has no joint
  weight to copy.
* Training: the paper pre-trains up to the guided layer on the hint loss, then trains the
  whole student with KD. Here the hint is one loss term added to the engine's source
  cross-entropy for the whole run (combine with ``kd`` in a recipe for the second stage),
  the practice of every benchmark that reports FitNets as a single-stage method.
* Regressor: the paper uses a convolution whose kernel (N_g - N_h + 1) makes its output the
  hint's spatial size; with equal sizes that kernel is 1x1. Heterogeneous pairs here differ
  in spatial size by other factors (a ViT's 8x8 tokens against a ResNet's 2x2 map), so the
  regressor is a 1x1 convolution from the student's stage channels to the teacher's, built
  in ``__init__`` from ``info.student`` / ``info.teacher``, and its output is resized to the
  teacher's spatial size: adaptive average pooling when the student map is at least as
  large in both dimensions, bilinear interpolation otherwise. The regressor is linear (no
  ReLU): the paper asks ``r`` and ``u_h`` to share the same non-linearity, and a teacher's
  stage output may be signed (ViT blocks), which a ReLU regressor could not reach.
* ``stage`` picks the guided layer and the hint layer by the same stage index in both nets
  (-2: the second-to-last stage, the paper's choice of a middle layer for a deep student).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from cdkd_bench import Method, MethodInfo, RegisterMethods, Step, hookimpl

from .common import DOMAINS, check_domains, check_non_negative, domains_field

STAGES = (-3, -2, -1)


def match_spatial(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``x`` (N, C, H, W) resized to ``size``: average pooling to shrink, bilinear to grow."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    if x.shape[-2] >= size[0] and x.shape[-1] >= size[1]:
        return F.adaptive_avg_pool2d(x, size)
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


def hint_loss(regressed: torch.Tensor, hint: torch.Tensor) -> torch.Tensor:
    """Mean over all elements of (hint - regressed)^2: the paper's ||u_h - r(v_g)||^2 without its 1/2."""
    if regressed.shape != hint.shape:
        raise ValueError(f"regressed student map {tuple(regressed.shape)} does not match the hint {tuple(hint.shape)}")
    return (hint.float() - regressed.float()).pow(2).mean()


class FitNet(Method):
    """FitNets: regress the student's middle stage onto the teacher's (a hint), squared error."""

    name = "fitnet"
    version = 1
    family = "distillation"
    needs_teacher = True
    uses_target = True

    @dataclass(frozen=True)
    class Hparams:
        weight: float = field(default=100.0, metadata={"search": (1.0, 1000.0, "log")})
        stage: int = field(default=-2, metadata={"search": STAGES})
        domains: str = domains_field()

        def __post_init__(self) -> None:
            check_non_negative(weight=self.weight)
            if isinstance(self.stage, bool) or not isinstance(self.stage, int):
                raise ValueError(f"stage must be an integer stage index, got {self.stage!r}")
            check_domains(self.domains)

    def __init__(self, hparams: Hparams, info: MethodInfo) -> None:
        super().__init__(hparams, info)
        if info.student is None or info.teacher is None:
            raise ValueError("fitnet needs the stage shapes of both networks (MethodInfo.student and .teacher)")
        stage = hparams.stage
        for role, net in (("student", info.student), ("teacher", info.teacher)):
            if not -len(net.stages) <= stage < len(net.stages):
                raise ValueError(f"fitnet stage {stage} does not exist in the {role} {net.arch!r} "
                                 f"({len(net.stages)} stages)")
        self.intermediates = (stage,)
        self.regressor = nn.Conv2d(info.student.stage(stage).channels, info.teacher.stage(stage).channels, kernel_size=1)

    def regress(self, student_map: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """r(v_g): the student's guided map in the teacher's channels, at the hint's spatial ``size``."""
        return match_spatial(self.regressor(student_map), size)

    def loss(self, step: Step) -> dict[str, torch.Tensor]:
        hp = self.hparams
        terms = {}
        for domain in DOMAINS[hp.domains]:
            hint = step.teacher(domain).stage(hp.stage).detach()
            regressed = self.regress(step.student(domain).stage(hp.stage), (hint.shape[-2], hint.shape[-1]))
            terms[f"fitnet_{domain}"] = hp.weight * hint_loss(regressed, hint)
        return terms


@hookimpl
def cdkd_register_methods(register: RegisterMethods) -> None:
    register(FitNet)
