"""Conformance checks for every plugin kind but methods (those are in :mod:`cdkd_bench.testing`).

Call them from your own tests::

    from cdkd_bench.testing import check_architecture, check_domain, check_executor, check_selector, check_suite

    def test_my_plugins_conform():
        check_domain(MY_DOMAIN)
        check_suite(MY_SUITE, host=load_host(extra_plugins=[("mine", my_plugin)]))
        check_architecture(my_factory)        # or a registered name: check_architecture("my_net")
        check_selector(MY_RULE)
        check_executor(MyExecutor)

Each check raises ``AssertionError`` whose message is one sentence saying what to fix: the
field, the value it found and what was expected. The kit builders at the end (``kit_pair``,
``kit_step``, ``kit_suite``) are what the pytest fixtures of :mod:`cdkd_bench.pytest_plugin`
hand out, for tests that run outside pytest.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import math
import numbers
import re
import tempfile
import threading
import types
import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, NoReturn

import torch
import torch.nn.functional as F
from torch import nn

from cdkd_bench import hookimpl
from cdkd_bench.api import (
    PLAIN,
    Augmentation,
    Batch,
    Budget,
    DataContext,
    Domain,
    DomainData,
    DomainFiles,
    Executor,
    ImageFiles,
    Job,
    Method,
    MethodInfo,
    PublishedResult,
    Selector,
    Step,
    Suite,
)
from cdkd_bench.declarations import HEADLINES
from cdkd_bench.errors import UserError
from cdkd_bench.plugins import NAME_PATTERN, Host, load_host
from cdkd_bench.request import MAX_SEED

__all__ = [
    "KitPair",
    "KitRun",
    "KitStep",
    "KitSuite",
    "check_architecture",
    "check_domain",
    "check_executor",
    "check_selector",
    "check_suite",
    "kit_pair",
    "kit_step",
    "kit_suite",
    "named_plugins",
]

DOMAIN_NAME = re.compile(r"[a-z0-9][a-z0-9_+-]*\.[a-z0-9][a-z0-9_+-]*")
"""``<suite>.<name>``: lowercase letters, digits and ``_ + -``, one dot."""
SUITE_NAME = re.compile(r"[a-z0-9][a-z0-9_+-]*")


def _fail(message: str) -> NoReturn:
    raise AssertionError(message)


def _require(condition: object, message: str) -> None:
    """Like ``assert``, but kept under ``python -O``."""
    if not condition:
        _fail(message)


def _call(what: str, fix: str, function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Call plugin code; any exception becomes one sentence naming the call and what to do."""
    try:
        return function(*args, **kwargs)
    except AssertionError:
        raise
    except Exception as exc:  # noqa: BLE001 - whatever a plugin raises is reported as a failed check
        raise AssertionError(f"{what} raised {type(exc).__name__}: {exc}; {fix}") from exc


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _valid_name(name: Any) -> bool:
    return isinstance(name, str) and NAME_PATTERN.fullmatch(name) is not None


# --------------------------------------------------------------------------- domains


def check_domain(domain: Domain, data_root: Path | str | None = None, *, load: bool = True) -> DomainData | DomainFiles | None:
    """Check a domain's declaration and, where it can be read here, its data.

    Declaration: ``name`` is ``<suite>.<name>`` in lowercase letters, digits and ``_ + -``;
    ``num_classes`` >= 2; ``version`` >= 1; ``load`` and ``locate`` are callables or None and
    a domain without ``locate`` has a ``load``. A generated domain (no ``locate``) is loaded
    twice with a fresh ``DataContext``: uint8 ``(N, 1 or 3, H, W)`` images, integer labels in
    range, a non-empty test split (``cdkd_bench.data.check_domain_data``), and both loads equal.
    A file-backed domain is read only when ``data_root`` is given: ``locate`` returns
    ``DomainFiles`` listing both splits or neither, every source exists, every listed image is
    a source, exists and has a label in range (the first of each split is decoded); without
    image lists its ``load`` is called and checked. ``load=False`` checks the declaration only.

    Returns the loaded ``DomainData`` (or the located ``DomainFiles``), None when nothing was read.
    """
    _require(isinstance(domain, Domain), f"expected a cdkd_bench.Domain, got {type(domain).__name__}; register Domain(...) instances")
    name = domain.name
    _require(isinstance(name, str) and len(name) <= 100 and DOMAIN_NAME.fullmatch(name),
             f"domain name {name!r} must be '<suite>.<name>' in lowercase letters, digits and _ + - (e.g. 'mysuite.photos')")
    _require(_is_int(domain.num_classes) and domain.num_classes >= 2,
             f"domain {name!r}: num_classes must be an integer >= 2, got {domain.num_classes!r}")
    _require(_is_int(domain.version) and domain.version >= 1,
             f"domain {name!r}: version must be an integer >= 1 (bump it when the images change), got {domain.version!r}")
    for field_name in ("load", "locate", "download"):
        value = getattr(domain, field_name)
        _require(value is None or callable(value), f"domain {name!r}: {field_name} must be a function or None, got {value!r}")
    _require(domain.locate is not None or domain.load is not None,
             f"domain {name!r} needs `load` (generated images) or `locate` (files under the data root)")
    _require(isinstance(domain.packages, tuple) and all(isinstance(p, str) and p for p in domain.packages),
             f"domain {name!r}: packages must be a tuple of distribution names, got {domain.packages!r}")
    _require(domain.expected_images is None or (_is_int(domain.expected_images) and domain.expected_images >= 1),
             f"domain {name!r}: expected_images must be None or a positive integer, got {domain.expected_images!r}")
    if not load:
        return None
    with tempfile.TemporaryDirectory(prefix="cdkd-conformance-") as tmp:
        root = Path(data_root) if data_root is not None else None
        context = DataContext(root, Path(tmp) / "raw" / name)  # as the host makes it: a folder it may create
        if domain.locate is None:
            return _check_generated(domain, context)
        if root is not None:
            return _check_located(domain, context)
    return None


