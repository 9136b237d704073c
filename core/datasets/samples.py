"""The sample data shipped in ``data/samples/``, imported as dataset versions."""
from __future__ import annotations

from core import paths, store
from core.access import projects
from core.access.principal import Principal, require
from core.datasets import review
from core.datasets.importer import import_files
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

    The samples are written by the ViTune team itself, so every version this call imports is recorded as
    reviewed by construction (core.datasets.review.mark_bundled) and trains without a review sample. Only
    those: a version that merely bears a sample's name (an engineer's own data) is neither reused nor marked;
    a sample imported by an earlier call (its bundled review says so) is reused."""
    project = projects.check(actor, project)
    require(actor, "dataset.import", project)
    samples = paths.samples_dir()
    general = _bundled("general-vi", project)
    if general is None:
        general, _ = import_files([samples / "general_vi.jsonl"], "general-vi", actor=actor, project=project)
        review.mark_bundled(general["id"], actor=actor)
    domains = {}
    for name, (files, _) in SAMPLE_DOMAINS.items():
        domain = _bundled(name, project)
        if domain is None:
            domain, _ = import_files([samples / f for f in files], name, general_version=general["id"],
                                     general_ratio=0.05, actor=actor, project=project)
            review.mark_bundled(domain["id"], actor=actor)
        domains[name] = domain
    return domains[DEMO_SAMPLE]


def _bundled(name: str, project: str) -> dict | None:
    """The newest version of ``project`` named ``name`` that an earlier ``import_samples`` made (it carries a
    bundled review), or None."""
    return store.one(
        """SELECT v.* FROM dataset_versions v WHERE v.name = ? AND v.project = ?
             AND EXISTS (SELECT 1 FROM reviews r WHERE r.dataset_version_id = v.id AND r.kind = 'bundled')
           ORDER BY v.created_at DESC LIMIT 1""", [name, project])
