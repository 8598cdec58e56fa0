"""`cdkd-bench data list | check | prepare`: what is under the data root, whether it is intact, and getting it ready."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cdkd_bench.api import DataContext, Domain, Suite
from cdkd_bench.data import generator_packages, load_domain
from cdkd_bench.errors import UserError
from cdkd_bench.image_cache import peek, verify_cache


@dataclass(frozen=True)
class DomainState:
    suite: str
    domain: str
    status: str
    """``generated`` (made from installed packages), ``found``, ``cached``, ``missing`` or ``corrupt``."""
    images: int | None
    expected: int | None
    detail: str = ""


def file_backed(domain: Domain) -> bool:
    return domain.locate is not None


def domain_state(suite: Suite, domain: Domain, cache_dir: Path, data_root: Path | None) -> DomainState:
    """Where one domain stands, without decoding anything."""
    if not file_backed(domain):
        return DomainState(suite.name, domain.name, "generated", None, domain.expected_images, "made from installed packages")
    try:
        files, cached = peek(domain, suite.image_size, cache_dir, data_root, generator_packages(domain))
    except UserError as exc:
        return DomainState(suite.name, domain.name, "missing", None, domain.expected_images, str(exc))
    if cached is not None:
        count = len(cached.data.train_y) + len(cached.data.test_y)
        return DomainState(suite.name, domain.name, "cached", count, domain.expected_images, f"decoded at {suite.image_size} px")
    listed = len(files.train.paths) + len(files.test.paths) if files.train is not None and files.test is not None else None
    return DomainState(suite.name, domain.name, "found", listed, domain.expected_images,
                       "not decoded yet (`cdkd-bench data prepare` decodes it once)")


def checksum_problems(domain: Domain, data_root: Path | None) -> list[str]:
    """Each published file under the data root whose MD5 is not the published one."""
    from torchvision.datasets.utils import calculate_md5

    problems = []
    for relative, expected in dict(domain.checksums).items():
        path = (data_root / relative) if data_root is not None else Path(relative)
        if path.is_file() and (found := calculate_md5(str(path))) != expected:
            problems.append(f"{str(path)!r} has MD5 {found}, not the published {expected}: it is damaged or another file; "
                            "delete it and download it again")
    return problems


def check_domain(suite: Suite, domain: Domain, cache_dir: Path, data_root: Path | None) -> list[str]:
    """What is wrong with one domain (empty: nothing): checksums, then every image decoded once (the cache is built,
    or, when built already from these very files, re-hashed against its manifest)."""
    if not file_backed(domain):
        return []
    try:
        problems = checksum_problems(domain, data_root)
        if problems:
            return problems
        _, cached = peek(domain, suite.image_size, cache_dir, data_root, generator_packages(domain))
        if cached is not None:
            problem = verify_cache(cached)
            return [f"{problem}; delete that folder and run `cdkd-bench data prepare {suite.name}`"] if problem else []
        load_domain(domain, suite.image_size, cache_dir, data_root)
    except UserError as exc:
        return [str(exc)]
    return []


def prepare_domain(suite: Suite, domain: Domain, cache_dir: Path, data_root: Path | None) -> None:
    """Download the domain where it is allowed and missing, verify it, and build its cache."""
    if not file_backed(domain):
        load_domain(domain, suite.image_size, cache_dir, data_root)
        return
    context = DataContext(data_root, cache_dir / "raw" / domain.name)
    try:
        domain.locate(context)  # type: ignore[misc]
    except UserError:
        if domain.download is None or data_root is None:
            raise
        data_root.mkdir(parents=True, exist_ok=True)
        domain.download(context)
    problems = checksum_problems(domain, data_root)
    if problems:
        raise UserError(problems[0])
    load_domain(domain, suite.image_size, cache_dir, data_root)


def render_states(states: list[DomainState]) -> str:
    def count(value: int | None) -> str:
        return f"{value:,}" if value is not None else "-"

    rows = [("suite", "domain", "status", "images", "expected", "detail")]
    rows += [(s.suite, s.domain, s.status, count(s.images), count(s.expected), s.detail) for s in states]
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    return "".join("  ".join(cell.ljust(w) for cell, w in zip(r[:5], widths, strict=True)) + f"  {r[5]}\n" for r in rows)