def _loaded(domain: Domain, context: DataContext, what: str) -> DomainData:
    from cdkd_bench.data import check_domain_data

    assert domain.load is not None
    data = _call(f"domain {domain.name!r}: {what}", "make `load` return DomainData for this DataContext", domain.load, context)
    try:
        check_domain_data(domain, data)
    except UserError as exc:
        _fail(f"{exc}; fix what `load` returns")
    for split in ("train", "test"):
        y = getattr(data, f"{split}_y")
        _require(isinstance(y, torch.Tensor) and y.dim() == 1 and not y.is_floating_point() and not y.is_complex() and y.dtype != torch.bool,
                 f"domain {domain.name!r}: {split}_y must be a 1-D integer tensor (int64), got "
                 f"{getattr(y, 'dtype', type(y).__name__)} of shape {tuple(getattr(y, 'shape', ()))}")
    return data  # type: ignore[no-any-return]


def _check_generated(domain: Domain, context: DataContext) -> DomainData:
    first = _loaded(domain, context, "load(context)")
    second = _loaded(domain, context, "a second load(context)")
    for field_name in ("train_x", "train_y", "test_x", "test_y", "train_groups"):
        a, b = getattr(first, field_name), getattr(second, field_name)
        same = (a is None and b is None) or (a is not None and b is not None and a.shape == b.shape and torch.equal(a, b))
        _require(same, f"domain {domain.name!r} is not deterministic: two loads gave different {field_name}; seed every random "
                       "generator it uses from fixed numbers (e.g. torch.Generator().manual_seed(...))")
    return first


def _check_located(domain: Domain, context: DataContext) -> DomainFiles | DomainData:
    from cdkd_bench.image_cache import decode_image

    name = domain.name
    assert domain.locate is not None
    files = _call(f"domain {name!r}: locate(context) with data_root {str(context.data_root)!r}",
                  "lay the files out as its message says, or fix `locate`", domain.locate, context)
    _require(isinstance(files, DomainFiles), f"domain {name!r}: locate must return DomainFiles, got {type(files).__name__}")
    _require(isinstance(files.sources, tuple) and files.sources,
             f"domain {name!r}: DomainFiles.sources must be a non-empty tuple of the files its images come from")
    for source in files.sources:
        _require(isinstance(source, Path) and source.is_file(),
                 f"domain {name!r}: source {source!r} is not an existing file; list only files that exist, as Paths")
    _require((files.train is None) == (files.test is None),
             f"domain {name!r}: locate must list both splits' image files (train and test) or neither, got "
             f"train={'a list' if files.train is not None else None} and test={'a list' if files.test is not None else None}")
    if files.train is None or files.test is None:
        _require(domain.load is not None,
                 f"domain {name!r} lists no image files, so it needs a `load` that decodes its sources (set load=...)")
        return _loaded(domain, context, "load(context)")
    sources = set(files.sources)
    for split, listed in (("train", files.train), ("test", files.test)):
        _require(isinstance(listed, ImageFiles), f"domain {name!r}: DomainFiles.{split} must be ImageFiles, got {type(listed).__name__}")
        _require(split == "train" or listed.paths, f"domain {name!r}: the test split lists no images; a domain needs test images")
        for path, label in zip(listed.paths, listed.labels, strict=True):
            _require(isinstance(path, Path) and path.is_file(), f"domain {name!r}: {split} image {path!r} is not an existing file")
            _require(path in sources, f"domain {name!r}: {split} image {str(path)!r} is not among DomainFiles.sources; list every "
                                      "image file there too, so a changed image rebuilds the cache")
            _require(_is_int(label) and 0 <= label < domain.num_classes,
                     f"domain {name!r}: {split} label {label!r} of {str(path)!r} must be an integer in [0, {domain.num_classes})")
        if listed.paths:
            try:
                decode_image(listed.paths[0], 8)
            except UserError as exc:
                _fail(f"domain {name!r}: {exc}")
    return files


# --------------------------------------------------------------------------- suites


def check_suite(suite: Suite, host: Host | None = None) -> None:
    """Check a suite's declaration; with ``host``, also that its domains, recipes and architectures exist there.

    Checks: ``name``; ``domains`` non-empty, distinct, valid domain names; every task's source
    and target among them (and different); ``budgets`` non-empty ``Budget`` values with
    ``default_budget`` among them and ``converged_budget`` None or among them; every
    ``default_tasks`` entry names a task (short or full); ``default_seeds`` non-empty
    integers; ``image_size`` >= 8 and ``crop_size`` None or in [8, image_size]; ``headline``;
    ``transductive_targets`` among the domains; ``views`` and ``teacher_augmentation`` are
    ``Augmentation``s; published results name existing short task names. With a host: each
    domain is registered with the suite's ``num_classes``, each default recipe's components
    are registered methods, and the default teacher and student are known architectures.
    """
    _require(isinstance(suite, Suite), f"expected a cdkd_bench.Suite, got {type(suite).__name__}; register Suite(...) instances")
    name = suite.name
    _require(isinstance(name, str) and len(name) <= 100 and SUITE_NAME.fullmatch(name),
             f"suite name {name!r} must be lowercase letters, digits and _ + - without dots (e.g. 'mysuite')")
    where = f"suite {name!r}"
    _require(isinstance(suite.domains, tuple) and suite.domains, f"{where}: domains must be a non-empty tuple of domain names")
    for domain in suite.domains:
        _require(isinstance(domain, str) and DOMAIN_NAME.fullmatch(domain),
                 f"{where}: domain {domain!r} in domains is not a domain name ('<suite>.<name>', lowercase)")
    duplicated = sorted({d for d in suite.domains if suite.domains.count(d) > 1})
    _require(not duplicated, f"{where}: domains lists {duplicated[0] if duplicated else ''!r} more than once; list each domain once")
    _require(_is_int(suite.num_classes) and suite.num_classes >= 2, f"{where}: num_classes must be an integer >= 2, got {suite.num_classes!r}")
    _check_tasks(suite, where)
    _check_budgets(suite, where)
    _check_defaults(suite, where)
    _require(_is_int(suite.image_size) and suite.image_size >= 8, f"{where}: image_size must be an integer >= 8, got {suite.image_size!r}")
    _require(suite.crop_size is None or (_is_int(suite.crop_size) and 8 <= suite.crop_size <= suite.image_size),
             f"{where}: crop_size must be None or an integer in [8, image_size={suite.image_size}], got {suite.crop_size!r}")
    _require(suite.headline in HEADLINES, f"{where}: headline must be one of {', '.join(HEADLINES)}, got {suite.headline!r}")
    for domain in suite.transductive_targets:
        _require(domain in suite.domains, f"{where}: transductive_targets names {domain!r}, which is not among its domains {suite.domains}")
    _require(suite.teacher_augmentation is None or isinstance(suite.teacher_augmentation, Augmentation),
             f"{where}: teacher_augmentation must be None or an Augmentation, got {type(suite.teacher_augmentation).__name__}")
    _require(isinstance(suite.views, Mapping), f"{where}: views must map view names to Augmentations, got {type(suite.views).__name__}")
    for view, augmentation in suite.views.items():
        _require(isinstance(view, str) and view.isidentifier() and view != PLAIN,
                 f"{where}: view name {view!r} must be an identifier other than {PLAIN!r} (the unaugmented batch)")
        _require(isinstance(augmentation, Augmentation),
                 f"{where}: views[{view!r}] must be an Augmentation, got {type(augmentation).__name__}")
    _check_published(suite, where)
    if host is not None:
        _check_suite_in_host(suite, host, where)


