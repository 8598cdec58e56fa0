"""The embedded suite: three digit domains generated from installed packages, all six ordered pairs."""

from __future__ import annotations

from typing import TYPE_CHECKING

from cdkd_bench import Augmentation, Budget, DataContext, Domain, Suite, hookimpl

if TYPE_CHECKING:
    from cdkd_bench import DomainData

# Bump when a generator changes what it draws: cached tensors and results are keyed by it.
GENERATOR_VERSION = 1
# The teacher learns invariances the student is not given (see docs/protocol.md): without
# them it is barely better than the student on any target. Components may read it as the
# `strong` view, and a mild shift-and-scale as the `weak` one (FixMatch-style pairs).
STRONG = Augmentation(rotation_degrees=15, scale=(0.85, 1.15), translate=0.06, gain=(0.7, 1.3), bias=0.25, invert_probability=0.2)
WEAK = Augmentation(rotation_degrees=0, scale=(0.95, 1.05), translate=0.06)


def _loader(generator: str):  # type: ignore[no-untyped-def]
    def load(context: DataContext) -> DomainData:  # noqa: ARG001 - generated, nothing to read
        # Imported here: the generators need torch, and listing suites must not.
        from cdkd_plugins.domains import embedded_images

        return getattr(embedded_images, generator)()

    return load


@hookimpl
def cdkd_register_domains(register):  # type: ignore[no-untyped-def]
    register(Domain(
        "embedded.handwritten", 10, _loader("handwritten"), GENERATOR_VERSION,
        "scikit-learn's handwritten digits (8x8 scans), upscaled, white on black",
    ))
    register(Domain(
        "embedded.printed", 10, _loader("printed"), GENERATOR_VERSION,
        "digits rendered from matplotlib's fonts, scanned like the UCI digits, random grey levels",
    ))
    register(Domain(
        "embedded.textured", 10, _loader("textured"), GENERATOR_VERSION,
        "the handwritten digits blended onto crops of scikit-learn's sample photographs (MNIST-M style)",
    ))


@hookimpl
def cdkd_register_suites(register):  # type: ignore[no-untyped-def]
    register(Suite(
        name="embedded",
        domains=("embedded.printed", "embedded.handwritten", "embedded.textured"),
        num_classes=10,
        image_size=32,
        budgets={
            # `smoke` only checks that everything runs (tests, a fresh install); its numbers mean nothing.
            "smoke": Budget(teacher_steps=20, student_steps=10, batch_size=32, lr=1e-2, eval_points=2),
            # `quick` is sized so the default grid finishes in minutes on a 2-core CPU.
            "quick": Budget(teacher_steps=400, student_steps=200, batch_size=64, lr=1e-2, eval_points=3),
            "default": Budget(teacher_steps=1500, student_steps=1500, batch_size=64, lr=1e-2, eval_points=5),
            "paper": Budget(teacher_steps=5000, student_steps=5000, batch_size=128, lr=1e-2, eval_points=10),
        },
        default_teacher="resnet18_w16_32px",
        default_student="resnet10_w8_32px",
        default_recipes=("source_only", "kd", "target_oracle"),
        default_seeds=(0, 1),
        default_budget="quick",
        teacher_augmentation=STRONG,
        views={"weak": WEAK, "strong": STRONG},
        default=True,
        description="digits: printed fonts, handwritten scans and photo-textured handwriting; no download",
    ))
