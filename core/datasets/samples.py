"""The sample data shipped in ``data/samples/``, imported as dataset versions."""
from __future__ import annotations

from core import paths
from core.access import projects
from core.access.principal import Principal, require
from core.datasets import review
from core.datasets.importer import import_files
from core.datasets.versions import find_by_name
SAMPLE_DOMAINS = {
    # name: (files, what it is)
    "sample-cskh-hopdong": (["customer_care.jsonl", "contracts.jsonl"], "customer care + contract clauses"),
    "sample-ghichu-noibo": (["internal_notes.jsonl"], "internal notes rewritten in full (fixed style)"),
}
DEMO_SAMPLE = "sample-ghichu-noibo"


def import_samples(*, actor: Principal, project: str | None = None) -> dict:
    """The sample data shipped in data/samples/: general Vietnamese, then each sample domain mixed with 5 %
    of it. Returns the demo domain, ``sample-ghichu-noibo`` (internal notes in the team's shorthand,
    rewritten in full): its answers follow one fixed style, so the default model passes the evaluation
    gate on it with the 40-step CPU preset ``core.training.presets.DEMO_PRESET`` (docs/deploy.md). It is
    imported last, so that it is the newest version (the one the Train page offers first). Each project
    (``project``, default "default") gets its own copies.

    The samples are written by the ViTune team itself, so every version is recorded as reviewed by
    construction (core.datasets.review.mark_bundled) and trains without a review sample."""
    project = projects.check(actor, project)
    require(actor, "dataset.import", project)
    samples = paths.samples_dir()
    general = find_by_name("general-vi", project)
    if general is None:
        general, _ = import_files([samples / "general_vi.jsonl"], "general-vi", actor=actor, project=project)
    review.mark_bundled(general["id"], actor=actor)
    domains = {}
    for name, (files, _) in SAMPLE_DOMAINS.items():
        domain = find_by_name(name, project)
        if domain is None:
            domain, _ = import_files([samples / f for f in files], name, general_version=general["id"],
                                     general_ratio=0.05, actor=actor, project=project)
        review.mark_bundled(domain["id"], actor=actor)
        domains[name] = domain
    return domains[DEMO_SAMPLE]