def _short_task_names(suite: Suite) -> list[str]:
    prefix = f"{suite.name}."
    return [t.name[len(prefix):] if t.name.startswith(prefix) else t.name for t in suite.tasks]


def _check_tasks(suite: Suite, where: str) -> None:
    _require(suite.tasks, f"{where} has no tasks; give at least two domains, or pairs=((source, target), ...)")
    seen: set[str] = set()
    for task in suite.tasks:
        for role in ("source", "target"):
            domain = getattr(task, role)
            _require(domain in suite.domains, f"{where}: task {task.name!r} has {role} {domain!r}, which is not among its domains "
                                              f"{suite.domains}; add it to domains or fix pairs")
        _require(task.source != task.target, f"{where}: task {task.name!r} has the same source and target; pair two different domains")
        _require(_valid_name(task.name), f"{where}: task name {task.name!r} is not usable in file names; rename the domains "
                                         "(letters, digits and _ . + -)")
        _require(task.name not in seen, f"{where}: task {task.name!r} is listed twice in pairs; list each pair once")
        seen.add(task.name)


def _check_budgets(suite: Suite, where: str) -> None:
    _require(isinstance(suite.budgets, Mapping) and suite.budgets, f"{where}: budgets must be a non-empty mapping of names to Budget")
    for budget_name, budget in suite.budgets.items():
        _require(_valid_name(budget_name), f"{where}: budget name {budget_name!r} must be letters, digits and _ . + -")
        _require(isinstance(budget, Budget), f"{where}: budgets[{budget_name!r}] must be a Budget, got {type(budget).__name__}")
    known = ", ".join(repr(b) for b in suite.budgets)
    _require(suite.default_budget in suite.budgets,
             f"{where}: default_budget {suite.default_budget!r} is not among its budgets ({known}); name one of them")
    _require(suite.converged_budget is None or suite.converged_budget in suite.budgets,
             f"{where}: converged_budget {suite.converged_budget!r} is not among its budgets ({known}); name one of them or None")


def _check_defaults(suite: Suite, where: str) -> None:
    full = {t.name for t in suite.tasks}
    for task in suite.default_tasks:
        _require(task in full or f"{suite.name}.{task}" in full,
                 f"{where}: default_tasks names {task!r}, which is not one of its tasks ({', '.join(_short_task_names(suite))})")
    _require(isinstance(suite.default_seeds, tuple) and suite.default_seeds,
             f"{where}: default_seeds must be a non-empty tuple of integers, got {suite.default_seeds!r}")
    for seed in suite.default_seeds:
        _require(_is_int(seed) and 0 <= seed <= MAX_SEED, f"{where}: default seed {seed!r} must be an integer in [0, {MAX_SEED}]")
    _require(len(set(suite.default_seeds)) == len(suite.default_seeds), f"{where}: default_seeds {suite.default_seeds} repeats a seed")
    for role in ("default_teacher", "default_student"):
        value = getattr(suite, role)
        _require(isinstance(value, str) and value, f"{where}: {role} must name an architecture, got {value!r}")
    for recipe in suite.default_recipes:
        _require(isinstance(recipe, str) and recipe and all(c.isidentifier() for c in recipe.split("+")),
                 f"{where}: default recipe {recipe!r} must be method names joined by '+' (e.g. 'kd' or 'fitnet+kd')")


def _check_published(suite: Suite, where: str) -> None:
    short = _short_task_names(suite)
    for result in suite.published:
        _require(isinstance(result, PublishedResult), f"{where}: published entries must be PublishedResult, got {type(result).__name__}")
        _require(result.task in short, f"{where}: published result for {result.recipe!r} names task {result.task!r}, which is not "
                                       f"one of its short task names ({', '.join(short)})")
        _require(isinstance(result.accuracy, int | float) and 0 <= result.accuracy <= 100,
                 f"{where}: published accuracy {result.accuracy!r} of {result.recipe!r} on {result.task!r} must be a percentage in [0, 100]")
        _require(isinstance(result.source, str) and result.source.strip(),
                 f"{where}: published result of {result.recipe!r} on {result.task!r} needs a source (the paper or repository)")


def _check_suite_in_host(suite: Suite, host: Host, where: str) -> None:
    for domain in suite.domains:
        _require(domain in host.domains, f"{where}: domain {domain!r} is not registered in the host; register it "
                                         "(cdkd_register_domains) or fix the name")
        classes = host.domains.get(domain).num_classes
        _require(classes == suite.num_classes, f"{where}: domain {domain!r} has {classes} classes but the suite says "
                                               f"num_classes={suite.num_classes}; make them agree")
    methods = host.method_traits()
    for recipe in suite.default_recipes:
        for component in recipe.split("+"):
            _require(component in methods, f"{where}: default recipe {recipe!r} uses method {component!r}, which is not registered "
                                           "in the host; install its plugin or fix the name")
    listed = set(host.architecture_names())
    for role in ("default_teacher", "default_student"):
        arch = getattr(suite, role)
        if arch not in listed:
            _call(f"{where}: {role} {arch!r} is not a listed architecture, and building it", "name a known architecture",
                  host.architecture, arch, suite.num_classes)


# --------------------------------------------------------------------------- architectures


def check_architecture(name_or_factory: str | Callable[[int], nn.Module], num_classes: int = 4, image_size: int = 32,
                       *, host: Host | None = None) -> nn.Module:
    """Check a network against the timm interface the engine uses; returns the network built.

    A name is built with ``host.architecture(name, num_classes)`` (``load_host()`` when no
    host is given); a factory is called as ``factory(num_classes)``. Checks: it is an
    ``nn.Module`` with ``forward_features``, ``forward_head(x, pre_logits=True)`` and
    ``get_classifier``; ``forward_outputs`` gives finite logits ``(B, num_classes)`` and 2-D
    features ``(B, F)``, agreeing with ``forward`` in eval mode; a cross-entropy loss sends a
    gradient to every trainable parameter; it deep-copies; and when it has ``feature_info``,
    ``forward_intermediates`` returns one NCHW map per entry with its ``num_chs`` channels and
    ``image_size / reduction`` pixels a side, and the logits through it equal the plain ones.
    """
    from cdkd_bench.networks import forward_outputs, network_info

    if isinstance(name_or_factory, str):
        label = f"architecture {name_or_factory!r}"
        resolving = host or load_host()
        model = _call(f"building {label}", "register it with cdkd_resolve_architecture or fix the name",
                      resolving.architecture, name_or_factory, num_classes)
    else:
        label = f"architecture from {getattr(name_or_factory, '__qualname__', repr(name_or_factory))}"
        model = _call(f"{label}({num_classes})", "make the factory build the network from num_classes", name_or_factory, num_classes)
    _require(isinstance(model, nn.Module), f"{label} must be a torch.nn.Module, got {type(model).__name__}")
    for method in ("forward_features", "forward_head", "get_classifier"):
        _require(callable(getattr(model, method, None)),
                 f"{label} has no `{method}`; implement timm's interface (forward_features, forward_head(x, pre_logits), get_classifier)")
    batch = 3
    x = torch.randn(batch, 3, image_size, image_size, generator=torch.Generator().manual_seed(0))
    labels = torch.arange(batch) % num_classes
    model.train()
    final = _call(f"{label}.forward_features on a ({batch}, 3, {image_size}, {image_size}) batch",
                  "make it accept [-1, 1] images of the suite's size", model.forward_features, x)
    try:
        pooled = model.forward_head(final, pre_logits=True)
    except TypeError as exc:
        _fail(f"{label}.forward_head must accept pre_logits=True and return the pooled features ({exc})")
    _require(isinstance(pooled, torch.Tensor) and pooled.dim() == 2 and pooled.shape[0] == batch,
             f"{label}.forward_head(x, pre_logits=True) must return pooled features of shape (B, F), got {_shape(pooled)}")
    outputs = _call(f"{label} through cdkd_bench.networks.forward_outputs", "keep get_classifier() applicable to the pooled features",
                    forward_outputs, model, x)
    _require(outputs.logits.shape == (batch, num_classes),
             f"{label} gives logits of shape {tuple(outputs.logits.shape)}; expected (B, num_classes) = ({batch}, {num_classes}): "
             "build the classifier with num_classes outputs")
    _require(outputs.features.dim() == 2 and outputs.features.shape[0] == batch,
             f"{label} gives features of shape {tuple(outputs.features.shape)}; forward_head(pre_logits=True) must pool to (B, F)")
    _require(bool(torch.isfinite(outputs.logits).all()), f"{label} gives non-finite logits on random inputs; check its initialisation")
    F.cross_entropy(outputs.logits, labels).backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    _require(not missing, f"{label}: no gradient reaches trainable parameter {missing[0] if missing else ''!r} from a "
                          f"cross-entropy loss on the logits ({len(missing)} parameters in all); remove unused parameters or "
                          "freeze them (requires_grad=False)")
    model.zero_grad(set_to_none=True)
    copied = _call(f"copy.deepcopy({label})", "keep the network deep-copyable (the engine evaluates copies)", copy.deepcopy, model)
    del copied
    model.eval()
    with torch.no_grad():
        plain = forward_outputs(model, x).logits
        direct = _call(f"{label}.forward", "make forward(x) return the logits", model, x)
        _require(isinstance(direct, torch.Tensor) and direct.shape == plain.shape and torch.allclose(direct, plain, rtol=1e-3, atol=1e-4),
                 f"{label}: forward(x) must equal get_classifier()(forward_head(forward_features(x), pre_logits=True)); they differ")
    info = getattr(model, "feature_info", None)
    if info:
        _check_stages(model, label, info, x, plain, image_size)
    _call(f"cdkd_bench.networks.network_info({label})", "give feature_info entries integer num_chs and reduction",
          network_info, model, label, image_size, torch.device("cpu"))
    return model  # type: ignore[no-any-return]


def _shape(value: Any) -> str:
    return str(tuple(value.shape)) if isinstance(value, torch.Tensor) else type(value).__name__


def _check_stages(model: nn.Module, label: str, info: Any, x: torch.Tensor, plain: torch.Tensor, image_size: int) -> None:
    from cdkd_bench.networks import forward_outputs

    _require(isinstance(info, list | tuple), f"{label}.feature_info must be a list of dicts (timm's), got {type(info).__name__}")
    for i, entry in enumerate(info):
        _require(isinstance(entry, Mapping) and _is_int(entry.get("num_chs")) and _is_int(entry.get("reduction")),
                 f"{label}.feature_info[{i}] must be a dict with integer 'num_chs' and 'reduction', got {entry!r}")
    _require(callable(getattr(model, "forward_intermediates", None)),
             f"{label} has feature_info but no `forward_intermediates(x, indices, output_fmt='NCHW')`; add it or drop feature_info")
    indices = list(range(len(info)))
    with torch.no_grad():
        result = _call(f"{label}.forward_intermediates(x, indices={indices}, output_fmt='NCHW')",
                       "return (final features, [one NCHW map per index])", model.forward_intermediates,  # type: ignore[arg-type]
                       x, indices=indices, output_fmt="NCHW")
        _require(isinstance(result, tuple | list) and len(result) == 2 and isinstance(result[1], list | tuple) and len(result[1]) == len(info),
                 f"{label}.forward_intermediates must return (final features, a list of {len(info)} maps) for indices {indices}")
        for i, (entry, feature_map) in enumerate(zip(info, result[1], strict=True)):
            reduction = int(entry["reduction"])
            sides = {image_size // reduction, -(-image_size // reduction)}
            _require(isinstance(feature_map, torch.Tensor) and feature_map.dim() == 4 and feature_map.shape[0] == x.shape[0]
                     and feature_map.shape[1] == entry["num_chs"] and feature_map.shape[2] in sides and feature_map.shape[3] in sides,
                     f"{label}: stage {i} map has shape {_shape(feature_map)}, but feature_info[{i}] says {entry['num_chs']} channels "
                     f"at reduction {reduction} (expected (B, {entry['num_chs']}, {image_size // reduction}, {image_size // reduction})); "
                     "make them agree")
        through = forward_outputs(model, x, indices).logits
    _require(torch.allclose(through, plain, rtol=1e-3, atol=1e-4),
             f"{label}: the logits through forward_intermediates differ from those through forward_features; its final output must "
             "be what forward_features returns")


# --------------------------------------------------------------------------- selection rules


def _checkpoint(step: int, rng: torch.Generator, num_classes: int = 10) -> dict[str, Any]:
    """The metrics ``cdkd_bench.evaluation.evaluate_checkpoint`` records for one checkpoint."""
    def pct() -> float:
        return round(float(torch.rand((), generator=rng)) * 100, 4)

    per_class: list[float | None] = [pct() for _ in range(num_classes)]
    per_class[-1] = None  # a class absent from the test split
    present = [a for a in per_class if a is not None]
    entropy = float(torch.rand((), generator=rng)) * math.log(num_classes)
    return {
        "step": step,
        "source_val.acc": pct(),
        "target_test.acc": pct(),
        "target_test.balanced_acc": sum(present) / len(present),
        "target_test.per_class_acc": per_class,
        "teacher_student_agreement": pct(),
        "target_train.entropy": entropy,
        "target_train.info_max": float(torch.rand((), generator=rng)) * math.log(num_classes) - entropy,
        "target_train.snd": float(torch.rand((), generator=rng)) * math.log(999),
        "target_train.bnm": float(torch.rand((), generator=rng)),
        "target_val.acc": pct(),  # recorded under ssda-K only
    }


def _history(length: int, seed: int) -> list[dict[str, Any]]:
    rng = torch.Generator().manual_seed(seed)
    return [_checkpoint(100 * (i + 1), rng) for i in range(length)]


def _choose(selector: Selector, history: list[dict[str, Any]]) -> int:
    where = f"selection rule {selector.name!r}"
    before = copy.deepcopy(history)
    index = _call(f"{where}: choose() on a history of {len(history)} checkpoints", "make choose accept the evaluated checkpoints' metrics",
                  selector.choose, history)
    _require(history == before, f"{where}: choose() changed the history it was given; read the metrics without modifying them")
    _require(_is_int(index), f"{where}: choose() must return an int index, got {index!r} ({type(index).__name__})")
    _require(0 <= index < len(history), f"{where}: choose() returned index {index} for a history of {len(history)} checkpoints; "
                                        f"return an index in [0, {len(history) - 1}]")
    return int(index)


def check_selector(selector: Selector) -> None:
    """Check a selection rule on realistic checkpoint histories.

    Checks: it is a ``Selector`` with a valid ``name``, a callable ``choose`` and boolean
    ``oracle`` and ``default``; ``choose`` returns an int index in range for histories of 1 and
    5 checkpoints (the metrics ``evaluate_checkpoint`` records), the same index on a second
    call, and leaves its input unchanged; a rule not marked ``oracle`` picks the same checkpoint
    when only the target test metrics change (it must not read target test labels); a rule with a
    ``score`` chooses a checkpoint of the highest score.
    """
    _require(isinstance(selector, Selector), f"expected a cdkd_bench.Selector, got {type(selector).__name__}; register Selector(...)")
    _require(_valid_name(selector.name), f"selection rule name {selector.name!r} must be letters, digits and _ . + - (at most 100)")
    where = f"selection rule {selector.name!r}"
    _require(callable(selector.choose), f"{where}: choose must be a function of the list of checkpoint metrics, got {selector.choose!r}")
    _require(isinstance(selector.oracle, bool), f"{where}: oracle must be True or False, got {selector.oracle!r}")
    _require(isinstance(selector.default, bool), f"{where}: default must be True or False, got {selector.default!r}")
    for length, seed in ((1, 0), (5, 1), (5, 2)):
        history = _history(length, seed)
        first = _choose(selector, history)
        again = _choose(selector, copy.deepcopy(history))
        _require(first == again, f"{where} is not deterministic: it chose {first} and then {again} on the same history; "
                                 "make choose depend on the metrics alone")
        if not selector.oracle and length > 1:
            swapped = [{**checkpoint, **{k: v for k, v in other.items() if k.startswith("target_test.")}}
                       for checkpoint, other in zip(history, reversed(history), strict=True)]
            _require(_choose(selector, swapped) == first,
                     f"{where} picks another checkpoint when only the target_test.* metrics change, so it reads target test labels; "
                     "set oracle=True or stop reading target_test.*")
        if selector.score is not None:
            scores = [float(selector.score(checkpoint)) for checkpoint in history]
            best = max(scores, key=lambda v: -math.inf if math.isnan(v) else v)  # a NaN score never wins
            _require(scores[first] == best or all(map(math.isnan, scores)),
                     f"{where}: choose() picked checkpoint {first}, whose score {scores[first]} is not the best of {scores}; "
                     "score must be what choose maximises (higher is better)")


# --------------------------------------------------------------------------- executors


_PROBE_KIND = "cdkd-conformance-probe"
"""A job kind no engine knows: ``run_job`` answers it at once with a failed result, which makes it a cheap real job."""


def check_executor(executor_class: type[Executor], *, run_jobs: bool = True) -> None:
    """Check an executor class: declaration, ``check()``, and how it runs jobs.

    Checks: a subclass of ``Executor`` with a valid ``name`` and a boolean ``default`` that
    overrides ``run``; constructible with no arguments; ``check()`` returns without raising
    (a ``UserError`` there means this machine cannot use it); ``run([], ...)`` returns and calls
    nothing; jobs that ``ready`` answers are reported with its answer exactly once, never run,
    and each asked only after the jobs in its ``after`` reported. With ``run_jobs``, one job of
    a kind no engine knows is run through ``cdkd_bench.run_job`` and its failed result reported
    once, as the engine returned it (a few seconds for the local executor).
    """
    _require(isinstance(executor_class, type) and issubclass(executor_class, Executor),
             f"expected a subclass of cdkd_bench.Executor, got {executor_class!r}; register the class, not an instance")
    name = getattr(executor_class, "name", None)
    _require(_valid_name(name), f"executor {executor_class.__name__}: set a class attribute `name` (letters, digits and _ . + -), got {name!r}")
    where = f"executor {name!r}"
    _require(isinstance(executor_class.default, bool), f"{where}: default must be True or False, got {executor_class.default!r}")
    _require(executor_class.run is not Executor.run, f"{where} does not override run(jobs, on_result, ready)")
    executor = _call(f"{where}: {executor_class.__name__}()", "make it constructible with no arguments (settings come with each Job)",
                     executor_class)
    try:
        executor.check()
    except UserError as exc:
        _fail(f"{where}: check() says it cannot work on this machine ({exc}); run this check where the executor can run")
    except Exception as exc:  # noqa: BLE001
        _fail(f"{where}: check() raised {type(exc).__name__}: {exc}; raise only UserError, with one sentence for the user")
    with tempfile.TemporaryDirectory(prefix="cdkd-conformance-") as tmp:
        from cdkd_bench.settings import EngineSettings

        settings = EngineSettings(cache_dir=Path(tmp), device="cpu", threads=1, workers=1)
        _check_empty_run(executor, where)
        _check_answered_jobs(executor, where, settings)
        if run_jobs:
            _check_one_real_job(executor, where, settings)


class _Recorder:
    """``on_result`` and ``ready`` for a probe run: records who was called, in which order."""

    def __init__(self, where: str, jobs: list[Job], answer: Callable[[int], Mapping[str, Any] | None]) -> None:
        self.where, self.jobs, self.answer = where, jobs, answer
        self.results: dict[int, Mapping[str, Any]] = {}
        self.asked: list[int] = []
        self.lock = threading.Lock()

    def on_result(self, index: int, result: Mapping[str, Any]) -> None:
        with self.lock:
            _require(_is_int(index) and 0 <= index < len(self.jobs), f"{self.where} reported a result for index {index!r}, which is not "
                                                                     f"a position in its job list of {len(self.jobs)}")
            _require(index not in self.results, f"{self.where} reported job {index} twice; call on_result exactly once per job")
            self.results[index] = result

    def ready(self, index: int) -> Mapping[str, Any] | None:
        with self.lock:
            _require(_is_int(index) and 0 <= index < len(self.jobs), f"{self.where} asked ready({index!r}), which is not a job position")
            _require(index not in self.asked, f"{self.where} asked ready({index}) twice; ask once, just before starting the job")
            waiting = [needed for needed in self.jobs[index].after if needed not in self.results]
            _require(not waiting, f"{self.where} was about to start job {index} before job {waiting[0] if waiting else ''} it waits for "
                                  "(Job.after) had reported; start a job only after its `after` jobs report")
            self.asked.append(index)
        return self.answer(index)


def _run(executor: Executor, where: str, jobs: list[Job], recorder: _Recorder) -> None:
    _call(f"{where}: run() on {len(jobs)} job(s)", "report failures as results instead of raising", executor.run, jobs,
          recorder.on_result, recorder.ready)


def _check_empty_run(executor: Executor, where: str) -> None:
    recorder = _Recorder(where, [], lambda _index: None)
    _run(executor, where, [], recorder)
    _require(not recorder.results and not recorder.asked, f"{where}: run([]) called on_result or ready; an empty job list must do nothing")


def _check_answered_jobs(executor: Executor, where: str, settings: Any) -> None:
    jobs = [Job(_PROBE_KIND, 0, settings), Job(_PROBE_KIND, 1, settings, after=(0,)), Job(_PROBE_KIND, 2, settings, after=(0, 1)),
            Job(_PROBE_KIND, 3, settings)]
    answers = {i: {"status": "elsewhere", "probe": i} for i in range(len(jobs))}
    recorder = _Recorder(where, jobs, answers.__getitem__)
    _run(executor, where, jobs, recorder)
    missing = sorted(set(range(len(jobs))) - set(recorder.results))
    _require(not missing, f"{where} never reported job {missing[0] if missing else ''} of {len(jobs)}; call on_result once for every job")
    for index, result in recorder.results.items():
        _require(dict(result) == answers[index], f"{where} reported {dict(result)!r} for job {index}, whose ready() answered "
                                                 f"{answers[index]!r}; report ready's answer instead of running the job")
    _require(sorted(recorder.asked) == list(range(len(jobs))), f"{where} did not call ready() for every job before starting it "
                                                               f"(asked {sorted(recorder.asked)}); call ready(index) just before each job")


def _check_one_real_job(executor: Executor, where: str, settings: Any) -> None:
    jobs = [Job(_PROBE_KIND, 0, settings)]
    recorder = _Recorder(where, jobs, lambda _index: None)
    _run(executor, where, jobs, recorder)
    _require(0 in recorder.results, f"{where} ran one job but never reported it; call on_result(index, run_job(job)) for it")
    result = recorder.results[0]
    _require(isinstance(result, Mapping) and result.get("status") == "failed" and _PROBE_KIND in str(result.get("error", "")),
             f"{where} reported {result!r} for a job of unknown kind; run jobs with cdkd_bench.run_job(job) and report its result unchanged")
    _require(recorder.asked == [0], f"{where} ran a job without asking ready(index) first; call ready just before each job")


# --------------------------------------------------------------------------- kit builders (the pytest fixtures use these)


def named_plugins(plugins: Iterable[object]) -> list[tuple[str, object]]:
    """(name, plugin) pairs for ``load_host(extra_plugins=...)``: modules by their name, objects by their class, (name, plugin) kept."""
    named: list[tuple[str, object]] = []
    for plugin in plugins:
        if isinstance(plugin, tuple) and len(plugin) == 2 and isinstance(plugin[0], str):
            name, obj = plugin
        else:
            obj = plugin
            name = getattr(plugin, "__name__", None) if isinstance(plugin, types.ModuleType) else None
            name = name or f"{type(plugin).__module__}.{type(plugin).__qualname__}"
        taken = {n for n, _ in named}
        unique, n = name, 2
        while unique in taken:
            unique, n = f"{name}#{n}", n + 1
        named.append((unique, obj))
    return named


PAIR_KINDS = ("homogeneous", "heterogeneous")
KIT_IMAGE_SIZE = 16


@dataclasses.dataclass
class KitPair:
    """A tiny teacher/student pair and the ``MethodInfo`` a component is built with for it.

    ``homogeneous``: the same stage layout (map sizes), the teacher twice as wide, like a
    ResNet-18 teacher for a ResNet-10 student. ``heterogeneous``: every stage differs in width
    and spatial size (what ``check_method`` uses), so a component assuming equal shapes fails.
    Both take ``image_size`` x ``image_size`` images; the teacher is frozen and in eval mode.
    """

    kind: str
    student: nn.Module
    teacher: nn.Module
    info: MethodInfo
    num_classes: int
    image_size: int = KIT_IMAGE_SIZE


def kit_pair(kind: str = "heterogeneous", num_classes: int = 4) -> KitPair:
    """A fresh :class:`KitPair` of ``kind`` (``homogeneous`` or ``heterogeneous``), seeded for repeatable weights."""
    from cdkd_bench.networks import network_info
    from cdkd_bench.testing import TinyNet

    if kind not in PAIR_KINDS:
        raise ValueError(f"pair kind must be one of {PAIR_KINDS}, got {kind!r}")
    with torch.random.fork_rng(devices=[]):  # the same weights every time, and the caller's generator untouched
        torch.manual_seed(0)
        student = TinyNet(num_classes, (4, 6, 8), (1, 2, 2))  # maps of 16x16, 8x8 and 4x4
        if kind == "homogeneous":
            teacher = TinyNet(num_classes, (8, 12, 16), (1, 2, 2))  # the same sizes, twice the width
        else:
            teacher = TinyNet(num_classes, (5, 7, 9), (2, 2, 1))  # 8x8, 4x4 and 4x4: other widths, other sizes
    teacher.eval().requires_grad_(False)
    cpu = torch.device("cpu")
    s_info = network_info(student, f"kit-{kind}-student", KIT_IMAGE_SIZE, cpu)
    t_info = network_info(teacher, f"kit-{kind}-teacher", KIT_IMAGE_SIZE, cpu)
    info = MethodInfo(num_classes=num_classes, student_features=s_info.num_features, teacher_features=t_info.num_features, total_steps=4,
                      student=s_info, teacher=t_info, split_sizes={"source": 24, "target": 20}, image_size=KIT_IMAGE_SIZE)
    return KitPair(kind, student, teacher, info, num_classes)


@dataclasses.dataclass
class KitStep:
    """One training step for a component, as the engine builds it, on a :class:`KitPair`.

    ``component`` is the method built with ``pair.info``; ``step`` has the stages it declares in
    ``intermediates``, a stand-in for every view it declares, per-sample indices, target labels
    only for ``uses_target_labels`` and a teacher only for ``needs_teacher``. ``labels`` are the
    source labels. ``loss()`` is ``component.loss(step)``.
    """

    component: Method
    step: Step
    pair: KitPair
    labels: torch.Tensor

    def loss(self) -> dict[str, torch.Tensor]:
        return self.component.loss(self.step)  # type: ignore[no-any-return]


def kit_step(method: type[Method], hparams: Any = None, *, pair: str | KitPair = "heterogeneous", batch: int = 6, num_classes: int = 4,
             progress: float = 0.5, seed: int = 0) -> KitStep:
    """A :class:`KitStep` for ``method`` (default hparams unless given) on a fresh pair of kind ``pair`` (or the pair given)."""
    from cdkd_bench.testing import _kit_views, make_step

    kit = pair if isinstance(pair, KitPair) else kit_pair(pair, num_classes)
    component = method(hparams if hparams is not None else method.Hparams(), kit.info)
    generator = torch.Generator().manual_seed(seed)
    size, classes = kit.image_size, kit.num_classes
    labels = torch.arange(batch) % classes
    source = Batch(torch.randn(batch, 3, size, size, generator=generator), labels, torch.arange(batch) % kit.info.split_sizes["source"])
    target = Batch(torch.randn(batch, 3, size, size, generator=generator), labels.clone() if method.uses_target_labels else None,
                   (torch.arange(batch) * 3) % kit.info.split_sizes["target"])
    step = make_step(kit.student, kit.teacher if method.needs_teacher else None, source, target, progress, component.intermediates,
                     _kit_views(method))
    return KitStep(component, step, kit, labels)


# --------------------------------------------------------------------------- a tiny generated suite


KIT_SUITE = "kit"
KIT_ARCH = "resnet10_w8_32px"
_WEAK = Augmentation(scale=(0.95, 1.05), translate=0.06)
_STRONG = Augmentation(rotation_degrees=10, scale=(0.9, 1.1), translate=0.06, gain=(0.8, 1.2), bias=0.1)


def _stripes(name: str, train: int, test: int, dark: bool, _context: DataContext) -> DomainData:
    """Class 0: horizontal stripes, class 1: vertical ones, at random period and phase; ``dark`` inverts and tints them."""
    generator = torch.Generator().manual_seed(zlib.crc32(name.encode()))
    total, size = train + test, 32
    labels = torch.arange(total) % 2
    period = torch.randint(4, 9, (total, 1, 1), generator=generator).float()
    phase = torch.rand(total, 1, 1, generator=generator) * period
    coords = torch.arange(size).float()
    rows, cols = coords.view(1, size, 1).expand(total, size, size), coords.view(1, 1, size).expand(total, size, size)
    along = torch.where(labels.view(-1, 1, 1) == 0, rows, cols)
    pattern = (((along + phase) % period) < period / 2).float()  # (N, H, W) in {0, 1}
    image = pattern.unsqueeze(1).expand(total, 3, size, size) * 0.7 + 0.15
    if dark:
        image = (1 - image) * torch.tensor([0.9, 0.6, 0.3]).view(1, 3, 1, 1)
    image = image + 0.08 * torch.randn(total, 3, size, size, generator=generator)
    x = (image.clamp(0, 1) * 255).round().to(torch.uint8)
    return DomainData(x[:train], labels[:train].clone(), x[train:], labels[train:].clone())


def _kit_domains(train: int = 64, test: int = 32) -> tuple[Domain, Domain]:
    return tuple(  # type: ignore[return-value]
        Domain(f"{KIT_SUITE}.{name}", 2, functools.partial(_stripes, f"{KIT_SUITE}.{name}", train, test, dark), 1,
               f"kit stripes, {name}: horizontal (class 0) or vertical (class 1)")
        for name, dark in (("light", False), ("dark", True))
    )


def _kit_suite_declaration() -> Suite:
    return Suite(
        name=KIT_SUITE, domains=(f"{KIT_SUITE}.light", f"{KIT_SUITE}.dark"), num_classes=2, image_size=32,
        budgets={"smoke": Budget(teacher_steps=6, student_steps=4, batch_size=16, lr=1e-2, eval_points=2)},
        default_teacher=KIT_ARCH, default_student=KIT_ARCH, default_recipes=("source_only",), default_seeds=(0,),
        default_budget="smoke", default_tasks=("light_to_dark",), teacher_augmentation=_WEAK, views={"weak": _WEAK, "strong": _STRONG},
        description="two tiny generated stripe domains (light and dark), 2 classes, 32 px: for plugin authors' tests",
    )


class KitSuitePlugin:
    """A plugin object registering the kit suite and its two domains (``kit.light``, ``kit.dark``)."""

    def __init__(self) -> None:
        self.domains = _kit_domains()
        self.suite = _kit_suite_declaration()

    @hookimpl
    def cdkd_register_domains(self, register: Callable[[Domain], None]) -> None:
        for domain in self.domains:
            register(domain)

    @hookimpl
    def cdkd_register_suites(self, register: Callable[[Suite], None]) -> None:
        register(self.suite)


@dataclasses.dataclass
class KitRun:
    """What :meth:`KitSuite.run` did: the grid's summary, the runs it stored (done and failed), and its log lines."""

    summary: Any
    runs: list[Any]
    log: list[str]
    host: Host

    def by_recipe(self) -> dict[str, list[Any]]:
        """The stored runs by recipe name."""
        grouped: dict[str, list[Any]] = {}
        for run in self.runs:
            grouped.setdefault(run.spec.recipe, []).append(run)
        return grouped


@dataclasses.dataclass
class KitSuite:
    """The kit suite (two generated 32 px stripe domains, 2 classes, a ``smoke`` budget) and a host holding it.

    ``host`` has the installed plugins plus ``plugin``; ``host_with(*plugins)`` adds yours.
    ``run(recipes, plugins=...)`` runs a real grid on the CPU in this process (teacher, runs,
    reference rows) into ``folder`` and returns a :class:`KitRun`; a second call on the same
    store skips what is done.
    """

    suite: Suite
    domains: tuple[Domain, ...]
    plugin: KitSuitePlugin
    host: Host
    folder: Path

    @property
    def cache_dir(self) -> Path:
        return self.folder / "cache"

    def host_with(self, *plugins: object) -> Host:
        return load_host(extra_plugins=[("cdkd-kit-suite", self.plugin), *named_plugins(plugins)])

    def run(self, recipes: Sequence[str] = ("source_only",), *, plugins: Sequence[object] = (), tasks: Sequence[str] | None = None,
            seeds: Sequence[int] = (0,), budget: str = "smoke", store: Path | None = None, **request: Any) -> KitRun:
        from cdkd_bench.grid import GridRequest, expand, run_grid
        from cdkd_bench.settings import EngineSettings
        from cdkd_bench.store import Store

        host = self.host_with(*plugins) if plugins else self.host
        grid = GridRequest(suite=self.suite.name, tasks=tuple(tasks) if tasks is not None else None, recipes=tuple(recipes),
                           seeds=tuple(seeds), budget=budget, device="cpu", **request)
        specs = expand(host, grid, self.cache_dir)
        results = Store(store or self.folder / "results.sqlite")
        messages: list[str] = []
        summary = run_grid(host, specs, results, EngineSettings(cache_dir=self.cache_dir, device="cpu", threads=1, workers=1),
                           show_progress=False, log=messages.append)
        return KitRun(summary, results.runs(self.suite.name, status=None), messages, host)


def kit_suite(folder: Path) -> KitSuite:
    """A :class:`KitSuite` whose caches and results live under ``folder``."""
    plugin = KitSuitePlugin()
    folder.mkdir(parents=True, exist_ok=True)
    host = load_host(extra_plugins=[("cdkd-kit-suite", plugin)])
    return KitSuite(plugin.suite, plugin.domains, plugin, host, folder)
